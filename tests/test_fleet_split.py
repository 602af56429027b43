"""The split view of ``check`` and ``metrics`` (issue 16): SQL counts the deployments it can
call current and only the others reach Python. Its verdicts must be the full view's, whatever
the recorded facts say: a certificate re-issued after the last sweep (the facts' fingerprint is
then the old one), a disabled row, a report older than agent_max_age that the host's latest
run still covers, an unreachable service, all on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from test_metrics import promtool_check, samples

from lecentral.certificates import now_ts
from lecentral.config import RenewConfig
from lecentral.fleet.metrics import exposition
from lecentral.fleet.model import CURRENT, FleetSettings, FleetView
from lecentral.fleet.nagios import (
    CheckInput,
    Thresholds,
    evaluate,
    lifetimes,
    row_problems,
)
from lecentral.fleet.states import compute

A, B, C, D, E, F, G = (f"{x}.split.example.test" for x in "abcdefg")


def world(fleet: Fleet) -> None:
    a = fleet.issue(A, age=10)
    a_old = fleet.cert(A, days=90, age=70)
    fleet.report("web1", A, a, a)
    fleet.report("web2", A, a, a)
    fleet.report("web3", A, a_old, a_old)  # stale
    b = fleet.issue(B, age=2)
    fleet.report("web1", B, b, b)
    fleet.report("web2", B, b, None, served_error="connection refused")  # unreachable
    fleet.report("web4", B, b, b, ago=3)  # an old report ...
    c = fleet.issue(C, age=30)
    fleet.report("web1", C, c, c)
    fleet.report("web2", C, c, c, entry="second")
    fleet.issue(D, age=5)
    d = fleet.issue(D, age=4)
    fleet.report("web1", D, d, d)
    fleet.issue(E)  # never reported
    f = fleet.issue(F, age=1)
    fleet.report("web1", F, f, f)
    fleet.probe(F, "https://lb.split.example.test/", f)
    g = fleet.issue(G, age=3)  # current everywhere: only counted
    fleet.report("web2", G, g, g, entry="z-last")
    fleet.report("web1", G, g, None)
    fleet.report("web1", G, g, g, entry="a-first")
    fleet.renew_run()
    # the facts of every row, as a renew sweep records them
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), now_ts()).rows)
    # after the sweep: C re-issued (its facts still name the old certificate, which every
    # host still has: pending, not current), D disabled, web4's agent runs again (B's old
    # report there is then not silent)
    fleet.issue(C, age=0.5)
    _disable(fleet, D)
    fleet.report("web4", A, a, a)


def _disable(fleet: Fleet, name: str) -> None:
    from sqlalchemy import update

    from lecentral.store.schema import certs

    with fleet.store.transaction("disabling") as conn:
        conn.execute(update(certs).where(certs.c.name == name).values(enable="N"))


def views(fleet: Fleet) -> tuple[FleetView, FleetView, dict[str, list[str]]]:
    settings, now = FleetSettings(), now_ts()
    full = compute(fleet.fleet.snapshot(), settings, now, fleet.fleet)
    snap = fleet.fleet.snapshot(current_after=now - settings.agent_max_age, listing=True)
    split = compute(snap, settings, now, fleet.fleet)
    assert snap.split is not None
    return full, split, snap.split.listed


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url = None
    if request.param != "sqlite":
        url = request.getfixturevalue("mariadb_url" if request.param == "mariadb"
                                      else "postgres_url")
    f = Fleet(tmp_path, url)
    yield f
    f.close()


@pytest.mark.parametrize("scan_above", [10_000, 0], ids=["name-lists", "one-scan"])
def test_split_view_judges_as_the_full_view(fleet: Fleet, scan_above: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from lecentral.fleet import current

    monkeypatch.setattr(current, "SCAN_ABOVE", scan_above)
    world(fleet)
    full, split, listed = views(fleet)
    assert [c.name for c in full.certs] == [c.name for c in split.certs]
    for whole, part in zip(full.certs, split.certs, strict=True):
        assert part.state == whole.state, whole.name
        shown = [(t.target, t.state, t.detail) for t in whole.targets if t.state != CURRENT]
        assert [(t.target, t.state, t.detail) for t in part.targets
                if t.state != CURRENT] == shown
        current = sorted(t.target for t in whole.targets if t.state == CURRENT)
        assert sorted([t.target for t in part.targets if t.state == CURRENT]
                      + listed.get(whole.name, [])) == current, whole.name
        assert part.current_targets == len(listed.get(whole.name, []))
    by_name = {c.name: c for c in split.certs}
    # SQL counted the plainly current ones ...
    assert by_name[A].current_targets == 3 and by_name[F].current_targets == 1
    assert by_name[G].current_targets == 3 and not by_name[G].targets
    # ... and none whose facts are out of date, disabled, or whose report is old
    assert by_name[C].current_targets == 0 and by_name[C].state == "pending"
    assert by_name[D].current_targets == 0 and by_name[D].state == "disabled"
    assert {t.target: t.state for t in by_name[B].targets} == {
        "web2 (b.split.example.test)": "unreachable", "web4 (b.split.example.test)": CURRENT}


def test_a_crt_changed_by_hand_after_the_sweep_is_not_taken_from_the_facts(
        fleet: Fleet) -> None:
    """The facts' fingerprint stands for the crt only while the database's checksum of the
    row is the recorded one (SQLite too: its registered function): a crt emptied by hand
    after the sweep is no certificate, and one replaced by another of the same length (a
    fingerprint the facts do not hold) is the new one's, in the split view as in the full."""
    from sqlalchemy import update

    from lecentral.store.schema import certs

    world(fleet)
    g_old = fleet.store.get(G).crt
    assert g_old is not None
    for _ in range(50):  # (an ECDSA signature's length varies)
        g_new = fleet.cert(G, days=90, age=1)
        if len(g_new.pem) == len(g_old):
            break
    assert len(g_new.pem) == len(g_old)
    with fleet.store.transaction("editing by hand") as conn:
        conn.execute(update(certs).where(certs.c.name == F).values(crt=None))
        conn.execute(update(certs).where(certs.c.name == G).values(crt=g_new.pem))
    full, split, _ = views(fleet)
    by_name = {c.name: c for c in split.certs}
    assert by_name[F].fingerprint is None and by_name[F].current_targets == 0
    assert by_name[G].fingerprint == g_new.fingerprint and by_name[G].current_targets == 0
    for whole, part in zip(full.certs, split.certs, strict=True):
        assert (part.fingerprint, part.state) == (whole.fingerprint, whole.state), whole.name
    # the one-pass commands (their own rule for sending the crt) say the same
    listed = json.loads(fleet.run("fleet", "--json").stdout)["certs"]
    shown = {c["name"]: (c["fingerprint"], c["state"]) for c in listed}
    assert shown == {c.name: (c.fingerprint, c.state) for c in full.certs}
    metrics = fleet.run("metrics")
    assert metrics.exit_code == 0, metrics.output
    current = [line for line in metrics.stdout.splitlines()
               if line.startswith("lecentral_deployment_current{") and line.endswith(" 1.0")]
    assert current and not [line for line in current
                            if f'name="{F}"' in line or f'name="{G}"' in line]


