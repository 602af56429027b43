"""The event log lines of the fleet's state changes (``fleet --notify``, and what ``renew`` and
``probe`` notify after a run) are written together: a host gone stale or silent changes every
certificate deployed there at once, and a transaction each (an fsync each on SQLite) made the
worst moment the slowest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from sqlalchemy import event
from sqlalchemy.engine import Engine

COUNT = 30


@pytest.fixture(params=["sqlite", "mariadb"])
def stale(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """``COUNT`` certificates renewed; the host still has each previous one; ``stale_after``
    0: each is stale, an alert."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("mariadb_url"))
    fleet = Fleet(tmp_path, url, config_extra="[fleet]\nstale_after = 0\n")
    for i in range(COUNT):
        name = f"s{i}.events.example.test"
        previous = fleet.issue(name, age=40)
        fleet.report("web1", name, previous)
        fleet.issue(name, age=1)
    yield fleet
    fleet.close()


def test_the_changes_are_logged_in_one_go(stale: Fleet) -> None:
    inserts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO LECENTRAL_EVENTS"):
            inserts.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        result = stale.run("fleet", "--notify")
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert result.exit_code == 0, result.output  # (the view shown; check's exit tells)
    logged = [e for e in stale.store.events(limit=1000) if e.kind == "fleet"]
    assert sorted(e.name for e in logged) == sorted(f"s{i}.events.example.test"
                                                    for i in range(COUNT))
    assert all("web1" in e.message and ": stale: " in e.message for e in logged), logged[0]
    assert len(inserts) == 1, len(inserts)

    again = stale.run("fleet", "--notify")  # nothing changed: nothing logged again
    assert again.exit_code == result.exit_code
    assert len([e for e in stale.store.events(limit=1000) if e.kind == "fleet"]) == COUNT
