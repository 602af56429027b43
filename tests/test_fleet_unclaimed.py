"""``lecentral fleet NAME`` for a NAME no row of ``certs`` has that hosts still report
(``unclaimed``: removed with ``lecentral remove`` while installed). ``lecentral fleet`` lists
it; ``fleet NAME`` used to answer "no certificate named NAME" (exit 1), contradicting the list
a sysadmin was following. Now it shows the reports, says what to do, and exits 1; a NAME with
neither a row nor a report keeps the old error. On SQLite and MariaDB (the split view finds the
reports without a row per dialect)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_world import Fleet

A, GONE = "a.example.test", "gone.example.test"
URL = "https://lb.example.test:8443/"


@pytest.fixture(params=["sqlite", "mariadb"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url = request.getfixturevalue("mariadb_url") if request.param == "mariadb" else None
    f = Fleet(tmp_path, url)
    a = f.issue(A)
    f.report("web1", A, a, a)
    gone = f.issue(GONE)
    f.report("web1", GONE, gone, gone)
    f.report("web2", GONE, gone, gone)
    f.probe(GONE, URL, gone)
    f.renew_run()
    removed = f.run("remove", GONE, "--yes")
    assert removed.exit_code == 0, removed.output
    yield f
    f.close()


def test_fleet_name_shows_the_reports_of_an_unclaimed_name(fleet: Fleet) -> None:
    listed = fleet.run("fleet")
    assert listed.exit_code == 0, listed.output
    lines = [ln for ln in listed.stdout.splitlines() if ln.startswith("unclaimed: ")]
    assert len(lines) == 3, listed.stdout
    for args in ((GONE,), (GONE, "--problems"), (GONE.upper(),)):
        shown = fleet.run("fleet", *args)
        assert shown.exit_code == 1, shown.output
        out = shown.stdout.splitlines()
        assert [ln for ln in out if ln.startswith("unclaimed: ")] == lines  # the list's lines
        for host in ("web1", "web2"):
            assert (f"what to do: remove the [[cert]] entry {GONE} (name = {GONE}) from the "
                    f"agent's configuration on {host}, then lecentral agent forget {host} (its "
                    "next run reports its other entries again)") in out
        assert any(ln.startswith(f"what to do: lecentral endpoint remove {GONE} {URL} ")
                   for ln in out)
        assert out[-1].startswith("renew timer: current")
        assert "no certificate named" not in shown.output
        assert shown.stderr == (f"lecentral: no row of certs is named {GONE}, but 3 target(s) "
                                "still report it (unclaimed, shown): nothing renews it\n")
    # with a name that has a row: both, still a problem
    both = fleet.run("fleet", A, GONE)
    assert both.exit_code == 1, both.output
    assert f"web1 ({A})" in both.stdout and len(
        [ln for ln in both.stdout.splitlines() if ln.startswith("unclaimed: ")]) == 3
    # the row's own view is unchanged: no unclaimed line, no advice, exit 0
    alone = fleet.run("fleet", A)
    assert alone.exit_code == 0, alone.output
    assert "unclaimed" not in alone.stdout and "what to do" not in alone.stdout


def test_fleet_name_json_of_an_unclaimed_name(fleet: Fleet) -> None:
    whole = json.loads(fleet.run("fleet", "--json").stdout)
    shown = fleet.run("fleet", GONE, "--json")
    assert shown.exit_code == 1, shown.output
    document = json.loads(shown.stdout)
    assert document["certs"] == []
    assert document["unclaimed"] == whole["unclaimed"]
    assert [(u["name"], u["target"]) for u in document["unclaimed"]] == [
        (GONE, URL), (GONE, f"web1 ({GONE})"), (GONE, f"web2 ({GONE})")]
    assert "still report it (unclaimed, shown)" in shown.stderr


def test_fleet_name_with_neither_a_row_nor_a_report_is_unknown(fleet: Fleet) -> None:
    for args in (("nothing.example.test",), ("nothing.example.test", "--json"),
                 (GONE, "nothing.example.test")):
        result = fleet.run("fleet", *args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert "no certificate named nothing.example.test in the database (see lecentral " \
            "list)" in result.stderr
    # the reports' host forgotten: the name is unknown again
    forgot = [fleet.run("agent", "forget", host) for host in ("web1", "web2")]
    assert all(r.exit_code == 0 for r in forgot), [r.output for r in forgot]
    fleet.fleet.forget_probes(set())
    result = fleet.run("fleet", GONE)
    assert result.exit_code == 1 and f"no certificate named {GONE}" in result.stderr
