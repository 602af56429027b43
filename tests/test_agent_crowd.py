"""Thousands of agents waking in the same minute against one MariaDB (issue 16).

One real MariaDB with its default ``max_connections`` (151), started by this module (one test
stops it). The agents run the real ``lecentral-install run`` command in-process
(:mod:`lecentral_testing.crowd`): threads, not processes, because a 2-core machine cannot start
2,000 Python processes in a minute (each needs ~0.3 s of CPU for the interpreter and its imports);
the threads share the imports and the plugin registry (each real agent process loads its own
once), and still each agent reads its own install.toml, opens its own database connection,
compares and installs into its own files with a no-op service (no reload command).

The agents give their connection back as soon as they have read their rows, so 2,000 of them do
not by themselves reliably fill 151 connections on this machine (they did, before that). To make
every run of this test go through a full server, the test itself holds every free connection
until the server has refused agents (``Connection_errors_max_connections``), then lets go:
the agents refused must retry and finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from click.testing import CliRunner
from lecentral_testing.crowd import RETRY_LOGGER, Crowd
from lecentral_testing.mariadb import MariaDBServer

from lecentral.cli.agent import main
from lecentral.store import direct

AGENTS = 2000


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path_factory.mktemp("crowd-mariadb"))
    with server:
        yield server


@pytest.fixture(scope="module")
def crowd(mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crowd]:
    # no TLS on this loopback server: the driver's default (TLS if offered) would only build an
    # SSL context per connection, 25 ms of CPU each
    url = mariadb.create_database("crowd") + "?ssl_disabled=true"
    world = Crowd(tmp_path_factory.mktemp("crowd"), url, agents=AGENTS, names=20)
    try:
        yield world
    finally:
        world.close()


class Hog:
    """Every connection the server has left, held as the application user until :meth:`release`."""

    def __init__(self, server: MariaDBServer) -> None:
        self.held: list[Any] = []
        while True:
            try:
                self.held.append(pymysql.connect(host="127.0.0.1", port=server.port,
                                                 user=server.user, password=server.password,
                                                 ssl_disabled=True, connect_timeout=5))
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1040, exc  # Too many connections: all of them are ours
                return

    def release(self) -> None:
        for connection in self.held:
            connection.close()
        self.held = []


class Status:
    """The server's status counters, read over one root connection opened before the server is
    full (MariaDB keeps no spare connection for root here)."""

    def __init__(self, server: MariaDBServer) -> None:
        self.connection = pymysql.connect(unix_socket=str(server.socket), user="root",
                                          password=server.root_password, autocommit=True)

    def __call__(self, name: str) -> int:
        with self.connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            [(_, value)] = cursor.fetchall()
        return int(value)

    def close(self) -> None:
        self.connection.close()


def test_two_thousand_agents_in_the_same_minute(crowd: Crowd, mariadb: MariaDBServer) -> None:
    """2,000 agents started together against max_connections 151, the server full when they
    start: every agent exits 0 with its certificate in place; those refused ("Too many
    connections") retried, each retry logged, and no password anywhere."""
    assert mariadb.execute("SELECT @@max_connections") == [(151,)]
    mariadb.execute("FLUSH STATUS")
    status = Status(mariadb)
    refused_before = status("Connection_errors_max_connections")
    hog = Hog(mariadb)
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(crowd.run(window=0, workers=50)))
    runner.start()
    # the server stays full until it refused 51 connections, or for 5 s: MariaDB 10.11 does not
    # count every "Too many connections" in that counter (seen: 99 counted for ~600 refusals),
    # and waiting for the count alone outlasted the first agents' retry time (60 s)
    deadline = time.monotonic() + 5
    try:
        while status("Connection_errors_max_connections") < refused_before + 51 \
                and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hog.release()
        runner.join()
        peak = status("Max_used_connections")
        status.close()

    [outcome] = result
    assert len(outcome.runs) == AGENTS
    assert outcome.failed == [], outcome.stderr[-3000:]
    assert all(crowd.installed(i) for i in range(AGENTS))
    assert outcome.retries >= 50  # the refusals the server counted, each one retried
    assert outcome.retry_reasons["too many connections"] >= 50
    assert "Too many connections" in outcome.stderr and "retry 1 in" in outcome.stderr
    assert mariadb.password not in outcome.stderr
    assert peak <= 152  # max_connections, and the root connection reading the status


def agent(crowd: Crowd, index: int) -> Any:
    return CliRunner().invoke(main, ["--config", str(crowd.configs[index]), "run"],
                              catch_exceptions=False)