def test_check_and_metrics_say_what_the_full_view_says(fleet: Fleet) -> None:
    world(fleet)
    full, _, _ = views(fleet)
    code, lines = fleet.check("--max-lines", "0")
    leftovers = fleet.store.leftovers()
    expected = evaluate(CheckInput(view=full, rows=row_problems(fleet.fleet.last_snapshot.certs),
                                   lifetimes=lifetimes(fleet.fleet, full.certs),
                                   leftovers=leftovers), Thresholds())
    assert code == expected.status
    assert lines[1:] == expected.lines(0)[1:]
    result = fleet.run("metrics")
    assert result.exit_code == 0, result.output
    promtool_check(result.stdout_bytes)
    got = samples(result.stdout_bytes)
    from lecentral.config import CentralConfig
    from lecentral.journal import survey

    journals = survey(CentralConfig().renew.state_dir, leftovers)  # (no [renew] configured)
    want = samples(exposition(full, leftovers, lifetimes(fleet.fleet, full.certs),
                              journals=journals, ari_failing=(0, None)))
    got.pop("lecentral_metrics_generated_timestamp_seconds")
    want.pop("lecentral_metrics_generated_timestamp_seconds")
    assert got == want


OK = [f"ok{i:02d}.split.example.test" for i in range(24)]


def plain_world(fleet: Fleet) -> None:
    """:func:`world` and 24 plainly OK certificates (more than check's per-name perfdata
    limit), two of them expiring at the same second (the soonest is named), plus the rows
    near the lines SQL draws: 22.49 days left of 90 (just below the warning threshold), one
    failed renewal, a certificate without any target."""
    for i, name in enumerate(OK):
        cert = fleet.issue(name, age=5 + min(i, 22))  # ok22 and ok23 expire together
        fleet.report("web1", name, cert, cert)
        fleet.report("web2", name, cert, None)
    for name, age in (("edge.split.example.test", 67.51), ("edge2.split.example.test", 70)):
        edge = fleet.issue(name, age=age)  # the soonest expiry is Python's anyway: two
        fleet.report("web1", name, edge, edge)
    fleet.issue("alone.split.example.test", age=3)
    failed = fleet.issue("failed.split.example.test", age=4)
    fleet.report("web1", "failed.split.example.test", failed, failed)
    with fleet.store.transaction("one failure") as conn:
        from sqlalchemy import update

        from lecentral.store.schema import certs

        conn.execute(update(certs).where(certs.c.name == "failed.split.example.test")
                     .values(count_fail_update=1))
    world(fleet)


