"""How long the database has had its certificate, for ``pending`` and ``stale`` (fleet
states' ``_Judge.issued_at``): ``ts_last_update`` where no attempt failed since, else the
stored certificate's notBefore, read for every such certificate in one go (a thousand failing
certificates whose hosts lag behind were a thousand transactions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from lecentral.store.schema import certs

COUNT = 30


@pytest.fixture(params=["sqlite", "mariadb"])
def lagging(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """``COUNT`` certificates renewed a day ago whose last attempt since failed, each host
    still holding the previous one (``p*``) or nothing (``n*``: a failed install); one
    renewed ten days ago (``old``); one whose row says when it was saved, no attempt failed
    since (``fine``: an hour ago, its notBefore five days); ten such as ``n*`` but disabled
    (``off*``) and ten only on a host silent for five days (``silent*``): their age is never
    told, their certificates never read."""
    fleet = Fleet(tmp_path, None if request.param == "sqlite" else
                  str(request.getfixturevalue("mariadb_url")))
    for i in range(COUNT):
        name = f"{'p' if i % 2 else 'n'}{i}.ages.example.test"
        previous = fleet.issue(name, age=40)
        fleet.report("web1", name, previous if i % 2 else None, result=(
            "up-to-date" if i % 2 else "failed"))
        fleet.issue(name, age=1)
    fleet.issue("old.ages.example.test", age=40)
    fleet.report("web1", "old.ages.example.test", None, result="failed")
    fleet.issue("old.ages.example.test", age=10)
    fleet.issue("fine.ages.example.test", age=40)
    fleet.report("web1", "fine.ages.example.test", None, result="failed")
    fleet.issue("fine.ages.example.test", age=5)
    for i in range(10):  # whose age is never told: disabled, or only on a silent host
        for kind in ("off", "silent"):
            name = f"{kind}{i}.ages.example.test"
            fleet.issue(name, age=40)
            fleet.report("web1" if kind == "off" else "gone", name, None, result="failed",
                         ago=0.01 if kind == "off" else 5)
            fleet.issue(name, age=1)
            if kind == "off":
                fleet.store.set_enable(name, False)
    with fleet.store.engine.begin() as conn:
        conn.execute(update(certs).where(certs.c.name != "fine.ages.example.test")
                     .values(count_fail_update=2))
        conn.execute(update(certs).where(certs.c.name == "fine.ages.example.test")
                     .values(ts_last_update=fleet.now - 3600))  # (saved an hour ago)
    yield fleet
    fleet.close()


def test_the_age_after_failed_attempts_is_the_certificates_read_in_one_go(
        lagging: Fleet) -> None:
    reads: list[str] = []
    read_names: list[str] = []

    def seen(conn: object, cursor: object, statement: str, parameters: Any, *_: object) -> None:
        if "certs.crt" in statement and "certs.name IN" in statement:
            reads.append(statement)
            read_names.extend(parameters.values() if isinstance(parameters, dict) else parameters)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        result = lagging.run("fleet", "--json")
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {c["name"]: c["targets"] for c in data["certs"]}
    for i in range(COUNT):
        name = f"{'p' if i % 2 else 'n'}{i}.ages.example.test"
        (target,) = by_name[name]
        assert target["state"] == "pending", target
        assert target["detail"].split(";")[1].startswith(" the new one is 1d old"), target
    (old,) = by_name["old.ages.example.test"]
    assert old["state"] == "stale" and "the database has had a newer one for 10d" in old["detail"], old
    (fine,) = by_name["fine.ages.example.test"]
    assert fine["state"] == "pending" and "; the new one is 1h old" in fine["detail"], fine
    assert len(reads) == 1, reads  # (COUNT + 1 certificates, one statement)
    assert sorted(read_names) == sorted([*(f"{'p' if i % 2 else 'n'}{i}.ages.example.test"
                                           for i in range(COUNT)), "old.ages.example.test"])
    assert all(c["state"] == "disabled" for i in range(10)
               for c in by_name[f"off{i}.ages.example.test"])
    assert all(c["state"] == "silent" for i in range(10)
               for c in by_name[f"silent{i}.ages.example.test"])
