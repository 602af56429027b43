"""The fleet view's reading transaction on SQLite (FleetStore._one_snapshot: one read
transaction, an explicit BEGIN) and the writers beside it: a view read again in full, and the
pass in two processes, leave no writer locked out (rollback journal: a reader's SHARED lock
and a writer's PENDING one wait for each other until the busy timeout)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet

from lecentral.certificates import now_ts
from lecentral.config import RenewConfig
from lecentral.fleet.model import FleetSettings


def _world(fleet: Fleet) -> None:
    """``a.x`` plainly current (counted, not read) and a report filed under ``A.x``: a row
    the judge files under a certificate the database only counted, so the snapshot is read
    again in full (FleetStore.snapshot reads it again)."""
    name = "a.review.example.test"
    cert = fleet.issue(name, age=3)
    fleet.report("web1", name, cert, cert)
    fleet.report("web2", name.upper(), cert, cert)
    fleet.renew_run()
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), now_ts()).rows)


def _reporter(store: Any, done: list[tuple[str, float]]) -> threading.Thread:
    """A thread writing an agent's report through ``store`` (its own connection): ``done``
    then holds ("ok" or the error, the seconds it took)."""
    from sqlalchemy import update

    from lecentral.store.schema import deployments

    def write() -> None:
        start = time.monotonic()
        try:
            with store.transaction("an agent's report") as conn:
                conn.execute(update(deployments).where(deployments.c.host == "web1")
                             .values(ts_reported=now_ts()))
            done.append(("ok", time.monotonic() - start))
        except Exception as exc:  # noqa: BLE001 - told by the test
            done.append((str(exc)[:200], time.monotonic() - start))

    return threading.Thread(target=write)


@pytest.mark.parametrize("url", ["file", "sqlite://"])
def test_problems_only_view_read_again_in_full(tmp_path: Path, url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A view read again in full (a report filed under another spelling of a name SQL only
    counted) reads it after its first reading transaction has ended: on ``sqlite://`` too,
    whose pool hands the same pysqlite connection to a second ``connect`` ("cannot start a
    transaction within a transaction" inside the first)."""
    from lecentral.fleet.store import FleetStore

    fleet = Fleet(tmp_path, None if url == "file" else url)
    calls: list[bool] = []
    real = FleetStore.snapshot

    def counted(self: FleetStore, *args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("problems_only")))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FleetStore, "snapshot", counted)
    try:
        _world(fleet)
        now = now_ts()
        snap = fleet.fleet.snapshot(current_after=now - FleetSettings().agent_max_age,
                                    now=now, problems_only=True)
        assert calls == [True, False]  # read again in full
        assert not snap.plain_ok
        assert [str(c["name"]) for c in snap.certs] == ["a.review.example.test"]
    finally:
        fleet.close()


def test_a_write_while_the_view_is_read_again_in_full_is_not_locked_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite file, rollback journal: a writer at its commit while the view finds it must be
    read again in full commits once the first reading transaction ends; the view is read again
    after it, on another connection (inside it, the writer's PENDING lock and the first
    transaction's SHARED one waited for each other until the writer failed at 5 s)."""
    import time

    from lecentral.fleet.store import FleetStore
    from lecentral.store.sql import SqlStore

    fleet = Fleet(tmp_path)
    writer_store = SqlStore(fleet.url)
    _world(fleet)
    done: list[tuple[str, float]] = []
    writer = _reporter(writer_store, done)
    real = FleetStore._attached_elsewhere

    def attached(conn: object, snap: object) -> bool:
        found = real(conn, snap)  # type: ignore[arg-type]
        if found and not writer.is_alive() and not done:
            writer.start()
            time.sleep(0.5)  # the writer is at its commit, waiting for this transaction
        return found

    monkeypatch.setattr(FleetStore, "_attached_elsewhere", staticmethod(attached))
    try:
        now = now_ts()
        fleet.fleet.snapshot(current_after=now - FleetSettings().agent_max_age, now=now,
                             problems_only=True)
        writer.join(15)
        assert done and done[0][0] == "ok" and done[0][1] < 2, done
    finally:
        writer_store.close()
        fleet.close()


def test_a_write_while_the_halves_are_read_is_not_locked_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fleet --json`` in two processes (halves.py), SQLite file: the two halves are two reads,
    so this process keeps no read transaction open while it waits for the child, and a writer
    committing before the child's first read is not locked out (a transaction kept open: the
    child waited for the writer's PENDING lock, the writer for this process, until the writer
    failed at 5 s). The child's start is slowed down here; in a real run it is the few
    milliseconds between the fork and its first read."""
    import os
    import time

    from test_fleet_split import plain_world

    from lecentral.fleet import halves
    from lecentral.store import packed
    from lecentral.store.sql import SqlStore

    fleet = Fleet(tmp_path)
    plain_world(fleet)
    writer_store = SqlStore(fleet.url)
    parent = os.getpid()
    done: list[tuple[str, float]] = []
    writer = _reporter(writer_store, done)
    real_rows = packed.rows

    def rows(conn: object, query: object, yield_per: int = 2000) -> object:
        if os.getpid() != parent:
            time.sleep(1)  # the child starts late
        found = real_rows(conn, query, yield_per)  # type: ignore[arg-type]
        if os.getpid() == parent and not writer.is_alive() and not done:
            keys, result = found
            first = next(result)  # this process's SHARED lock taken

            def again() -> object:
                yield first
                yield from result

            writer.start()
            time.sleep(0.3)  # the writer is at its commit
            return keys, again()
        return found

    monkeypatch.setattr(halves, "FORK_ABOVE", 0)
    monkeypatch.setattr(packed, "rows", rows)
    try:
        assert halves.usable(fleet.store)  # (Linux, 2 CPUs: the machines the tests run on)
        result = fleet.run("fleet", "--json")
        assert result.exit_code == 0, result.output
        writer.join(15)
        assert done and done[0][0] == "ok" and done[0][1] < 3, done
    finally:
        writer_store.close()
        fleet.close()