def _judged(fleet: Fleet, thresholds: Thresholds) -> tuple[list[str], list[str], int]:
    """check's lines from the full view and from the view with the plainly OK counted in SQL,
    at the same second, and how many SQL counted."""
    settings, now = FleetSettings(), now_ts()
    leftovers = fleet.store.leftovers()

    def lines(view: FleetView) -> list[str]:
        data = CheckInput(view=view, rows=row_problems(fleet.fleet.last_snapshot.certs),
                          lifetimes=lifetimes(fleet.fleet, view.certs), leftovers=leftovers)
        return evaluate(data, thresholds).lines(0)

    full = lines(compute(fleet.fleet.snapshot(), settings, now, fleet.fleet))
    snap = fleet.fleet.snapshot(current_after=now - settings.agent_max_age,
                                ok_limits=thresholds.limits(), now=now, count_above=20)
    return full, lines(compute(snap, settings, now, fleet.fleet)), snap.plain_ok


@pytest.mark.parametrize("list_at_most", [10_000, 0], ids=["listed", "second-pass"])
@pytest.mark.parametrize("thresholds", [Thresholds(), Thresholds(30, 7), Thresholds(0, 0),
                                        Thresholds(1e20, 1e19)],
                         ids=["fractions", "days", "zero", "huge"])
