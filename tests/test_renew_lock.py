"""The renew lock: scoped to one database, its holder named to whoever finds it taken (exit 8),
never held while the retry rounds sleep; and ``lecentral renew NAME`` does one attempt.

Real SQLite lock files, MariaDB GET_LOCK and PostgreSQL advisory locks; the renew runs go through
the shared Pebble + BIND world (``dns_world``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.postgres import PostgresServer
from renew_world import (
    BADSECRET,
    FROZEN,
    SPARE,
    World,
    add_row,
    make_config,
    open_store,
    write_toml,
)

from lecentral.cli.central import main
from lecentral.errors import LecentralError
from lecentral.hookspecs import hookimpl
from lecentral.host import this_host
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.store.renewlock import mysql_lock_name
from lecentral.store.sql import SqlStore

LECENTRAL = shutil.which("lecentral") or "lecentral"


def cli(toml: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(toml), *args])


# --- the holder is named, the exit status says it ---------------------------------------------


def test_lock_held_the_run_does_nothing_and_names_the_holder(dns_world: World,
                                                             tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [SPARE[0]])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    other = SqlStore(config.database.url)
    try:
        with other.renew_lock(0) as got:
            assert got
            report = RenewJob(config, store, Registry.load(entrypoints=False)).run(
                RenewRequest(names=(SPARE[0],), once=True))
            named = cli(toml, "renew", SPARE[0])
            as_json = cli(toml, "renew", "--json")
    finally:
        other.close()
    assert report.locked_out and report.locked_out_round == 1 and report.outcomes == []
    assert report.lock_holder is not None
    assert (report.lock_holder.host, report.lock_holder.pid) == (this_host(), os.getpid())
    assert named.exit_code == 8, named.output
    assert "another lecentral renew holds the renew lock" in named.stderr
    assert f"host {this_host()}, pid {os.getpid()}, since " in named.stderr
    assert "nothing done" in named.stderr and "--wait" in named.stderr
    assert as_json.exit_code == 8
    data = json.loads(as_json.stdout)
    assert data["locked_out"] and not data["ok"]
    assert data["lock_holder"]["pid"] == os.getpid() and data["lock_holder"]["host"] == this_host()
    row = store.get(SPARE[0])  # untouched: no attempt, no failure counted
    assert row is not None and row.crt is None and row.count_fail_update == 0
    assert [e.kind for e in store.events(SPARE[0])] == ["added"]
    assert store.renew_lock_holder() is None  # released: the record is gone with it
    store.close()


def test_a_damaged_holder_record_is_not_believed(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/lecentral.db")
    store.init_schema()
    Path(f"{tmp_path}/lecentral.db.lock").write_text('{"host": "", "pid": "x", "since": -1}')
    assert store.renew_lock_holder() is None
    with store.renew_lock(0) as got:
        assert got
        holder = store.renew_lock_holder()
        assert holder is not None and holder.pid == os.getpid()
    store.close()


# --- MariaDB: GET_LOCK names are server-wide ------------------------------------------------


def test_mariadb_databases_on_one_server_do_not_block_each_other(
        mariadb_server: MariaDBServer, mariadb_url: str) -> None:
    """Before: GET_LOCK('lecentral.renew') on any database of the server blocked all others."""
    long_name = "t_" + "x" * 61  # 63 (the launcher's limit): over the 64 of a lock name, hashed
    assert len(mysql_lock_name(long_name)) <= 64 and mysql_lock_name("certs") == "lecentral.renew.certs"
    first = SqlStore(mariadb_url)
    first.init_schema()
    others = [SqlStore(mariadb_server.create_database(n)) for n in ("t_second_lecentral", long_name)]
    try:
        with first.renew_lock(0) as got:
            assert got
            for other in others:
                other.init_schema()
                with other.renew_lock(0) as also:
                    assert also, other.shown_url
            with SqlStore(mariadb_url).renew_lock(0) as same:  # the same database still excludes
                assert not same
            holder = SqlStore(mariadb_url).renew_lock_holder()
            assert holder is not None and (holder.host, holder.pid) == (this_host(), os.getpid())
        assert first.renew_lock_holder() is None
    finally:
        for store in [first, *others]:
            store.close()
        for name in ("t_second_lecentral", long_name):
            mariadb_server.drop_database(name)


def test_postgresql_lock_is_per_database_with_its_holder(postgres_server: PostgresServer,
                                                         postgres_url: str) -> None:
    first = SqlStore(postgres_url)
    first.init_schema()
    second = SqlStore(postgres_server.create_database("t_second_lecentral"))
    second.init_schema()
    try:
        with first.renew_lock(0) as got:
            assert got
            with second.renew_lock(0) as also:
                assert also
            with SqlStore(postgres_url).renew_lock(0) as same:
                assert not same
            holder = SqlStore(postgres_url).renew_lock_holder()
            assert holder is not None and holder.pid == os.getpid()
    finally:
        first.close()
        second.close()
        postgres_server.drop_database("t_second_lecentral")


# --- rounds: the lock is free while they sleep ----------------------------------------------


class FailureSeen:
    """An event plugin telling the test when a renewal failed."""

    def __init__(self) -> None:
        self.failed = threading.Event()

    @hookimpl
    def lecentral_renew_failed(self, name: str, error: str, count_fail_update: int) -> None:
        self.failed.set()


def registry_with(plugin: object) -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(plugin, name="test-failure-seen")
    return Registry(loaded)


def take_lock_within(store: SqlStore, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with store.renew_lock(0) as got:
            if got:
                return True
        time.sleep(0.05)
    return False


def test_rounds_release_the_lock_while_sleeping(dns_world: World, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """During retry_pause an operator's ``renew NAME`` issues; a lock held when the next round
    is due makes that round wait for it, not give up."""
    config = make_config(dns_world, tmp_path, retry_pause=12, max_failures=1)
    store = open_store(config)
    add_row(store, [BADSECRET])
    add_row(store, [SPARE[1]])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    seen = FailureSeen()
    job = RenewJob(config, store, registry_with(seen))
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.append(
        job.run(RenewRequest(names=(BADSECRET,)))))
    other = SqlStore(config.database.url)
    with caplog.at_level(logging.WARNING):
        worker.start()
        try:
            assert seen.failed.wait(60), "round 1 did not fail"
            assert take_lock_within(other, 5), "the lock stayed held during retry_pause"
            # a subprocess: the CLI's logging set-up would take caplog's handler away
            operator = subprocess.run([LECENTRAL, "--config", str(toml), "renew", SPARE[1]],
                                      capture_output=True, text=True, timeout=60, check=False)
            with other.renew_lock(0) as got:  # held when round 2 is due: it waits
                assert got
                deadline = time.monotonic() + 30
                while "waiting up to" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            worker.join(120)
            other.close()
    assert operator.returncode == 0, operator.stderr
    assert "ISSUED" in operator.stdout and SPARE[1] in operator.stdout
    [report] = reports
    assert [(o.round, o.status, o.count_fail_update) for o in report.outcomes] == [
        (1, "failed", 1), (2, "failed", 2)]
    assert not report.locked_out
    assert f"is held (host {this_host()}, pid {os.getpid()}" in caplog.text
    assert "retrying in 12 s (renew.retry_pause), the renew lock released meanwhile" in caplog.text
    store.close()


def test_round_that_cannot_get_the_lock_is_reported(dns_world: World, tmp_path: Path) -> None:
    """Another run takes the lock while the rounds sleep and keeps it past the next round's
    wait (renew.retry_pause): the failures stay failures, and the report says which round did
    not run and who held the lock."""
    config = make_config(dns_world, tmp_path, retry_pause=1, max_failures=3)
    store = open_store(config)
    add_row(store, [BADSECRET])
    other = SqlStore(config.database.url)
    release = threading.Event()

    def hold() -> None:
        with other.renew_lock(30) as got:  # as soon as round 1 lets go
            assert got
            release.wait(120)

    class GrabAfterFailure:
        @hookimpl
        def lecentral_renew_failed(self, name: str, error: str, count_fail_update: int) -> None:
            threading.Thread(target=hold).start()

    try:
        report = RenewJob(config, store, registry_with(GrabAfterFailure())).run(RenewRequest())
    finally:
        release.set()
    assert report.locked_out and report.locked_out_round == 2
    assert report.lock_holder is not None and report.lock_holder.pid == os.getpid()
    assert [(o.round, o.status) for o in report.final] == [(1, "failed")]
    assert report.failed  # the command exits 1 for it
    row = store.get(BADSECRET)
    assert row is not None and row.count_fail_update == 1
    other.close()
    store.close()


def test_certificate_renewed_by_another_run_between_rounds_is_not_ordered_again(
        dns_world: World, tmp_path: Path) -> None:
    """Round 1 fails (frozen zone, thawed by the operator after the alert); during retry_pause
    the operator's ``renew NAME --force`` issues it. Round 2 sees its failure count back at 0
    and does not order it a second time."""
    config = make_config(dns_world, tmp_path, retry_pause=10, max_failures=3)
    store = open_store(config)
    add_row(store, [FROZEN])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    seen = FailureSeen()
    reports: list[Any] = []
    job = RenewJob(config, store, registry_with(seen))
    dns_world.bind.rndc("freeze", FROZEN)
    worker = threading.Thread(target=lambda: reports.append(job.run(RenewRequest())))
    worker.start()
    try:
        assert seen.failed.wait(60), "round 1 did not fail"
    finally:
        dns_world.bind.rndc("thaw", FROZEN)
    other = SqlStore(config.database.url)
    try:
        assert take_lock_within(other, 5)
    finally:
        other.close()
    operator = subprocess.run([LECENTRAL, "--config", str(toml), "renew", FROZEN, "--force"],
                              capture_output=True, text=True, timeout=60, check=False)
    worker.join(120)
    assert operator.returncode == 0, operator.stderr
    [report] = reports
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed"), (2, "not-due")]
    assert report.final[0].message == "renewed by another run while waiting to retry"
    assert not report.failed
    assert [e.kind for e in store.events(FROZEN)] == ["issued", "failed", "added"]
    store.close()


# --- the command: one attempt unless --rounds -------------------------------------------------


def test_named_renew_makes_one_attempt_and_never_sleeps(dns_world: World, tmp_path: Path) -> None:
    """renew.retry_pause is an hour: a human's ``renew NAME`` still returns at once."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [BADSECRET])
    add_row(store, [SPARE[2]])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    toml.write_text(toml.read_text().replace("retry_pause = 0", "retry_pause = 3600"))
    started = time.monotonic()
    out = subprocess.run([LECENTRAL, "--config", str(toml), "renew", BADSECRET, "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert time.monotonic() - started < 60
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["rounds"] == 1 and [a["status"] for a in data["attempts"]] == ["failed"]

    issued = cli(toml, "renew", SPARE[2])
    assert issued.exit_code == 0, issued.output
    again = cli(toml, "renew", SPARE[2])  # just issued: not due, and said so with the reason
    assert again.exit_code == 0
    assert "NOT-DUE" in again.output and "renew.min_interval" in again.output
    assert "--force orders them anyway" in again.output

    both = cli(toml, "renew", "--rounds", "--once")
    assert both.exit_code == 2 and "contradict" in both.output
    negative = cli(toml, "renew", "--wait", "-1")
    assert negative.exit_code == 2 and "--wait" in negative.output
    store.close()


def test_rounds_flag_retries(dns_world: World, tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [BADSECRET])
    toml = write_toml(config, tmp_path / "lecentral.toml")  # retry_pause 0, max_failures 1
    out = cli(toml, "renew", "--rounds", "--json")
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert data["rounds"] == 2 and [a["round"] for a in data["attempts"]] == [1, 2]
    store.close()


@pytest.mark.parametrize("case", ["server-down", "sqlite-file-missing"])
def test_renew_json_says_what_failed_when_the_database_cannot_be_reached(tmp_path: Path,
                                                                         case: str) -> None:
    """No database: as with the lock held, ``renew --json`` prints a JSON document (ok false, the
    error in problems, the password masked) and exits 4; stderr says the same, once."""
    from lecentral_testing.ports import free_port

    port = free_port()  # nothing listens there: the server is down
    url = (f"mysql+pymysql://lecentral:hunter2@127.0.0.1:{port}/certs" if case == "server-down"
           else f"sqlite:///{tmp_path}/missing.db")
    toml = tmp_path / "lecentral.toml"
    toml.write_text(f'[database]\nurl = "{url}"\nretry_for = 0\n'
                    f'[renew]\nstate_dir = "{tmp_path / "renew"}"\n')
    result = CliRunner().invoke(main, ["--config", str(toml), "renew", "--json"])
    assert result.exit_code == 4, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["locked_out"] is False and data["certificates"] == []
    [problem] = data["problems"]
    assert problem["exit_code"] == 4 and problem["names"] == []
    expected = (f"127.0.0.1:{port}" if case == "server-down" else
                f"database file {tmp_path}/missing.db does not exist")
    assert expected in problem["message"], problem
    assert result.stderr.count(problem["message"]) == 1, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "missing.db").exists()


def test_renew_json_of_a_run_stopped_between_rounds_keeps_what_was_done(
        dns_world: World, tmp_path: Path, mariadb_server: MariaDBServer, mariadb_url: str) -> None:
    """Round 1 issues one certificate and fails another; MariaDB stops during retry_pause, so
    round 2 cannot take the renew lock and the run stops with the database error. The JSON that
    ``renew --json`` prints then still lists round 1's outcomes, with the error last in
    problems, ok false."""
    from lecentral.cli.renew import _stopped_dict

    config = make_config(dns_world, tmp_path, db_url=mariadb_url, retry_pause=3, max_failures=3)
    store = open_store(config)
    add_row(store, [BADSECRET])
    add_row(store, [SPARE[2]])
    job = RenewJob(config, store, Registry.load(entrypoints=False))

    def stop_after_round_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            report = job.report
            if report is not None and len(report.outcomes) == 2:
                mariadb_server.stop()
                return
            time.sleep(0.02)

    stopper = threading.Thread(target=stop_after_round_one)
    stopper.start()
    try:
        with pytest.raises(LecentralError) as info:
            job.run(RenewRequest())
    finally:
        stopper.join()
        mariadb_server.start()
    assert info.value.exit_code == 4
    data = _stopped_dict(info.value, False, job.report)
    assert data["ok"] is False
    assert {c["name"]: c["status"] for c in data["certificates"]} == {BADSECRET: "failed",
                                                                      SPARE[2]: "issued"}
    assert data["problems"][-1] == {"message": str(info.value), "exit_code": 4, "names": []}
    assert mariadb_server.password not in json.dumps(data)
    store.close()
