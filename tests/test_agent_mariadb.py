"""The agent reading a real MariaDB as a read-only user, and MariaDB going down.

This module starts its own MariaDB (not the session's shared one) because one test stops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_world import Mailbox, tree
from lecentral_testing.agent import AgentWorld
from lecentral_testing.mariadb import MariaDBServer

NAME = "www.example.test"
READER_PASSWORD = "r3ad-only-pw"


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path_factory.mktemp("agent-mariadb"))
    with server:
        yield server


@pytest.fixture
def db_world(tmp_path: Path, mariadb: MariaDBServer, smtp: tuple[Mailbox, int],
             request: pytest.FixtureRequest) -> Iterator[tuple[AgentWorld, str]]:
    """A fresh database filled by the central side, and a URL for a user that may only SELECT certs."""
    database = f"agent_{abs(hash(request.node.name)) % 10**8}"
    url = mariadb.create_database(database)
    mariadb.execute(f"CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY '{READER_PASSWORD}'")
    world = AgentWorld(tmp_path, db_url=url)
    mariadb.execute(f"GRANT SELECT ON `{database}`.`certs` TO 'reader'@'%'")
    world.notify = {"mail_to": ["ops@example.test"], "smtp": f"127.0.0.1:{smtp[1]}"}
    reader = url.replace(f"{mariadb.user}:{mariadb.password}@", f"reader:{READER_PASSWORD}@")
    try:
        yield world, reader
    finally:
        world.close()
        mariadb.drop_database(database)


def test_read_only_user_is_enough(db_world: tuple[AgentWorld, str]) -> None:
    """SELECT on certs is all the agent needs to install; asked to report (``[agent] report``)
    with a user that may not write the fleet tables, the install stands and the run says loudly
    (exit 1, a ``(report)`` result) that the report was not delivered."""
    world, reader = db_world
    world.add(NAME)
    leaf = world.issue(NAME)
    world.write_config(world.entry(NAME), database=reader)

    out = world.run("run")

    assert out.exit_code == 0, out.stderr
    assert out.by_name(NAME)["status"] == "installed"
    assert out.by_name(NAME)["fingerprint"] == leaf.fingerprint

    world.issue(NAME)
    world.agent["report"] = True
    world.write_config(world.entry(NAME), database=reader)
    out = world.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "installed"
    report = out.by_name("(report)")
    assert report["status"] == "failed" and "not delivered" in report["message"]
    assert "denied" in report["message"]
    assert READER_PASSWORD not in out.stderr + out.stdout


def test_database_down(db_world: tuple[AgentWorld, str], mariadb: MariaDBServer,
                       smtp: tuple[Mailbox, int]) -> None:
    """MariaDB stopped (for longer than ``[database] retry_for``): an alert, exit status 4, and
    every file exactly as it was."""
    world, reader = db_world
    world.database = {"retry_for": 1, "retry_delay": 0.2}
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME), database=reader)
    assert world.run("run").by_name(NAME)["status"] == "installed"
    world.issue(NAME, days=60)
    before = tree(world.ssl)
    mariadb.stop()
    try:
        out = world.run("run")
    finally:
        mariadb.start()

    assert out.exit_code == 4, out.stdout + out.stderr
    assert "check that the server is up" in out.stderr and "stayed unavailable" in out.stderr
    assert tree(world.ssl) == before
    assert any("cannot read the certificate database" in s for s in smtp[0].subjects())
    assert READER_PASSWORD not in out.stderr + smtp[0].bodies()


SPECIAL_PASSWORD = "r3ad#only/p@ss:w0rd"


def test_password_with_url_characters(db_world: tuple[AgentWorld, str], mariadb: MariaDBServer,
                                      smtp: tuple[Mailbox, int]) -> None:
    """A real user whose password holds '#', '/', '@' and ':': written raw in the URL it is refused
    before connecting (exit 4, alert) with how to percent-encode it, and no fragment of it is
    shown anywhere; percent-encoded it works."""
    from urllib.parse import quote

    world, reader = db_world
    database = reader.rsplit("/", 1)[1]
    mariadb.execute(f"CREATE USER IF NOT EXISTS 'special'@'%' IDENTIFIED BY '{SPECIAL_PASSWORD}'")
    mariadb.execute(f"GRANT SELECT ON `{database}`.`certs` TO 'special'@'%'")
    world.add(NAME)
    leaf = world.issue(NAME)
    raw = reader.replace(f"reader:{READER_PASSWORD}@", f"special:{SPECIAL_PASSWORD}@")
    world.write_config(world.entry(NAME), database=raw)

    out = world.run("run")

    assert out.exit_code == 4, out.stdout + out.stderr
    assert "Percent-encode it in the URL: @ as %40, / as %2F, # as %23" in out.stderr
    shown = out.stdout + out.stderr + smtp[0].bodies()
    for fragment in ("r3ad", "only/p", "ss:w0rd", "w0rd"):
        assert fragment not in shown, fragment
    assert not (world.ssl / "certs" / f"{NAME}.crt").exists()

    encoded = reader.replace(f"reader:{READER_PASSWORD}@", f"special:{quote(SPECIAL_PASSWORD, safe='')}@")
    world.write_config(world.entry(NAME), database=encoded)
    out = world.run("run")
    assert out.exit_code == 0, out.stdout + out.stderr
    assert out.by_name(NAME)["fingerprint"] == leaf.fingerprint


def test_the_direct_read_matches_the_store(db_world: tuple[AgentWorld, str]) -> None:
    """The agent's read without SQLAlchemy (lecentral.store.direct): the store's rows, and a
    refused password worded exactly as the store words it, without the password."""
    from lecentral.errors import StoreError
    from lecentral.store.direct import read_rows
    from lecentral.store.sql import SqlStore

    world, reader = db_world
    world.add(NAME)
    world.issue(NAME)

    rows = read_rows(reader, [NAME, "absent.example.test"])

    assert rows == {NAME: world.store.get(NAME), "absent.example.test": None}
    wrong = reader.replace(READER_PASSWORD, "wr0ng-pw")
    with pytest.raises(StoreError) as direct:
        read_rows(wrong, [NAME])
    store = SqlStore(wrong)
    with pytest.raises(StoreError) as through_store:
        store.get(NAME)
    store.close()
    assert str(direct.value) == str(through_store.value)
    assert "Access denied" in str(direct.value) and "wr0ng-pw" not in str(direct.value)
