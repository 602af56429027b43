"""``lecentral metrics``: Prometheus text format checked by ``promtool check metrics`` (Debian
package ``prometheus``), for a fleet in every state; the textfile written atomically."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lecentral_testing.pki import make_key
from monitor_world import Fleet

from lecentral.leftovers import DNS_TXT, Leftover

A, B, C, D = "a.example.test", "b.example.test", "c.example.test", "d.example.test"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def promtool_check(data: bytes) -> None:
    """``promtool check metrics`` must find no error and no lint problem."""
    done = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.strip() == b"" and done.stderr.strip() == b"", done.stderr.decode()


_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(data: bytes) -> dict[str, float]:
    """``metric{labels}`` -> value, the labels sorted by name (as :func:`key` writes them)."""
    found = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            metric, _, labels = series.partition("{")
            pairs = sorted(_PAIR.findall(labels))
            found[metric + ("{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs
                            else "")] = float(value)
    return found


def key(metric: str, **labels: str) -> str:
    if not labels:
        return metric
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def every_state(fleet: Fleet) -> None:
    """current, pending, stale, mismatch, silent, unreachable, never-reported, disabled,
    a failing row, a leftover, and a dead renew timer."""
    old = fleet.issue(A, days=90, age=40)
    new = fleet.issue(A, days=90, age=5)
    fleet.report("web1", A, new, new)  # current
    fleet.report("web2", A, old, old)  # stale
    b = fleet.issue(B, days=90, age=1)
    fleet.report("web1", B, b, fleet.cert(B, days=90, age=1, key=make_key("ec256")))  # mismatch
    fleet.probe(B, "https://lb.example.test:443/", None, error="connection refused")
    c_old = fleet.issue(C, days=90, age=60)
    c = fleet.issue(C, days=90, age=0.5)
    fleet.report("web3", C, c_old, c_old, ago=3)  # silent
    fleet.issue(D, days=6, age=1)  # never reported
    fleet.store.record_failure(D, "CA down", fleet.now)
    fleet.store.record_failure(D, "CA down", fleet.now)
    fleet.add("off.example.test", enable=False)
    fleet.store.add_leftover(Leftover(kind=DNS_TXT, name=D, target=f"_acme-challenge.{D}.",
                                      data={"value": "t", "zone": "z.", "server": "127.0.0.1:53"},
                                      error="refused", host="central"), fleet.now)
    fleet.renew_run(ago=3)  # dead timer
    fleet.report("web4", C, c, c)  # current on another host, a second agent run


def test_every_state_passes_promtool(fleet: Fleet) -> None:
    every_state(fleet)
    result = fleet.run("metrics")
    assert result.exit_code == 0, result.output
    data = result.stdout_bytes
    promtool_check(data)
    got = samples(data)
    assert got[key("lecentral_certificate_failures", name=D)] == 2
    assert got[key("lecentral_certificate_lifetime_seconds", name=D)] == 6 * 86400  # from the crt
    assert got[key("lecentral_certificate_lifetime_seconds", name=A)] == 90 * 86400
    assert got[key("lecentral_certificate_state", name="off.example.test", state="disabled")] == 1
    assert key("lecentral_certificate_failures", name="off.example.test") not in got
    assert key("lecentral_certificate_expiry_timestamp_seconds", name="off.example.test") not in got
    assert got[key("lecentral_certificate_state", name=A, state="stale")] == 1
    assert got[key("lecentral_certificate_state", name=D, state="never-reported")] == 1
    for host, name, state, current in (("web1", A, "current", 1), ("web2", A, "stale", 0),
                                       ("web1", B, "mismatch", 0), ("web3", C, "silent", 0),
                                       ("web4", C, "current", 1)):
        labels = {"name": name, "kind": "agent", "host": host, "target": f"{host} ({name})"}
        assert got[key("lecentral_deployment_current", name=name, target=labels["target"])] == current
        # the sparse families: only targets that are not current
        assert (key("lecentral_deployment_state", **labels, state=state) in got) == (not current)
        assert (key("lecentral_served_expiry_timestamp_seconds", **labels) in got) == (not current)
        assert (key("lecentral_deployment_last_report_timestamp_seconds", **labels) in got) == \
            (not current)
    probe = {"name": B, "kind": "probe", "host": "lb.example.test",
             "target": "https://lb.example.test:443/"}
    assert got[key("lecentral_deployment_state", **probe, state="unreachable")] == 1
    assert key("lecentral_served_expiry_timestamp_seconds", **probe) not in got
    assert got["lecentral_renew_timer_ok"] == 0
    assert got["lecentral_challenge_leftovers"] == 1
    renew = {"kind": "renew", "host": "central"}
    assert got[key("lecentral_run_duration_seconds", **renew)] == 30
    assert got[key("lecentral_run_last_success_timestamp_seconds", **renew)] == \
        fleet.now - 3 * 86400
    assert got[key("lecentral_certificates", state="silent")] == 1
    assert key("lecentral_run_exit_code", kind="agent", host="web4") in got


def test_healthy_fleet_and_an_empty_database_pass_promtool(fleet: Fleet) -> None:
    result = fleet.run("metrics")
    assert result.exit_code == 0
    promtool_check(result.stdout_bytes)
    got = samples(result.stdout_bytes)
    assert got["lecentral_renew_never_run"] == 1 and "lecentral_renew_timer_ok" not in got
    a = fleet.issue(A)
    fleet.report("web1", A, a, a)
    fleet.renew_run()
    result = fleet.run("metrics")
    promtool_check(result.stdout_bytes)
    got = samples(result.stdout_bytes)
    assert got["lecentral_renew_timer_ok"] == 1
    assert got[key("lecentral_certificate_expiry_timestamp_seconds", name=A)] == a.not_after


def test_label_values_from_the_database_are_escaped(fleet: Fleet) -> None:
    a = fleet.issue(A)
    fleet.probe(A, 'https://q"uo\\te\nd.example.test:443/', a)
    result = fleet.run("metrics")
    promtool_check(result.stdout_bytes)
    assert b'target="https://q\\"uo\\\\te\\nd.example.test:443/"' in result.stdout_bytes


def test_textfile_is_written_atomically_with_mode_0644(fleet: Fleet, tmp_path: Path) -> None:
    every_state(fleet)
    out = tmp_path / "textfile" / "lecentral.prom"
    out.parent.mkdir()
    old_umask = os.umask(0o077)
    try:
        result = fleet.run("metrics", "--textfile", str(out))
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert os.listdir(out.parent) == ["lecentral.prom"]  # no temp file left
    promtool_check(out.read_bytes())
    assert re.search(rb"^lecentral_renew_timer_ok 0\.0$", out.read_bytes(), re.MULTILINE)


def test_textfile_failures_keep_the_previous_file(fleet: Fleet, tmp_path: Path) -> None:
    fleet.issue(A)
    out = tmp_path / "lecentral.prom"
    out.write_bytes(b"# previous\n")
    # the database is gone: exit 4, the file as it was
    bad = tmp_path / "gone.toml"
    bad.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/missing/db.sqlite"\n')
    from click.testing import CliRunner

    from lecentral.cli.central import main

    result = CliRunner().invoke(main, ["--config", str(bad), "metrics", "--textfile", str(out)])
    assert result.exit_code == 4
    assert "does not exist" in result.stderr
    assert out.read_bytes() == b"# previous\n"
    # the target directory cannot be written (its parent is a file): a clear error, nothing made
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = fleet.run("metrics", "--textfile", str(blocker / "lecentral.prom"))
    assert result.exit_code == 1
    assert f"cannot write the metrics to {blocker}/lecentral.prom: Not a directory" in result.stderr
    assert blocker.read_text() == "x"


def test_metrics_on_mariadb_pass_promtool(mariadb_url: str, tmp_path: Path) -> None:
    """The same samples from a real MariaDB (types and NULLs as its driver returns them)."""
    fleet = Fleet(tmp_path, mariadb_url)
    try:
        every_state(fleet)
        result = fleet.run("metrics")
        assert result.exit_code == 0, result.output
        promtool_check(result.stdout_bytes)
        assert samples(result.stdout_bytes)[key("lecentral_certificate_failures", name=D)] == 2
    finally:
        fleet.close()


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def any_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet on SQLite, MariaDB and PostgreSQL (the split view finds the reports without a
    ``certs`` row, and compares ts_expire with the facts, per dialect)."""
    url = (None if request.param == "sqlite" else
           request.getfixturevalue(f"{'mariadb' if request.param == 'mariadb' else 'postgres'}_url"))
    f = Fleet(tmp_path, url)
    yield f
    f.close()


