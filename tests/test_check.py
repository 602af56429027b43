"""``lecentral check``: the monitoring-plugin line, exit codes and severities, on a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lecentral_testing.pki import make_key
from monitor_world import Fleet
from sqlalchemy import text, update

from lecentral.leftovers import DNS_TXT, Leftover
from lecentral.store.schema import certs

A, B, C = "a.example.test", "b.example.test", "c.example.test"

# monitoring-plugins guidelines: 'label'=value[UOM];[warn];[crit];[min];[max]
_LABEL = r"(?:'(?:[^']|'')+'|[^'= ]+)"
_NUM = r"-?\d+(?:\.\d+)?"
PERF_ITEM = re.compile(rf"{_LABEL}={_NUM}(?:s|%|B|KB|MB|TB|c)?(?:;(?:{_NUM})?){{0,4}}")
FIRST = re.compile(r"LECENTRAL (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+( \| (.+))?")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def parse_first(line: str) -> tuple[str, list[str]]:
    """The state word and the perfdata items of a first line, each checked against the format."""
    match = FIRST.fullmatch(line)
    assert match, line
    items = re.findall(rf"{_LABEL}=\S*", match.group(3) or "")
    for item in items:
        assert PERF_ITEM.fullmatch(item), item
    return match.group(1), items


def test_healthy_fleet_is_ok_with_days_left_per_name(fleet: Fleet) -> None:
    a = fleet.issue(A, days=90, age=10)
    fleet.issue(B, days=6, age=1)
    fleet.renew_run()
    fleet.report("web1", A, a, a)
    code, lines = fleet.check()
    assert code == 0, lines
    state, perf = parse_first(lines[0])
    assert state == "OK" and len(lines) == 1
    assert "2 certificates OK, soonest expiry b.example.test in" in lines[0]
    # days left; warning/critical are 1/4 and 1/10 of each certificate's lifetime; max = lifetime
    assert f"{A}=80;22.50;9;;90" in perf
    assert f"{B}=5;1.50;0.60;;6" in perf
    assert "certificates=2;;;0" in perf and "targets_alerting=0;;;0" in perf


@pytest.mark.parametrize(("days", "age", "state", "word"), [
    (90, 70, "WARNING", "expires in 20.0d (below 22.5d)"),
    (90, 85, "CRITICAL", "expires in 5.0d (below 9.0d)"),
    (6, 5.5, "CRITICAL", "expires in 12h (below 14h)"),
    (6, 4.6, "WARNING", "expires in 34h (below 36h)"),
    (45, 46, "CRITICAL", "expired 24h ago"),
])
def test_expiry_thresholds_follow_each_lifetime(fleet: Fleet, days: float, age: float,
                                                state: str, word: str) -> None:
    fleet.issue(A, days=days, age=age)
    fleet.renew_run()
    code, lines = fleet.check()
    assert code == {"WARNING": 1, "CRITICAL": 2}[state]
    assert parse_first(lines[0])[0] == state
    assert lines[1] == f"{state}: {A}: {word}"


def test_explicit_thresholds_in_days(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=70)  # 20 days left
    fleet.renew_run()
    assert fleet.check("--warning", "15", "--critical", "7.5")[0] == 0
    code, lines = fleet.check("-w", "25", "-c", "15")
    assert code == 1 and "min_days_left=20;25;15" in lines[0]
    code, lines = fleet.check("-w", "30", "-c", "20.5")
    assert code == 2 and lines[1] == f"CRITICAL: {A}: expires in 20.0d (below 20.5d)"


def test_lifetime_read_from_the_certificate_after_a_failure(fleet: Fleet) -> None:
    """After a failure ts_last_update is the attempt, not the issue: the crt tells the lifetime."""
    fleet.issue(B, days=6, age=4.6)  # 34h left of 6 days: WARNING (a 90-day guess would be CRITICAL)
    fleet.store.record_failure(B, "CA down", fleet.now)
    fleet.renew_run()
    data = fleet.check_json()
    assert data["status"] == "WARNING"
    assert [p["kind"] for p in data["problems"]] == ["expiring-warning"]


def test_failures_warn_from_two_and_are_critical_past_max_failures(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, config_extra="[renew]\nmax_failures = 3\n")
    try:
        fleet.issue(A, days=90, age=1)
        fleet.issue(B, days=90, age=1)
        fleet.renew_run()
        fleet.store.record_failure(A, "x", fleet.now)
        assert fleet.check()[0] == 0  # one failure: the seed's normal
        fleet.store.record_failure(A, "x", fleet.now)
        code, lines = fleet.check()
        assert code == 1 and lines[1] == (f"WARNING: {A}: 2 failed renewals in a row "
                                          "(see lecentral show NAME)")
        for _ in range(2):
            fleet.store.record_failure(B, "x", fleet.now)
        for _ in range(2):
            fleet.store.record_failure(B, "x", fleet.now)
        code, lines = fleet.check()
        assert code == 2
        assert lines[1].startswith(f"CRITICAL: {B}: 4 failed renewals in a row, more than "
                                   "[renew] max_failures 3: the renew job no longer retries it")
        assert "failing=2;;;0" in lines[0]
    finally:
        fleet.close()


def test_fleet_states_and_their_severity(fleet: Fleet) -> None:
    old = fleet.issue(A, days=90, age=40)
    new = fleet.issue(A, days=90, age=5)  # the renewal, 5 days old: stale where still the old one
    fleet.report("web1", A, new, new)
    fleet.report("web2", A, old, old)  # stale
    b = fleet.issue(B, days=90, age=1)
    other_key = fleet.cert(B, days=90, age=1, key=make_key("ec256"))
    fleet.report("web3", B, b, other_key)  # serves a certificate for another key: mismatch
    c = fleet.issue(C, days=90, age=1)
    fleet.report("web4", C, c, None, ago=3)  # silent: no report for 3 days (agent_max_age 2d)
    fleet.probe(C, "https://lb.example.test:443/", None, error="connection refused")  # unreachable
    fleet.renew_run()
    data = fleet.check_json()
    assert data["status"] == "CRITICAL" and data["exit_code"] == 2
    got = {(p["severity"], p["kind"], p["name"]) for p in data["problems"]}
    assert got == {("WARNING", "stale", A), ("CRITICAL", "mismatch", B),
                   ("WARNING", "silent", C), ("WARNING", "unreachable", C)}
    _code, lines = fleet.check()
    assert lines[1].startswith(f"CRITICAL: {B} on web3 ({B}): mismatch: ")
    assert "targets_alerting=4;;;0" in lines[0]
    assert lines[0].startswith("LECENTRAL CRITICAL - 1 critical, 3 warning problem(s) in 3 "
                               f"certificates: {B} on web3")


def test_dead_renew_timer_is_critical_and_never_run_a_warning(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=1)
    code, lines = fleet.check()
    assert code == 1 and lines[1] == ("WARNING: renew timer: no lecentral renew run was ever "
                                      "recorded")
    fleet.renew_run(ago=3)
    code, lines = fleet.check()
    assert code == 2 and lines[1].startswith("CRITICAL: renew timer: the last lecentral renew run "
                                             "ended 3d ago")
    # a check of named certificates leaves the timer to the fleet-wide check
    assert fleet.check(A)[0] == 0


def test_leftovers_warn(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=1)
    fleet.renew_run()
    fleet.store.add_leftover(Leftover(
        kind=DNS_TXT, name=A, target=f"_acme-challenge.{A}.",
        data={"value": "tok", "zone": f"_acme-challenge.{A}.", "server": "127.0.0.1:53"},
        error="update refused: NOTAUTH", host="central"), fleet.now - 7200)
    code, lines = fleet.check()
    assert code == 1
    assert lines[1].startswith(f"WARNING: {A}: left behind since 2h (1 removal(s) tried): TXT "
                               f"_acme-challenge.{A}.")
    assert "leftovers=1;;;0" in lines[0]


def test_row_problems_and_names_without_certificate(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=1)
    fleet.add(B)
    fleet.store.record_failure(B, "CA down", fleet.now)  # enabled, tried, no certificate
    fleet.issue(C, days=90, age=1)
    fleet.renew_run()
    with fleet.store.engine.begin() as conn:
        conn.execute(update(certs).where(certs.c.name == A).values(csr=b"", md5_modulus="zz"))
        conn.execute(update(certs).where(certs.c.name == C).values(crt=b"not a certificate"))
    data = fleet.check_json()
    texts = sorted(p["text"] for p in data["problems"])
    assert texts == [
        f"{A}: column csr is empty",
        f"{A}: column md5_modulus is 'zz', expected an MD5 or SHA-256 hex digest",
        f"{B}: enabled and tried, but no certificate issued yet",
        f"{C}: crt holds no readable certificate although ts_expire says one was stored",
    ]
    assert data["status"] == "WARNING"


def test_names_from_the_database_cannot_forge_lines_or_perfdata(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=85)
    fleet.renew_run()
    evil = "x|y\nLECENTRAL OK - fine"
    with fleet.store.engine.begin() as conn:
        conn.execute(update(certs).where(certs.c.name == A).values(name=evil))
    code, lines = fleet.check()
    assert code == 2
    assert len(lines) == 3  # the first line, the expiry, the bad name (row problem)
    _state, perf = parse_first(lines[0])
    assert "'x/y LECENTRAL OK - fine'=5;22.50;9;;90" in perf
    assert all("|" not in line for line in lines[1:])


def test_unknown_name_is_unknown(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=1)
    code, lines = fleet.check(A, "nope.example.test")
    assert code == 3
    assert lines[0].startswith("LECENTRAL UNKNOWN - no certificate named nope.example.test in "
                               "the database (see lecentral list) | ")


def test_named_check_reports_only_those(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=85)
    fleet.issue(B, days=90, age=1)
    code, lines = fleet.check(B.upper())
    assert code == 0 and lines[0].startswith("LECENTRAL OK - 1 certificate OK")
    assert f"{B}=89;22.50;9;;90" in lines[0] and A not in lines[0]


def test_many_certificates_keep_the_first_line_short(fleet: Fleet) -> None:
    for i in range(25):
        fleet.issue(f"n{i}.example.test", days=90, age=1)
    fleet.renew_run()
    code, lines = fleet.check()
    assert code == 0 and len(lines[0]) < 400
    _state, perf = parse_first(lines[0])
    assert not any(p.startswith("n1") for p in perf) and "certificates=25;;;0" in perf


def test_problem_lines_are_capped(fleet: Fleet) -> None:
    for i in range(5):
        fleet.issue(f"n{i}.example.test", days=90, age=89)
    fleet.renew_run()
    code, lines = fleet.check("--max-lines", "2")
    assert code == 2 and len(lines) == 4
    assert lines[3] == ("... and 3 more problem(s) (--max-lines 0 shows all; lecentral fleet for "
                        "the details)")
    assert len(fleet.check("--max-lines", "0")[1]) == 6


@pytest.mark.parametrize("args", [["--warning", "5", "--critical", "10"], ["--warning", "abc"],
                                  ["--warning", "-1"], ["--bogus"]])
def test_usage_errors_are_unknown(fleet: Fleet, args: list[str]) -> None:
    result = fleet.run("check", *args)
    assert result.exit_code == 3, result.output


def test_config_error_is_unknown(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[database]\nurl = 5\n")
    from click.testing import CliRunner

    from lecentral.cli.central import main

    result = CliRunner().invoke(main, ["--config", str(config), "check"])
    assert result.exit_code == 3
    assert result.stdout.startswith("LECENTRAL UNKNOWN - cannot check: ")
    assert "url" in result.stdout


def test_database_unreachable_is_unknown_without_the_password(mariadb_url: str,
                                                               tmp_path: Path) -> None:
    """A real MariaDB refusing a wrong password: UNKNOWN, and the password is in no output."""
    good = Fleet(tmp_path, mariadb_url)
    good.issue(A, days=90, age=1)
    good.renew_run()
    assert good.check()[0] == 0  # the same checks on MariaDB
    good.close()
    scheme, rest = mariadb_url.split("://", 1)
    user = rest.split(":", 1)[0]
    host = rest.rsplit("@", 1)[1]
    secret = "Wr0ng-S3cret%21pw"
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[database]\nurl = "{scheme}://{user}:{secret}@{host}"\n')
    from click.testing import CliRunner

    from lecentral.cli.central import main

    result = CliRunner().invoke(main, ["--config", str(bad), "check"])
    assert result.exit_code == 3
    assert result.stdout.startswith("LECENTRAL UNKNOWN - cannot check: ")
    assert "Access denied" in result.stdout or "access denied" in result.stdout.lower()
    for part in (secret, "Wr0ng-S3cret!pw", "S3cret"):
        assert part not in result.output and part not in result.stderr


def test_check_changes_nothing(fleet: Fleet) -> None:
    fleet.issue(A, days=90, age=85)
    fleet.renew_run(ago=3)
    with fleet.store.engine.connect() as conn:
        before = [conn.execute(text(f"SELECT * FROM {t}")).all() for t in
                  ("certs", "lecentral_events", "lecentral_runs", "lecentral_fleet_states")]
    assert fleet.check()[0] == 2
    with fleet.store.engine.connect() as conn:
        after = [conn.execute(text(f"SELECT * FROM {t}")).all() for t in
                 ("certs", "lecentral_events", "lecentral_runs", "lecentral_fleet_states")]
    assert before == after


def test_database_without_the_fleet_tables_is_unknown(fleet: Fleet) -> None:
    """A database an earlier lecentral made (revision 0001, no fleet tables) that was not
    upgraded: UNKNOWN, saying to run lecentral upgrade."""
    fleet.issue(A, days=90, age=1)
    with fleet.store.engine.begin() as conn:
        for table in ("lecentral_deployments", "lecentral_runs", "lecentral_probes",
                      "lecentral_endpoints", "lecentral_agents", "lecentral_fleet_states"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("UPDATE lecentral_alembic_version SET version_num = '0001_baseline'"))
    code, lines = fleet.check()
    assert code == 3
    assert lines[0].startswith("LECENTRAL UNKNOWN - cannot check: ")
    assert "run lecentral upgrade" in lines[0], lines

def test_a_crt_stored_as_text_is_judged_not_a_crash(fleet: Fleet) -> None:
    """SQLite keeps a hand-edited ``crt`` (``crt || char(10)``, ``cast(crt as text)``) as text:
    check, metrics and fleet judge that row like the others (its UTF-8 bytes are what renew and
    the agents read) instead of failing for the whole fleet with a TypeError."""
    a = fleet.issue(A, days=90, age=10)
    b = fleet.issue(B, days=90, age=10)
    fleet.renew_run()
    fleet.report("web1", A, a, a)
    fleet.report("web1", B, b, b)
    with fleet.store.engine.begin() as conn:
        conn.execute(text("UPDATE certs SET crt = CAST(crt AS TEXT) || char(10) WHERE name = :n"),
                     {"n": A})
        assert conn.execute(text("SELECT typeof(crt) FROM certs WHERE name = :n"),
                            {"n": A}).scalar() == "text"
    code, lines = fleet.check()
    assert code == 0, lines
    assert "2 certificates OK" in lines[0]
    metrics = fleet.run("metrics")
    assert metrics.exit_code == 0, metrics.output
    assert f'lecentral_deployment_current{{name="{A}",target="web1 ({A})"}} 1.0' in metrics.stdout
    view = fleet.run("fleet", "--json")
    assert view.exit_code == 0, view.output


def _sweep(fleet: Fleet) -> None:
    """The facts of every row, as the renew timer's sweep records them."""
    from lecentral.certificates import now_ts
    from lecentral.config import RenewConfig

    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), now_ts()).rows)