def untouched(crowd: Crowd, index: int) -> bool:
    home = crowd.configs[index].parent
    return not any((home / "certs").iterdir()) and not (home / "state" / "entries").exists()


def plain_url(crowd: Crowd, count: int, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The first ``count`` agents' URL without options: the agent then reads its rows with the
    driver alone (lecentral/store/direct.py), not through the SQLAlchemy store. Returns what
    each direct read answered (a pass-through wrapper records it: None would mean "ask the
    store", and the test would not test the direct read)."""
    for config in crowd.configs[:count]:
        config.write_text(config.read_text().replace("?ssl_disabled=true", ""))
    answers: list[object] = []
    real = direct.read_rows

    def recorded(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = real(*args, **kwargs)
        except Exception as exc:
            answers.append(exc)
            raise
        answers.append(answer)
        return answer

    monkeypatch.setattr(direct, "read_rows", recorded)
    return answers


@pytest.mark.parametrize("read", ["store", "direct"])
def test_full_past_the_retry_time_fails_loudly(crowd: Crowd, mariadb: MariaDBServer, read: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stays full for longer than [database] retry_for: exit 4, one clear error
    naming the server and what was tried (attempts, time, the setting), no password, and no
    file written. Both ways an agent reads: the store, and the driver alone."""
    crowd.write_configs(3, {"retry_for": 1.5, "retry_delay": 0.2, "retry_max_delay": 0.5})
    answers = plain_url(crowd, 3, monkeypatch) if read == "direct" else []
    hog = Hog(mariadb)
    try:
        outs = [agent(crowd, i) for i in range(3)]
    finally:
        hog.release()

    for index, out in enumerate(outs):
        assert out.exit_code == 4, out.output
        error = [line for line in out.stderr.splitlines() if ": error: " in line]
        assert len(error) == 1, out.stderr
        assert f"the server 127.0.0.1:{mariadb.port} stayed unavailable ((1040, 'Too many " \
               "connections'))" in error[0]
        assert "attempts over" in error[0] and "retry_for = 1.5 s" in error[0]
        assert "raise its max_connections" in error[0]
        assert "retry 1 in" in out.stderr
        assert mariadb.password not in out.output + out.stderr
        assert untouched(crowd, index)

    # once there is room, the same agents install
    assert [agent(crowd, i).exit_code for i in range(3)] == [0, 0, 0]
    assert all(crowd.installed(i) for i in range(3))
    if read == "direct":  # the driver alone gave up three times, then read three times
        assert [type(a).__name__ for a in answers[:3]] == ["DatabaseUnavailable"] * 3
        assert all(isinstance(a, dict) for a in answers[3:]) and len(answers) == 6


@pytest.mark.parametrize("read", ["store", "direct"])
def test_server_restarting_during_the_retry(crowd: Crowd, mariadb: MariaDBServer, read: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is down when the agent starts ("Connection refused") and comes back while it
    retries: the agent installs and exits 0 (reading through the store, or the driver alone)."""
    crowd.write_configs(1, {"retry_for": 120, "retry_delay": 0.2, "retry_max_delay": 1})
    answers = plain_url(crowd, 1, monkeypatch) if read == "direct" else []
    retried = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            retried.set()

    seen = Seen()
    logging.getLogger(RETRY_LOGGER).addHandler(seen)
    outs: list[Any] = []
    mariadb.stop()
    try:
        runner = threading.Thread(target=lambda: outs.append(agent(crowd, 0)))
        runner.start()
        assert retried.wait(60), "the agent never retried"
    finally:
        mariadb.start()
        logging.getLogger(RETRY_LOGGER).removeHandler(seen)
    runner.join()

    [out] = outs
    assert out.exit_code == 0, out.stderr
    assert "Connection refused" in out.stderr or "Can't connect" in out.stderr
    assert crowd.installed(0)
    if read == "direct":
        assert len(answers) == 1 and isinstance(answers[0], dict)


def test_what_no_wait_cures_fails_at_once(crowd: Crowd, mariadb: MariaDBServer, tmp_path: Path) -> None:
    """A wrong password and a database without the certs table are not retried: exit 4 at
    once, no retry logged, whatever retry_for says."""
    wrong = crowd.db_url.replace(f":{mariadb.password}@", ":not-the-password@")
    empty = mariadb.create_database("crowd_empty") + "?ssl_disabled=true"
    try:
        for url, why in ((wrong, "refused this account's name or password"),
                         (empty, "doesn't exist")):
            crowd.write_configs(1, {"retry_for": 600})
            config = crowd.configs[0]
            config.write_text(config.read_text().replace(crowd.db_url, url))
            out = agent(crowd, 0)
            assert out.exit_code == 4, out.stderr
            assert why in out.stderr
            assert "retry" not in out.stderr.replace("retry_for", "")
            assert "not-the-password" not in out.stderr
            assert untouched(crowd, 0)
    finally:
        mariadb.drop_database("crowd_empty")


@pytest.mark.parametrize(("keys", "message"), [
    ("retry_for = 4000", "retry_for = 4000 is more than 3600 seconds"),
    ("retry_for = -1", "retry_for must be at least 0.0"),
    ("retry_delay = 0", "retry_delay must be at least 0.01"),
    ("retry_delay = 5\nretry_max_delay = 1", "retry_max_delay (1) must be at least retry_delay (5)"),
    ('retry_for = "1m"', "retry_for must be"),
])
def test_retry_settings_are_checked(tmp_path: Path, keys: str, message: str) -> None:
    config = tmp_path / "install.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db"\n{keys}\n')
    out = CliRunner().invoke(main, ["--config", str(config), "run"])
    assert out.exit_code == 2, out.output
    assert message in out.stderr


def test_postgresql_full_then_room(postgres_server: Any, postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL with every connection slot taken ("remaining connection slots are reserved",
    SQLSTATE 53300): past a short retry_for the agent fails loudly (exit 4, the server named,
    nothing written); with a longer one it retries, and installs once there is room."""
    import psycopg

    crowd = Crowd(tmp_path, postgres_url, agents=1, names=1)
    held: list[Any] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(host="127.0.0.1", port=postgres_server.port,
                                            user=postgres_server.user,
                                            password=postgres_server.password,
                                            dbname=postgres_server.database, connect_timeout=5))
            except psycopg.OperationalError as exc:
                assert "connection slots" in str(exc) or "too many clients" in str(exc), exc
                break
        crowd.write_configs(1, {"retry_for": 1, "retry_delay": 0.2})
        out = agent(crowd, 0)
        assert out.exit_code == 4, out.stderr
        assert f"the server 127.0.0.1:{postgres_server.port} stayed unavailable" in out.stderr
        assert "retry 1 in" in out.stderr and untouched(crowd, 0)
        assert postgres_server.password not in out.stderr

        crowd.write_configs(1, {"retry_for": 120, "retry_delay": 0.2, "retry_max_delay": 1})
        retried = threading.Event()

        class Seen(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                retried.set()

        seen = Seen()
        logging.getLogger(RETRY_LOGGER).addHandler(seen)
        outs: list[Any] = []
        runner = threading.Thread(target=lambda: outs.append(agent(crowd, 0)))
        runner.start()
        try:
            assert retried.wait(60), "the agent never retried"
        finally:
            logging.getLogger(RETRY_LOGGER).removeHandler(seen)
            for connection in held:
                connection.close()
            held = []
        runner.join()
        [out] = outs
        assert out.exit_code == 0, out.stderr
        assert crowd.installed(0)
    finally:
        for connection in held:
            connection.close()
        crowd.close()


def test_monitoring_checks_retry_a_few_seconds_only(tmp_path: Path) -> None:
    """``lecentral-install check`` and ``lecentral check`` answer UNKNOWN (naming the server)
    after at most 5 s of retries whatever retry_for says: NRPE would kill a check that waits a
    minute, and a killed check says nothing about why."""
    from lecentral_testing.ports import free_port

    from lecentral.cli.central import main as central

    port = free_port()
    table = (f'[database]\nurl = "mysql+pymysql://reader:s3cr3t-pw@127.0.0.1:{port}/certs"\n'
             "retry_for = 600\nretry_delay = 1\n")
    central_config = tmp_path / "lecentral.toml"
    central_config.write_text(table)
    agent_config = tmp_path / "install.toml"
    agent_config.write_text(f'{table}[[cert]]\nname = "www.example.test"\nkey = "{tmp_path}/www.key"\n'
                            f'cert = "{tmp_path}/www.crt"\n')
    for command, config in ((main, agent_config), (central, central_config)):
        out = CliRunner().invoke(command, ["--config", str(config), "check"])
        assert out.exit_code == 3, out.output
        assert out.stdout.startswith(("LECENTRAL-INSTALL UNKNOWN", "LECENTRAL UNKNOWN")), out.stdout
        assert f"127.0.0.1:{port} stayed unavailable" in out.stdout
        assert "retry_for = 5 s" in out.stdout
        assert "s3cr3t-pw" not in out.output