def _both_paths(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, *args: str) -> bytes:
    """``lecentral metrics`` in one pass and with the pass given up (the view held): the same
    bytes, promtool clean."""
    from lecentral.fleet import spool

    passed = fleet.run("metrics", *args)
    assert passed.exit_code == 0, passed.output
    with monkeypatch.context() as m:
        m.setattr(spool.MetricsPass, "take", lambda self, row, fp: bool(self.abandon("test")))
        held = fleet.run("metrics", *args)
    assert held.exit_code == 0, held.output
    assert passed.stdout_bytes == held.stdout_bytes
    promtool_check(passed.stdout_bytes)
    return passed.stdout_bytes


def test_reports_of_a_removed_certificate_are_metrics(any_fleet: Fleet,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A host (or a probe) still reporting a certificate ``lecentral remove`` deleted: nothing
    renews it, check warns (unclaimed), and a site that monitors by Prometheus alone sees it
    too (it was in no sample): a series per target and their count, in both metrics paths."""
    import lecentral.certificates

    fleet = any_fleet
    monkeypatch.setattr(lecentral.certificates, "now_ts", lambda: fleet.now)
    a = fleet.issue(A)
    fleet.report("web1", A, a, a)
    fleet.renew_run()
    got = samples(_both_paths(fleet, monkeypatch))
    assert got["lecentral_unclaimed_deployments"] == 0
    assert not [k for k in got if k.startswith("lecentral_unclaimed_deployment{")]

    gone = fleet.issue(B)
    fleet.report("web1", B, gone, gone, ago=0.5)
    fleet.report("web2", B, gone, gone, entry='q"uote')
    url = 'https://lb.example.test:8443/p"\\'
    fleet.probe(B, url, gone)
    removed = fleet.run("remove", B, "--yes")
    assert removed.exit_code == 0, removed.output
    got = samples(_both_paths(fleet, monkeypatch))
    web1 = {"name": B, "kind": "agent", "host": "web1", "target": f"web1 ({B})"}
    web2 = {"name": B, "kind": "agent", "host": "web2", "target": r'web2 (q\"uote)'}
    lb = {"name": B, "kind": "probe", "host": "lb.example.test", "target": r'https://lb.example.test:8443/p\"\\'}
    for labels in (web1, web2, lb):
        assert got[key("lecentral_unclaimed_deployment", **labels)] == 1
    assert got[key("lecentral_unclaimed_last_report_timestamp_seconds", **web1)] == \
        int(fleet.now - 0.5 * 86400)
    assert got[key("lecentral_unclaimed_last_report_timestamp_seconds", **lb)] == fleet.now
    assert got["lecentral_unclaimed_deployments"] == 3
    # nothing of it among the certificates' families (no row: no state, no expiry)
    assert not [k for k in got if f'name="{B}"' in k and "unclaimed" not in k]
    assert got[key("lecentral_deployment_current", name=A, target=f"web1 ({A})")] == 1


def _set_ts_expire(fleet: Fleet, name: str, value: int | None) -> None:
    """A foreign write of ``ts_expire`` alone (a hand edit, an old tool's bug)."""
    from sqlalchemy import update

    from lecentral.store.schema import certs

    with fleet.store.transaction("a hand edit") as conn:
        conn.execute(update(certs).where(certs.c.name == name).values(ts_expire=value))


def _sweep(fleet: Fleet) -> None:
    """What a renew sweep records: the facts of every row (lecentral/store/facts.py)."""
    from lecentral.config import RenewConfig

    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)


def test_a_ts_expire_that_is_not_the_crts_notafter_is_loud(any_fleet: Fleet,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``ts_expire`` hand-edited 80 days ahead of a crt that expires in 5 days: metrics used to
    export the 80 days (and a 165-day lifetime), so no expiry alert could fire. Now the expiry
    and lifetime are the crt's (its facts, recorded by the last sweep: nothing parsed), and the
    wrong ts_expire is a family of its own (LecentralCertificateTsExpireWrong); a ts_expire that
    does not tell (NULL, 1) no longer means no expiry sample; right rows are unchanged, in both
    metrics paths."""
    import lecentral.certificates

    fleet = any_fleet
    monkeypatch.setattr(lecentral.certificates, "now_ts", lambda: fleet.now)
    day = 86400
    crts = {name: fleet.issue(name, days=90, age=age) for name, age in ((A, 85), (B, 10),
                                                                        (C, 10))}
    for name, crt in crts.items():
        fleet.report("web1", name, crt, crt)
    fleet.renew_run()
    _sweep(fleet)
    _set_ts_expire(fleet, A, fleet.now + 80 * day)
    _set_ts_expire(fleet, B, crts[B].not_after + 1800)  # within the renew job's hour: right
    got = samples(_both_paths(fleet, monkeypatch))
    expiry, lifetime, wrong = ("lecentral_certificate_expiry_timestamp_seconds",
                               "lecentral_certificate_lifetime_seconds",
                               "lecentral_certificate_ts_expire_timestamp_seconds")
    assert got[key(expiry, name=A)] == crts[A].not_after  # 5 days left: the alerts fire
    assert got[key(lifetime, name=A)] == 90 * day
    assert got[key(wrong, name=A)] == fleet.now + 80 * day
    assert got[key(expiry, name=B)] == crts[B].not_after + 1800 and key(wrong, name=B) not in got
    assert got[key(expiry, name=C)] == crts[C].not_after and key(wrong, name=C) not in got

    # a crt stored after the last sweep with a wrong ts_expire: the facts describe the old
    # crt, so ts_expire stands (nothing parsed) until the next sweep, which reads the new crt
    # (and, finding ts_expire wrong, makes the row due: lecentral.store.rows)
    newer = fleet.issue(C, days=90, age=86)
    _set_ts_expire(fleet, C, fleet.now + 60 * day)
    got = samples(_both_paths(fleet, monkeypatch))
    assert got[key(expiry, name=C)] == fleet.now + 60 * day and key(wrong, name=C) not in got
    _sweep(fleet)
    got = samples(_both_paths(fleet, monkeypatch))
    assert got[key(expiry, name=C)] == newer.not_after
    assert got[key(wrong, name=C)] == fleet.now + 60 * day
    assert got[key(expiry, name=A)] == crts[A].not_after  # (A swept again: the same crt)

    # ts_expire NULL or populate.pl's 1 beside a crt ("unknown, not wrong": the row is valid)
    # used to give no expiry sample at all, so no expiry alert could fire: now the crt's
    for value in (None, 1):
        _set_ts_expire(fleet, B, value)
        _sweep(fleet)
        got = samples(_both_paths(fleet, monkeypatch))
        assert got[key(expiry, name=B)] == crts[B].not_after, value
        assert got[key(lifetime, name=B)] == 90 * day and key(wrong, name=B) not in got

    # put right (the renew job's save_issued): the family is empty again
    for name in (A, B, C):
        fleet.issue(name, days=90, age=1)
    _sweep(fleet)
    out = _both_paths(fleet, monkeypatch)
    assert not [k for k in samples(out) if k.startswith(wrong)]
    assert f"# TYPE {wrong} gauge\n".encode() in out