def test_rows_the_renew_job_refuses_are_not_ok(fleet: Fleet) -> None:
    """Found by a new-user trial: a CSR that does not name its row, or a ts_expire that is not
    the certificate's notAfter, made the renew job refuse or replace the row while check said
    OK (its own row checks parse nothing). Once a sweep has seen them, check says what is
    wrong, as list does."""
    a = fleet.issue(A, days=90, age=10)
    b = fleet.issue(B, days=90, age=10)
    c = fleet.issue(C, days=90, age=10)
    fleet.renew_run()
    for name, cert in ((A, a), (B, b), (C, c)):
        fleet.report("web1", name, cert, cert)
    with fleet.store.engine.begin() as conn:
        conn.execute(update(certs).where(certs.c.name == A).values(
            csr=text("(SELECT csr FROM certs WHERE name = :b)").bindparams(b=B)))
        conn.execute(update(certs).where(certs.c.name == C).values(
            ts_expire=c.not_after + 1000 * 86400))
    _sweep(fleet)
    data = fleet.check_json()
    assert data["status"] == "WARNING", data
    texts = sorted(p["text"] for p in data["problems"])
    assert len(texts) == 2, texts
    assert texts[0].startswith(f"{A}: ") and B in texts[0]  # the CSR names b, not a
    assert texts[1].startswith(f"{C}: bad certificate: ") and "ts_expire" in texts[1]
    code, lines = fleet.check(B)
    assert code == 0, lines


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_a_wrong_ts_expire_does_not_hide_the_crts_expiry(backend: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """``ts_expire`` hand-edited 80 days ahead of a crt that expires in 5 days: check judged the
    expiry from ts_expire (OK before the next sweep, then only the row problem's WARNING: never
    CRITICAL, with 5 days left). The crt's notAfter counts now, as the last sweep's facts hold
    it (nothing parsed); a crt stored after that sweep is judged by ts_expire until the next."""
    from test_metrics import _set_ts_expire, _sweep

    url = None if backend == "sqlite" else request.getfixturevalue("mariadb_url")
    fleet = Fleet(tmp_path, url)
    try:
        for name, age in ((A, 85), (B, 10)):
            crt = fleet.issue(name, days=90, age=age)
            fleet.report("web1", name, crt, crt)
        fleet.renew_run()
        _sweep(fleet)
        _set_ts_expire(fleet, A, fleet.now + 80 * 86400)
        for swept in (False, True):
            if swept:
                _sweep(fleet)
            code, lines = fleet.check()
            assert code == 2, lines
            assert any(f"{A}: expires in 5" in line for line in lines), lines
            data = fleet.check_json()
            assert data["exit_code"] == 2
    finally:
        fleet.close()
