"""An issued certificate survives a database that fails between the CA's answer and the save.

Real parts: Pebble, BIND, SQLite and MariaDB. The database fails for real, at a chosen moment: a
test issuer (the built-in ``dns-subzone``) runs a step once the CA has issued, before the renew
job saves: another SQLite connection takes the write lock, or the MariaDB server is stopped.
The next run must save the spooled certificate without a new order: the log has no order and
the certificate's serial is the one issued in the failed run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.pki import make_csr
from lecentral_testing.ports import LOOPBACK, free_port
from renew_world import (
    BADSECRET,
    ONE,
    SPARE,
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
    write_toml,
)
from test_store_sqlite_errors import fill

from lecentral.builtin.dns_subzone import DnsSubzoneIssuer
from lecentral.certificates import Certificate, Csr, when
from lecentral.config import CentralConfig, NotifyConfig
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate
from lecentral.plugins import get_plugin_manager
from lecentral.records import Notification
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewReport, RenewRequest
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore
from lecentral.types import IssuerContext, IssuerType, NotifierType


class StepAfterIssue(DnsSubzoneIssuer):
    """The built-in DNS-01 issuer; ``step`` runs once the certificate is issued."""

    def __init__(self, context: IssuerContext, step: Callable[[], None]) -> None:
        super().__init__(context)
        self.step = step

    def issue(self, row: CertRow, csr: Csr) -> IssuedCertificate:
        issued = super().issue(row, csr)
        self.step()
        return issued


class Hooked:
    def __init__(self, step: Callable[[], None]) -> None:
        self.step = step

    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType(name="hooked", factory=lambda c: StepAfterIssue(c, self.step),
                           description="test: dns-subzone with a step after issuing")]


def run(config: CentralConfig, store: SqlStore, step: Callable[[], None] = lambda: None,
        **request: Any) -> RenewReport:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(Hooked(step), name="hooked-issuer")
    return RenewJob(config, store, Registry(loaded)).run(RenewRequest(**{"once": True, **request}))


def orders(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ": order https://" in r.getMessage()]


def spool_file(config: CentralConfig, name: str) -> Path:
    return Path(config.renew.state_dir) / "spool" / f"{name}.json"


@pytest.fixture
def sqlite_locker(tmp_path: Path) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """(lock, unlock): another connection holding the SQLite database's write lock."""
    conn = sqlite3.connect(tmp_path / "lecentral.db", isolation_level=None, check_same_thread=False)

    def lock() -> None:
        conn.execute("BEGIN IMMEDIATE")

    def unlock() -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    yield lock, unlock
    unlock()
    conn.close()


