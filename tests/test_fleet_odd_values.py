"""One row holding what no writer of lecentral's stores, by hand on SQLite (which keeps any
value in any column): a number in ``crt``, a text in ``count_fail_update`` or ``ts_expire``.
Every fleet command still shows the whole fleet, the row judged as what it is (no certificate,
no failures counted, no expiry); ``check`` names the row's problem. Before, ``metrics``,
``fleet`` and ``fleet --json`` stopped with a traceback for the whole fleet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_world import Fleet
from sqlalchemy import text
from test_metrics import promtool_check, samples

A, B = "a.odd.example.test", "b.odd.example.test"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    a = f.issue(A, days=90, age=10)
    b = f.issue(B, days=90, age=10)
    f.renew_run()
    f.report("web1", A, a, a)
    f.report("web1", B, b, b)
    yield f
    f.close()


@pytest.mark.parametrize(("value", "column"), [
    ("1.5", "crt"), ("-3", "crt"), ("1000000000", "crt"),
    ("'x'", "count_fail_update"), ("'soon'", "ts_expire"),
])
def test_an_odd_value_in_one_row_leaves_the_fleet_shown(fleet: Fleet, value: str,
                                                        column: str) -> None:
    with fleet.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE certs SET {column} = {value} WHERE name = :n"), {"n": A})

    data = fleet.check_json()
    assert any(p["name"] == A for p in data["problems"]), data["problems"]

    result = fleet.run("fleet", "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    certs = {c["name"]: c for c in json.loads(result.stdout)["certs"]}
    assert set(certs) == {A, B}
    assert certs[B]["state"] == "current"
    if column == "crt":
        assert certs[A]["fingerprint"] is None
    if column == "count_fail_update":
        assert certs[A]["count_fail_update"] == 0
    if column == "ts_expire":
        assert certs[A]["ts_expire"] is None

    table = fleet.run("fleet")
    assert table.exception is None or isinstance(table.exception, SystemExit), table.output
    assert A in table.stdout and B in table.stdout

    metrics = fleet.run("metrics")
    assert metrics.exit_code == 0, metrics.output
    promtool_check(metrics.stdout.encode())
    assert f'lecentral_certificate_failures{{name="{B}"}} 0.0' in metrics.stdout
    # the pass's samples (B taken, A held) are the full view's
    got, want = samples(metrics.stdout.encode()), full_exposition(fleet)
    for found in (got, want):
        found.pop("lecentral_metrics_generated_timestamp_seconds")
    assert got == want


def full_exposition(fleet: Fleet) -> dict[str, float]:
    """The samples of the fleet judged whole in Python (no split, no pass)."""
    from lecentral.certificates import now_ts
    from lecentral.config import CentralConfig
    from lecentral.fleet.metrics import exposition
    from lecentral.fleet.model import FleetSettings
    from lecentral.fleet.nagios import lifetimes
    from lecentral.fleet.states import compute
    from lecentral.journal import survey

    full = compute(fleet.fleet.snapshot(), FleetSettings(), now_ts(), fleet.fleet)
    leftovers = fleet.store.leftovers()
    journals = survey(CentralConfig().renew.state_dir, leftovers)
    return samples(exposition(full, leftovers, lifetimes(fleet.fleet, full.certs),
                              journals=journals, ari_failing=(0, None)))
