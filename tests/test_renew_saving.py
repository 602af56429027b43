"""The renew workers' group commit (lecentral/renew/saving.py) with a real SQLite store."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from lecentral_testing.pki import make_csr, make_self_signed

from lecentral.certificates import Csr
from lecentral.errors import CsrError, LecentralError
from lecentral.interfaces import IssuedSave
from lecentral.renew.saving import GroupSaver
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore

NAMES = ["a.example.test", "b.example.test", "c.example.test"]


@pytest.fixture
def store(sqlite_url: str) -> Any:
    s = SqlStore(sqlite_url)
    s.init_schema()
    yield s
    s.close()


def _rows(store: SqlStore) -> dict[str, bytes]:
    """A row per name; the certificate the CA would issue for each (its CSR's key)."""
    crts = {}
    for name in NAMES:
        pem, key = make_csr([name])
        csr = Csr.load(pem)
        store.add(CertRow(name=name, csr=csr.pem, md5_modulus=csr.md5_modulus, ts_expire=1,
                          ts_last_update=1, count_fail_update=0, enable=True))
        crts[name] = make_self_signed([name], key)[0]
    return crts


def _queued(saver: GroupSaver, count: int) -> None:
    deadline = time.monotonic() + 10
    while saver.queued < count:
        assert time.monotonic() < deadline, "the workers did not queue their saves"
        time.sleep(0.01)


def test_saves_queued_meanwhile_are_one_transaction_each_with_its_own_answer(
        store: SqlStore) -> None:
    """While one transaction holds the write lock, the certificates spooled meanwhile queue up;
    the next holder saves them all in one transaction, and each worker gets its own answer: a
    row whose CSR was replaced meanwhile fails alone."""
    crts = _rows(store)
    ca, _ = make_self_signed(["CA"])
    pem, _ = make_csr(["b.example.test"])  # lecentral set-csr while the CA was issuing
    replaced = Csr.load(pem)
    store.set_csr("b.example.test", replaced.pem, replaced.md5_modulus, 400)
    lock = threading.Lock()
    saver = GroupSaver(store, lock)
    answers: dict[str, LecentralError | None] = {}

    def worker(name: str) -> None:
        answers[name] = saver.save(IssuedSave(name, crts[name], ca, 2000, 500))

    with lock:  # another worker's transaction is under way
        threads = [threading.Thread(target=worker, args=(name,)) for name in NAMES]
        for thread in threads:
            thread.start()
        _queued(saver, len(NAMES))
    for thread in threads:
        thread.join(10)
    assert saver.transactions == 1
    assert answers["a.example.test"] is None and answers["c.example.test"] is None
    assert isinstance(answers["b.example.test"], CsrError)
    for name in ("a.example.test", "c.example.test"):
        row = store.get(name)
        assert row is not None and (row.crt, row.ts_expire) == (crts[name], 2000)
    row = store.get("b.example.test")
    assert row is not None and row.crt is None


def test_an_unexpected_error_of_the_store_reaches_every_waiting_worker(store: SqlStore) -> None:
    """A store that breaks (a bug, not a LecentralError) raises in each worker whose certificate
    was in that transaction: none is told it was saved."""
    crts = _rows(store)

    class Broken(SqlStore):
        def save_issued_many(self, saves: list[IssuedSave]) -> list[LecentralError | None]:
            raise RuntimeError("the store's bug")

    broken = Broken(store.url)
    lock = threading.Lock()
    saver = GroupSaver(broken, lock)
    raised: dict[str, str] = {}

    def worker(name: str) -> None:
        try:
            saver.save(IssuedSave(name, crts[name], crts[name], 2000, 500))
        except RuntimeError as exc:
            raised[name] = str(exc)

    with lock:
        threads = [threading.Thread(target=worker, args=(name,)) for name in NAMES]
        for thread in threads:
            thread.start()
        _queued(saver, len(NAMES))
    for thread in threads:
        thread.join(10)
    broken.close()
    assert raised == dict.fromkeys(NAMES, "the store's bug")


def test_a_database_down_through_its_retry_time_stops_the_passs_saves_at_once() -> None:
    """A new-user trial stopped MariaDB mid-pass: every group waited ``retry_for``, then each of
    its certificates alone waited as long again, and the pass hung for (certificates + groups) x
    retry_for. Now the first save that stays unavailable through its retry time fails its group
    at once and every later save of the pass without asking the database again (the spool keeps
    them for the next run). The server here is really down: nothing listens on the port."""
    import socket
    import time as clock

    from lecentral.errors import DatabaseUnavailable
    from lecentral.store.retry import RetryPolicy

    with socket.socket() as probe:  # a free port, then closed: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = SqlStore(f"mysql+pymysql://lecentral:secret@127.0.0.1:{port}/lecentral")
    down.retry = RetryPolicy(total=1.0, first_delay=0.2, max_delay=0.3)
    saver = GroupSaver(down, threading.Lock())
    saves = [IssuedSave(name, b"crt", b"ca", 2_000_000_000, 1_700_000_000) for name in NAMES]
    started = clock.monotonic()
    first = down.save_issued_many(saves[:2])
    assert all(isinstance(e, DatabaseUnavailable) for e in first)  # not retried one by one
    assert clock.monotonic() - started < 5
    errors = [saver.save(save) for save in saves]
    assert all(isinstance(e, DatabaseUnavailable) for e in errors)
    assert saver.transactions == 1  # the first save asked (and waited); the others did not
    assert "secret" not in str(errors[0]) and "stayed unavailable" in str(errors[0])
    down.close()