def test_check_counts_the_plainly_ok_in_sql(fleet: Fleet, thresholds: Thresholds,
                                            list_at_most: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The certificates SQL judges completely give check the full view's lines, summary and
    perfdata; the soonest expiry, the one at the threshold, the failed one, the targets not
    current are Python's (read by name, or above ``LIST_AT_MOST`` by a second pass)."""
    from lecentral.fleet import current

    monkeypatch.setattr(current, "LIST_AT_MOST", list_at_most)
    plain_world(fleet)
    full, counted, plain_ok = _judged(fleet, thresholds)
    assert counted == full
    # the 24 OK ones but the two expiring first, and G and E (all targets current, none)
    assert plain_ok >= (0 if thresholds.warning_days == 1e20 else 22)
    _, got = fleet.check("--max-lines", "0", *(
        [] if thresholds.warning_days is None else
        ["-w", str(thresholds.warning_days), "-c", str(thresholds.critical_days)]))
    assert got[1:] == full[1:]


@pytest.mark.parametrize("list_at_most", [10_000, 0], ids=["listed", "second-pass"])
@pytest.mark.parametrize("made", ["plain", "tie"])
def test_check_judges_two_halves_of_certs_at_once(fleet: Fleet, list_at_most: int, made: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``PARALLEL_ABOVE`` rows (here: any), MariaDB and PostgreSQL judge the two halves
    of ``certs`` by name on two connections at once: check's lines are the full view's; when
    a certificate of each half expires first at the same second, the one named is the first
    by name (as the full view names it)."""
    from lecentral.fleet import current
    from lecentral.fleet import store as fleet_store

    monkeypatch.setattr(current, "LIST_AT_MOST", list_at_most)
    monkeypatch.setattr(fleet_store, "PARALLEL_ABOVE", 0)
    parts: list[Any] = []
    real = fleet_store.FleetStore._judged_part

    def judged_part(*args: Any) -> Any:
        parts.append(args[-1])
        return real(*args)

    monkeypatch.setattr(fleet_store.FleetStore, "_judged_part", staticmethod(judged_part))
    if made == "plain":
        plain_world(fleet)
    else:  # every certificate plainly OK; the two expiring first at one second
        names = ["aaa-tie.split.example.test", *(f"m{i:02d}.split.example.test"
                                                for i in range(22)), "zzz-tie.split.example.test"]
        for name in names:
            cert = fleet.issue(name, age=30 if "tie" in name else 5)
            fleet.report("web1", name, cert, cert)
        fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
        fleet.renew_run()
    full, counted, plain_ok = _judged(fleet, Thresholds())
    assert counted == full
    assert plain_ok >= 22
    assert len(parts) == (1 if fleet.url.startswith("sqlite") else 2)  # SQLite: one
    if made == "tie":
        assert "soonest expiry aaa-tie.split.example.test in " in full[0], full[0]


@pytest.mark.parametrize("fleet", ["mariadb", "postgresql"], indirect=True)
def test_check_judges_the_second_half_again_where_its_connection_fails(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error on the second connection (stood in for by one raised there: a connection
    dropped in the middle of its statement cannot be timed here) is not check's end: the
    first connection judges that half after its own, with the full view's lines."""
    import threading

    from sqlalchemy.exc import OperationalError

    from lecentral.fleet import store as fleet_store

    monkeypatch.setattr(fleet_store, "PARALLEL_ABOVE", 0)
    real = fleet_store.FleetStore._aggregate_chars
    failed: list[str] = []

    def aggregate_chars(self: Any, conn: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            failed.append("second")
            raise OperationalError("SELECT 1", {}, Exception("the connection was lost"))
        return real(self, conn)

    monkeypatch.setattr(fleet_store.FleetStore, "_aggregate_chars", aggregate_chars)
    plain_world(fleet)
    full, counted, plain_ok = _judged(fleet, Thresholds())
    assert failed == ["second"]
    assert counted == full and plain_ok >= 22


def test_check_judges_both_halves_on_one_connection_where_no_second_is_had(
        mariadb_server: Any, mariadb_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A database user allowed one connection (``MAX_USER_CONNECTIONS 1``): the second
    connection is refused at once (no waiting as for a crowded server) and the first judges
    the second half after the first: the same counts and rows as one statement."""
    from sqlalchemy.engine import make_url

    from lecentral.fleet import store as fleet_store
    from lecentral.store.sql import SqlStore

    fleet = Fleet(tmp_path, mariadb_url)
    lone: Any = None
    url = make_url(mariadb_url)
    mariadb_server.execute(
        "CREATE USER 'lone'@'%' IDENTIFIED BY 'lone-pw' WITH MAX_USER_CONNECTIONS 1; "
        f"GRANT ALL ON `{url.database}`.* TO 'lone'@'%'")
    try:
        plain_world(fleet)
        settings, now = FleetSettings(), now_ts()

        def snapshot(store: Any) -> Any:
            return store.snapshot(current_after=now - settings.agent_max_age,
                                  ok_limits=Thresholds().limits(), now=now, count_above=20)

        one = snapshot(fleet.fleet)  # (fewer rows than PARALLEL_ABOVE: one statement)
        monkeypatch.setattr(fleet_store, "PARALLEL_ABOVE", 0)
        lone = SqlStore(url.set(username="lone", password="lone-pw")
                        .render_as_string(hide_password=False))
        halves = snapshot(fleet_store.FleetStore(lone))
        assert halves.plain_ok == one.plain_ok >= 22
        assert [c["name"] for c in halves.certs] == [c["name"] for c in one.certs]
    finally:
        if lone is not None:
            lone.close()
        fleet.close()
        mariadb_server.execute("DROP USER 'lone'@'%'")


@pytest.mark.parametrize("halves", [False, True], ids=["one-statement", "halves"])
def test_a_blank_serving_error_is_no_current_target(fleet: Fleet, halves: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving error of spaces is an error to the judge: SQL does not count that target
    current either (MariaDB's PAD SPACE collations found "  " equal to "", and check lost an
    unreachable target); check, fleet --json and fleet --problems say what the full view says.
    """
    from sqlalchemy import update

    from lecentral.fleet import store as fleet_store
    from lecentral.store.schema import deployments

    if halves:
        monkeypatch.setattr(fleet_store, "PARALLEL_ABOVE", 0)
    plain_world(fleet)
    name = "blank-error.split.example.test"
    cert = fleet.issue(name, age=3)
    fleet.report("web1", name, cert, None, served_error="refused")
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    with fleet.store.transaction("a blank serving error") as conn:
        conn.execute(update(deployments).where(deployments.c.name == name)
                     .values(served_error="  "))
    full, counted, _ = _judged(fleet, Thresholds())
    assert counted == full
    assert any(name in line and "unreachable" in line for line in full), full
    document = json.loads(fleet.run("fleet", "--json").stdout)
    [entry] = [c for c in document["certs"] if c["name"] == name]
    assert [t["state"] for t in entry["targets"]] == ["unreachable"]
    problems = fleet.run("fleet", "--problems")
    assert name in problems.stdout


def test_check_reads_everything_when_a_row_may_belong_to_a_counted_one(fleet: Fleet) -> None:
    """A deployment, probe or certificate row the judge would file under a counted name (its
    upper-case spelling) makes the snapshot read every row, as without SQL's counting."""
    upper_world(fleet)
    full, counted, plain_ok = _judged(fleet, Thresholds())
    assert plain_ok == 0
    assert counted == full
    assert any(OK[3] in line for line in full)


def test_one_name_is_judged_as_in_the_whole_fleet(fleet: Fleet) -> None:
    """``fleet NAME``, ``fleet --json NAME`` and ``check NAME`` see a report filed under another
    spelling of the name (upper case), as the whole fleet's view does: on SQLite and
    PostgreSQL they said "current" and OK where the whole fleet said "stale"."""
    upper_world(fleet)
    full = json.loads(fleet.run("fleet", "--json").stdout)
    want = [c for c in full["certs"] if c["name"] == OK[3]]
    assert want and want[0]["state"] == "stale"
    assert f"web3 ({OK[3].upper()})" in [t["target"] for t in want[0]["targets"]]
    for name in (OK[3], OK[3].upper(), OK[3] + "."):
        one = fleet.run("fleet", "--json", name)
        assert one.exit_code == 0, one.output
        assert json.loads(one.stdout)["certs"] == want, name
    table = fleet.run("fleet", OK[3])
    assert f"web3 ({OK[3].upper()})" in table.stdout and "STALE" in table.stdout
    code, lines = fleet.check(OK[3])
    assert code == 1 and "stale" in lines[0], lines


def upper_world(fleet: Fleet) -> None:
    """:func:`plain_world` and a deployment the judge files under a plainly OK name."""
    plain_world(fleet)
    cert = fleet.cert(OK[3], days=90, age=80)
    fleet.report("web3", OK[3].upper(), cert, cert)


def orphan_world(fleet: Fleet) -> None:
    """:func:`plain_world` and deployments of a certificate no longer in ``certs`` (found by
    the pass over the deployments' names, not by a look-up per deployment row)."""
    plain_world(fleet)
    gone = "gone.split.example.test"
    cert = fleet.cert(gone, days=90, age=10, key=fleet.keys[OK[0]])
    fleet.report("web1", gone, cert, cert)
    fleet.report("web2", gone, cert, cert)


def test_check_judges_the_deployments_of_a_removed_certificate(fleet: Fleet) -> None:
    """Deployments whose certificate row is gone are judged as in the full view while SQL
    counts the plainly OK certificates."""
    orphan_world(fleet)
    full, counted, plain_ok = _judged(fleet, Thresholds())
    assert counted == full
    assert plain_ok > 0


def test_reports_of_a_removed_certificate_are_loud(fleet: Fleet) -> None:
    """A host still reporting a certificate whose row is gone (``lecentral remove`` leaves the
    reports) is not silently dropped (a new-user trial found it in no output): check warns,
    fleet lists it after the table and in --json, --problems too."""
    import json

    orphan_world(fleet)
    gone = "gone.split.example.test"
    check = fleet.run("check")
    assert check.exit_code == 1, check.output
    assert f"{gone} on web1 ({gone}): reported, but no row of certs is named {gone}" \
        in check.stdout
    for args in ((), ("--problems",)):
        table = fleet.run("fleet", *args)
        assert table.exit_code == 0, table.output
        assert f"unclaimed: {gone} on web2 ({gone}) (last seen " in table.stdout
    document = json.loads(fleet.run("fleet", "--json").stdout)
    assert [(u["name"], u["target"]) for u in document["unclaimed"]] == [
        (gone, f"web1 ({gone})"), (gone, f"web2 ({gone})")]
    assert list(document)[-1] == "certs"


def escaped_world(fleet: Fleet, entries: tuple[tuple[str, str, dict[str, str]], ...] = (
        ('q"uote', "e\\n", {}), ("caf\u00e9", "\u00fcber", {}),
        ("web1", "tab\there", {"result": "up\u2013to-date"}),
        ("web1", "gs\x1din", {"served_error": ""}))) -> None:
    """:func:`plain_world` and plainly current certificates whose targets' values need
    escaping in JSON (a quote, a backslash, text outside ASCII, control characters) or are
    empty rather than NULL."""
    plain_world(fleet)
    for i, (host, entry, kw) in enumerate(entries):
        name = f"esc{i}.split.example.test"
        cert = fleet.issue(name, age=3)
        fleet.report(host, name, cert, cert, entry=entry, **kw)
        fleet.report("web2", name, cert, None)
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)


def separator_world(fleet: Fleet) -> None:
    """:func:`escaped_world` with the separators the database puts between a target's values
    (on MariaDB and PostgreSQL: the row is held, its targets read as rows) and between targets
    (the pass gives up) in a target's entry."""
    escaped_world(fleet, (("web1", "fs\x1cin", {}), ("web1", "sep\x1fin", {})))


@pytest.mark.parametrize("made", [world, plain_world, upper_world, orphan_world, escaped_world,
                                  separator_world],
                         ids=["world", "plainly-ok", "upper-case", "orphans", "escaped",
                              "separators"])
def test_fleet_json_lists_what_the_full_view_lists(fleet: Fleet, made: Any) -> None:
    """``fleet --json`` and ``--problems --json`` read the split view, judge the certificates
    with both kinds of targets again in full and read the counted ones as rows (``--problems``:
    SQL leaves out the disabled and plainly current ones): the document is the full view's."""
    import json

    from lecentral.cli.fleet import view_json

    made(fleet)
    full, _, _ = views(fleet)
    for args, certs in ((["--json"], full.certs),
                        (["--problems", "--json"],
                         [c for c in full.certs if c.state not in ("current", "disabled")])):
        result = fleet.run("fleet", *args)
        assert result.exit_code == 0, result.output
        got = json.loads(result.stdout)
        want = json.loads(json.dumps(view_json(full, certs), default=str))
        got.pop("now"), want.pop("now")
        assert got == want


def _changes(fleet: Fleet, split: bool) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The state changes since the remembered states, from the full view or from the split
    view with its counted targets listed (what ``lecentral renew`` and ``lecentral probe``
    use after a complete run: lecentral.fleet.watch.load_for_changes)."""
    from lecentral.fleet.states import changes

    settings, now = FleetSettings(), now_ts()
    if split:
        snap = fleet.fleet.snapshot(current_after=now - settings.agent_max_age, listing=True)
        view = compute(snap, settings, now, fleet.fleet)
        assert view.split and view.counted is not None
    else:
        view = compute(fleet.fleet.snapshot(), settings, now, fleet.fleet)
    changed, gone = changes(view, fleet.fleet.states())
    return sorted((n.subject, old, n.name, n.target, n.state, n.detail)
                  for old, n in changed), sorted(gone)


def _remember(fleet: Fleet) -> None:
    """Save the full view's changes, as notify_changes does once they are told."""
    from lecentral.fleet.states import changes

    settings, now = FleetSettings(), now_ts()
    changed, gone = changes(compute(fleet.fleet.snapshot(), settings, now, fleet.fleet),
                            fleet.fleet.states())
    fleet.fleet.save_states([new for _, new in changed], gone)


def _move(fleet: Fleet) -> None:
    """Targets of plainly current certificates change: one gets a certificate the database
    does not hold, one disappears, a new host reports one; a target that was not current
    becomes current."""
    from sqlalchemy import delete, insert, select, update

    from lecentral.store.schema import cert_facts, deployments

    d = deployments.c
    with fleet.store.transaction("moving the fleet") as conn:
        rows = conn.execute(select(deployments).order_by(d.name, d.host, d.entry)
                            ).mappings().all()
        facts = {str(n): f for n, f in conn.execute(select(cert_facts.c.name,
                                                           cert_facts.c.fingerprint))}
        current = [r for r in rows if r["installed_fp"]
                   and r["installed_fp"] == facts.get(r["name"])
                   and r["served_fp"] == r["installed_fp"] and not r["served_error"]]
        other = [r for r in rows if facts.get(r["name"]) and r not in current]
        assert len(current) >= 3, rows

        def key(r: Any) -> Any:
            return (d.name == r["name"]) & (d.host == r["host"]) & (d.entry == r["entry"])

        conn.execute(update(deployments).where(key(current[0]))
                     .values(installed_fp="f" * 64, served_fp="f" * 64))
        conn.execute(delete(deployments).where(key(current[1])))
        copy = {k: v for k, v in current[2].items() if k != "id"}
        copy["host"] = "web9"
        conn.execute(insert(deployments).values(**copy))
        if other:
            fp = facts[other[0]["name"]]
            conn.execute(update(deployments).where(key(other[0])).values(
                installed_fp=fp, served_fp=fp, served_error=None, ts_reported=now_ts() - 60))


@pytest.mark.parametrize("made", [world, plain_world, upper_world, orphan_world, escaped_world,
                                  separator_world],
                         ids=["world", "plainly-ok", "upper-case", "orphans", "escaped",
                              "separators"])
def test_state_changes_from_the_split_view_are_the_full_views(fleet: Fleet, made: Any) -> None:
    """The changes ``lecentral renew`` and ``lecentral probe`` notify after a complete run come
    from the split view (the targets SQL counted as current are listed, not judged: at 100,000
    × 3 the full view took 19 s and 900 MB): the same subjects, old and new states and details,
    and the same subjects gone, as from the full view: first sightings, then after targets of
    plainly current certificates changed, were removed or added."""
    made(fleet)
    full = _changes(fleet, split=False)
    assert full[0] and not full[1]  # every subject seen for the first time
    assert _changes(fleet, split=True) == full
    _remember(fleet)
    assert _changes(fleet, split=True) == _changes(fleet, split=False) == ([], [])
    _move(fleet)
    full = _changes(fleet, split=False)
    assert full[1] and {new for _, _, _, _, new, _ in full[0]} >= {"mismatch", "current"}, full
    assert _changes(fleet, split=True) == full


def test_a_split_view_without_its_listed_targets_is_refused(fleet: Fleet) -> None:
    """Without the listed current targets a split view's counted ones would look gone (their
    remembered states forgotten, told again as first sightings): refused, not guessed."""
    from lecentral.fleet.states import changes

    world(fleet)
    settings, now = FleetSettings(), now_ts()
    snap = fleet.fleet.snapshot(current_after=now - settings.agent_max_age)
    with pytest.raises(ValueError, match="state changes need"):
        changes(compute(snap, settings, now, fleet.fleet), {})


def test_listed_targets_that_do_not_add_up_make_the_changes_come_from_the_full_view(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the listed current targets do not add up to the counted ones (a list lost on the
    way), the state changes come from the full view rather than forget the missing ones."""
    from lecentral.config import load_central
    from lecentral.fleet import store as fleet_store
    from lecentral.fleet.watch import load_for_changes

    world(fleet)
    config = load_central(str(fleet.config))
    _, view = load_for_changes(fleet.store, config, now_ts())
    assert view.split
    real = fleet_store.FleetStore.snapshot

    def snapshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        snap = real(self, *args, **kwargs)
        if snap.split is not None and snap.split.listed:
            snap.split.listed.pop(min(snap.split.listed))
        return snap

    monkeypatch.setattr(fleet_store.FleetStore, "snapshot", snapshot)
    _, view = load_for_changes(fleet.store, config, now_ts())
    assert not view.split and any(t.state == CURRENT for c in view.certs for t in c.targets)


def _state_rows(fleet: Fleet) -> dict[str, tuple[Any, ...]]:
    """Every remembered state's row, by subject."""
    from sqlalchemy import select

    from lecentral.store.schema import fleet_states

    with fleet.store.engine.connect() as conn:
        return {str(r[0]): tuple(r[1:]) for r in conn.execute(select(fleet_states))}


def test_states_are_saved_in_batches_whatever_another_run_remembered_meanwhile(
        fleet: Fleet) -> None:
    """New subjects and remembered ones are written in batches; one remembered meanwhile by
    another run (this one did not know it) is updated as well: the same table, no duplicate,
    no error, nothing written one by one."""
    from lecentral.fleet.store import StateRow, subject_key

    def row(i: int, state: str) -> StateRow:
        key = subject_key(f"n{i}.example.test", "agent", "web1 (x)")
        return StateRow(key, f"n{i}.example.test", "web1 (x)", state, fleet.now + i, f"d{i}{state}")

    fleet.fleet.save_states([row(i, "current") for i in range(2500)], [])
    assert len(fleet.fleet.states()) == 2500
    # a stored one changes, two new ones, one gone
    fleet.fleet.save_states([row(0, "stale"), row(2500, "current"), row(2501, "mismatch")],
                            [row(1, "current").subject])
    fleet.fleet.save_states([row(2502, "current")], [])  # another run's
    fleet.fleet.save_states([row(2502, "silent"), row(2503, "current")], [])
    states = fleet.fleet.states()
    assert len(states) == 2503
    assert states[row(0, "").subject] == "stale" and row(1, "").subject not in states
    assert [states[row(i, "").subject] for i in range(2500, 2504)] == [
        "current", "mismatch", "silent", "current"]
    saved = _state_rows(fleet)
    assert saved[row(2502, "").subject] == ("n2502.example.test", "web1 (x)", "silent",
                                            fleet.now + 2502, "d2502silent")


def test_many_remembered_subjects_changed_at_once_are_saved_in_batches(fleet: Fleet) -> None:
    """A host gone silent changes every subject deployed there: written in batches (1,000 to
    a statement, the database's upsert), not updated one by one; each row as it was told."""
    from sqlalchemy import event

    from lecentral.fleet.store import StateRow, subject_key

    def row(i: int, state: str) -> StateRow:
        key = subject_key(f"n{i}.example.test", "agent", "web1 (x)")
        return StateRow(key, f"n{i}.example.test", f"web1 (x{i})", state, fleet.now - i,
                        f"{state} since {i}")

    fleet.fleet.save_states([row(i, "current") for i in range(2500)], [])
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(fleet.store.engine, "before_cursor_execute", seen)
    try:
        fleet.fleet.save_states([row(i, "silent") for i in range(1, 2500)] + [row(2500, "silent")],
                                [row(0, "").subject])
    finally:
        event.remove(fleet.store.engine, "before_cursor_execute", seen)
    assert _state_rows(fleet) == {
        row(i, "").subject: (f"n{i}.example.test", f"web1 (x{i})", "silent", fleet.now - i,
                             f"silent since {i}") for i in range(1, 2501)}
    assert "UPDATE" not in statements and len(statements) <= 6, statements


def test_a_report_landing_while_the_view_is_read_is_in_it_or_not_never_gone(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """web3's copy of A is stale (remembered). Its agent reports A's certificate while the split
    view is read: after the pass over certs (A counted partly current) and before the read of
    A's rows SQL does not call current. The view reads one snapshot: web3 is stale in it (the
    report came later) or current, never missing, so its remembered state is not forgotten and
    a "current again" is not lost. (Each statement its own read, as SQLite's reads and
    PostgreSQL's READ COMMITTED were, lost it.) On SQLite the report waits for the read."""
    import threading

    from sqlalchemy import update

    from lecentral.fleet import current
    from lecentral.store.schema import cert_facts, deployments

    world(fleet)
    _remember(fleet)
    real = current.Split.others
    done: list[BaseException | None] = []

    def report() -> None:
        try:
            with fleet.store.transaction("web3 reports") as other:
                fp = other.execute(cert_facts.select().where(cert_facts.c.name == A)
                                   ).mappings().one()["fingerprint"]
                other.execute(update(deployments).where(
                    deployments.c.name == A, deployments.c.host == "web3")
                    .values(installed_fp=fp, served_fp=fp, ts_reported=now_ts()))
            done.append(None)
        except BaseException as exc:  # noqa: BLE001 - told by the test
            done.append(exc)

    reporter = threading.Thread(target=report)

    def others(self: Any, conn: Any, *args: Any, **kwargs: Any) -> Any:
        if not reporter.is_alive() and not done:
            reporter.start()
            reporter.join(2)  # committed meanwhile (a server), or waiting for this read (SQLite)
        return real(self, conn, *args, **kwargs)

    monkeypatch.setattr(current.Split, "others", others)
    changed, gone = _changes(fleet, split=True)
    reporter.join(10)
    assert done == [None], done
    assert not gone, gone
    web3 = f"web3 ({A})"
    assert [(c[3], c[1], c[4]) for c in changed] in ([], [(web3, "stale", "current")]), changed
    monkeypatch.undo()
    changed, gone = _changes(fleet, split=True)  # the next look: current again, told
    assert [(c[3], c[1], c[4]) for c in changed] == [(web3, "stale", "current")] and not gone


def test_one_subject_under_two_spellings_of_a_name_is_the_worse_of_its_targets(
        fleet: Fleet) -> None:
    """One host and entry reported under the stored spelling of a name (capitals, as
    populate.pl kept them: current) and under its lower-case spelling (a certificate for another
    key: mismatch): both are one subject, the worse state, from the full view and the split
    view alike (the split view lists the current one; the full view read them in its order)."""
    from sqlalchemy import update

    from lecentral.store.schema import certs

    name = "Dup.split.example.test"
    cert = fleet.issue(name.lower(), age=3)
    with fleet.store.transaction("a name with capitals") as conn:
        conn.execute(update(certs).where(certs.c.name == name.lower()).values(name=name))
    fleet.add("x.split.example.test")
    other = fleet.cert("x.split.example.test", days=90, age=3)
    fleet.report("web1", name, cert, cert, entry="nginx")
    fleet.report("web1", name.lower(), other, other, entry="nginx")
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), now_ts()).rows)
    fleet.renew_run()
    full = _changes(fleet, split=False)
    assert [(c[2], c[3], c[4]) for c in full[0] if c[3] == "web1 (nginx)"] == [
        (name, "web1 (nginx)", "mismatch")], full
    assert _changes(fleet, split=True) == full


def test_deployments_of_a_name_with_a_final_dot_are_unclaimed_in_the_split_view(
        fleet: Fleet) -> None:
    """A stored name with a final dot: the judge files its deployments under another key than
    its certificate (unclaimed, as the full view says). SQL does not count them as its current
    targets, so check and metrics tell them too, and the state changes come from the split
    view (their counted targets add up)."""
    from lecentral.config import load_central
    from lecentral.fleet.watch import load_for_changes

    plain_world(fleet)
    dotted = "dot.split.example.test."
    cert = fleet.issue(dotted, age=3)
    fleet.report("web1", dotted, cert, cert)
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), now_ts()).rows)
    full, split, _ = views(fleet)
    assert [u.name for u in full.unclaimed_reports] == [dotted]
    assert split.unclaimed_reports == full.unclaimed_reports
    assert [c.state for c in split.certs if c.name == dotted] == [
        c.state for c in full.certs if c.name == dotted]
    _, view = load_for_changes(fleet.store, load_central(str(fleet.config)), now_ts())
    assert view.split
    assert _changes(fleet, split=True) == _changes(fleet, split=False)