def test_sqlite_locked_between_finalize_and_save(dns_world: World, tmp_path: Path,
                                                 sqlite_locker: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    lock, unlock = sqlite_locker
    name = SPARE[7]
    config = make_config(dns_world, tmp_path, dns01_issuer="hooked")
    store = open_store(config)
    _, key = add_row(store, [name])
    with caplog.at_level(logging.INFO):
        first = run(config, store, lock)
    unlock()
    outcome = first.final[0]
    assert outcome.status == "failed" and not first.ok
    assert "issued but not saved" in outcome.message and "database is locked" in outcome.message
    path = spool_file(config, name)
    assert f"kept in {path}" in outcome.message and "without a new order" in outcome.message
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    spooled = json.loads(path.read_text())
    serial = Certificate.load(spooled["crt"].encode()).cert.serial_number
    assert spooled["csr_sha256"] and spooled["name"] == name
    assert "database is locked" in spooled["unsaved"]  # noted for the run that saves it
    row = store.get(name)
    assert row is not None and row.crt is None and row.count_fail_update == 0
    assert len(orders(caplog)) == 1

    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = run(config, store)
    assert orders(caplog) == []  # no new order: the spooled certificate was saved
    (saved,) = second.start
    assert saved.status == "issued" and "saved from the spool" in saved.message and second.ok
    assert "in a run whose database write failed (" in saved.message
    assert "database is locked" in saved.message and "ended before" not in saved.message
    cert = assert_issued(store, name, [name], key)
    assert cert.cert.serial_number == serial
    assert not path.exists()
    assert [o.status for o in second.final] == ["not-due"]
    store.close()


class UnlockOnAlert:
    """A notifier plugin: the operator, alerted of the failed save, frees the database."""

    def __init__(self, unlock: Callable[[], None]) -> None:
        self.unlock = unlock
        self.subjects: list[str] = []

    @hookimpl
    def lecentral_register_notifiers(self) -> list[NotifierType]:
        return [NotifierType("unlock", lambda settings: self)]

    def send(self, notification: Notification) -> None:
        self.subjects.append(notification.subject)
        self.unlock()


def test_next_round_saves_from_the_spool_without_a_new_order(dns_world: World, tmp_path: Path,
                                                             sqlite_locker: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Retry rounds (no --once): the round after the failed save saves the spooled certificate;
    the CA gets one order in the whole run."""
    lock, unlock = sqlite_locker
    name = SPARE[7]
    config = make_config(dns_world, tmp_path, dns01_issuer="hooked")
    store = open_store(config)
    _, key = add_row(store, [name])
    alerts = UnlockOnAlert(unlock)
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(Hooked(lock), name="hooked-issuer")
    loaded.pm.register(alerts, name="unlock-notifier")
    with caplog.at_level(logging.INFO):
        report = RenewJob(config, store, Registry(loaded)).run(RenewRequest())
    assert alerts.subjects == [f"{name}: renewal failed"]
    assert report.rounds == 2 and report.ok
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed"), (2, "issued")]
    assert "saved from the spool" in report.final[0].message
    assert len(orders(caplog)) == 1
    assert_issued(store, name, [name], key)
    assert not spool_file(config, name).exists()
    store.close()


def test_spooled_certificate_for_a_replaced_csr_is_discarded(dns_world: World, tmp_path: Path,
                                                             sqlite_locker: Any) -> None:
    """set-csr between the failed save and the next run: the spooled certificate carries the old
    key; it is discarded loudly (refused, event, moved aside) and the row is ordered anew."""
    lock, unlock = sqlite_locker
    name = SPARE[7]
    config = make_config(dns_world, tmp_path, dns01_issuer="hooked")
    store = open_store(config)
    add_row(store, [name])
    run(config, store, lock)
    unlock()
    csr_pem, key = make_csr([name])
    store.set_csr(name, csr_pem, Csr.load(csr_pem).md5_modulus)
    second = run(config, store)
    (discarded,) = second.start
    assert discarded.status == "refused" and not second.ok
    assert "replaced since" in discarded.message and "discarded, not saved" in discarded.message
    issued_at = json.loads(next((Path(config.renew.state_dir) / "spool" / "discarded")
                                .iterdir()).read_text())["issued_at"]
    # a date as every message says it, not the raw Unix time
    assert f"(issued at {when(issued_at)})" in discarded.message
    assert str(issued_at) not in discarded.message
    assert not spool_file(config, name).exists()
    assert len(list((Path(config.renew.state_dir) / "spool" / "discarded").iterdir())) == 1
    assert "discarded" in [e.kind for e in store.events(name)]
    assert [o.status for o in second.final] == ["issued"]
    assert_issued(store, name, [name], key)  # the new key's certificate, freshly ordered
    store.close()


#: what the next run says of a spooled certificate whose run noted nothing
UNNOTED = ("run that noted no database error: it ended before the database write (killed, "
           "crashed, the machine stopped), or could not note the error in the spool (see its log)")


def test_a_save_failure_that_cannot_be_noted_is_not_called_a_crash(
        dns_world: World, tmp_path: Path, sqlite_locker: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """The database write fails (another process holds SQLite's lock) and the spool's file
    system (a real tmpfs, filled up once the certificate is spooled, while the save waits for
    the lock) has no room for the note: that run logs that the note could not be written; the
    next run saves the certificate without a new order and does not claim the run was killed."""
    lock, unlock = sqlite_locker
    name = SPARE[7]
    config = make_config(dns_world, tmp_path, dns01_issuer="hooked")
    store = open_store(config)
    _, key = add_row(store, [name])
    spool = Path(config.renew.state_dir) / "spool"
    spool.mkdir(parents=True, mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(spool)],
                   check=True)
    try:
        def fill_once_spooled() -> None:
            deadline = time.monotonic() + 120
            while not spool_file(config, name).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            fill(spool)

        filler = threading.Thread(target=fill_once_spooled)
        filler.start()
        with caplog.at_level(logging.INFO):
            first = run(config, store, lock)
        filler.join()
        unlock()
        outcome = first.final[0]
        assert outcome.status == "failed" and "database is locked" in outcome.message
        assert f"kept in {spool_file(config, name)}" in outcome.message
        assert "unsaved" not in json.loads(spool_file(config, name).read_text())
        assert any(f"{name}: the failed save could not be noted in the spool: " in r.getMessage()
                   and "No space left on device" in r.getMessage() for r in caplog.records)
        (spool / "filler").unlink()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            second = run(config, store)
        assert orders(caplog) == [] and second.ok
        (saved,) = second.start
        assert saved.status == "issued" and UNNOTED in saved.message, saved.message
        assert "killed" in saved.message and "could not note the error" in saved.message
        assert_issued(store, name, [name], key)
        assert not spool_file(config, name).exists()
    finally:
        subprocess.run(["umount", str(spool)], check=True)
        store.close()


KILLED_BEFORE_SAVE = """
import os, signal, sys
from lecentral.renew import saving
# the moment a kill -9 (the OOM killer, a power cut) can come: spooled, not yet saved
saving.GroupSaver.save = lambda self, save: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["lecentral", "--config", sys.argv[1], "renew", "--once"]
from lecentral.cli.start import central
central()
"""


def test_a_run_killed_between_spool_and_save_is_said_so_by_the_next(
        dns_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``kill -9`` between the spool and the database: the next run saves the certificate
    without a new order and says the run that issued it was stopped before its save, not that
    a database write failed (no database write was tried)."""
    name = new_zone(dns_world, "killed")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    _, key = add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SAVE, str(toml)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    spooled = json.loads(spool_file(config, name).read_text())
    assert "unsaved" not in spooled
    row = store.get(name)
    assert row is not None and row.crt is None
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = run(config, store)
    assert orders(caplog) == [] and second.ok
    (saved,) = second.start
    assert saved.status == "issued"
    assert (f"saved from the spool: issued by dns-subzone at {when(spooled['issued_at'])} in a "
            f"{UNNOTED}; no new order") in saved.message
    assert "database write failed" not in saved.message
    assert_issued(store, name, [name], key)
    assert not spool_file(config, name).exists()
    store.close()


def test_a_certificate_saved_from_the_spool_is_counted_once(dns_world: World,
                                                             tmp_path: Path) -> None:
    """The next run's count line and its lecentral_runs record say the certificate it saved
    from the spool once, as issued (they said "1 issued, 1 not-due" for one row, and the record
    "1 not-due" only)."""
    from click.testing import CliRunner

    from lecentral.cli.central import main

    name = new_zone(dns_world, "twice")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml")
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SAVE, str(toml)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert spool_file(config, name).exists()
    result = CliRunner().invoke(main, ["--config", str(toml), "renew"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ISSUED") == 1 and result.stdout.splitlines()[-1] == "1 issued"
    with sqlite3.connect(tmp_path / "lecentral.db") as db:
        [(counts, message)] = db.execute("SELECT counts, message FROM lecentral_runs WHERE kind "
                                         "= 'renew'").fetchall()
    assert (json.loads(counts), message) == ({"issued": 1}, "1 issued")


def test_mariadb_stopped_between_finalize_and_save(dns_world: World, tmp_path: Path,
                                                   mariadb_url: str, mariadb_server: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    name = SPARE[4]
    config = make_config(dns_world, tmp_path, db_url=mariadb_url, dns01_issuer="hooked")
    store = open_store(config)
    _, key = add_row(store, [name])
    try:
        first = run(config, store, mariadb_server.stop)
    finally:
        mariadb_server.start()
    outcome = first.final[0]
    assert outcome.status == "failed" and "issued but not saved" in outcome.message
    assert f"kept in {spool_file(config, name)}" in outcome.message
    serial = Certificate.load(json.loads(spool_file(config, name).read_text())["crt"].encode()) \
        .cert.serial_number
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = run(config, store)
    assert orders(caplog) == [] and second.ok
    assert [o.status for o in second.start] == ["issued"]
    assert assert_issued(store, name, [name], key).cert.serial_number == serial
    assert not spool_file(config, name).exists()
    store.close()


def test_smtp_down_is_loud_in_the_log_and_the_run_goes_on(dns_world: World, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """[notify] smtp points at a closed port: each alert that cannot be sent is an ERROR naming
    the relay; the failure is still recorded and the other certificate still issued."""
    port = free_port()
    config = make_config(dns_world, tmp_path)
    config = dataclasses.replace(config, notify=NotifyConfig(
        mail_to=["ops@example.test"], smtp=f"{LOOPBACK}:{port}", smtp_timeout=5.0))
    store = open_store(config)
    add_row(store, [BADSECRET])
    _, key = add_row(store, [ONE])
    with caplog.at_level(logging.INFO):
        report = RenewJob(config, store, Registry.load(entrypoints=False)).run(
            RenewRequest(once=True))
    assert {o.name: o.status for o in report.final} == {BADSECRET: "failed", ONE: "issued"}
    assert_issued(store, ONE, [ONE], key)
    row = store.get(BADSECRET)
    assert row is not None and row.count_fail_update == 1
    unsent = [r for r in caplog.records if "not sent" in r.getMessage()
              and r.name.startswith("lecentral.renew")]
    assert unsent and all(r.levelno == logging.ERROR for r in unsent)
    assert f"{LOOPBACK}:{port}" in unsent[0].getMessage() and BADSECRET in unsent[0].getMessage()
    store.close()
