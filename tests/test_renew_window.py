"""The renewal window relative to the certificate's lifetime, with real short-lived certificates.

Three real Pebble CAs issue through the session's BIND (``dns_world``): 12-hour, 6-day and 90-day
certificates (``certificateValidityPeriod``). A certificate is issued by the real renew job, then
the next run must leave it alone; when it becomes due is checked by asking the renew job's own
decision (:func:`lecentral.renew.due_reason`) about that stored row at the moments around its
renewal time, since a test cannot wait 6 hours (the clock is the only thing not real).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.agent import AgentWorld
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK
from renew_world import (
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
    renew_cli,
    write_toml,
)

from lecentral.certificates import Certificate, now_ts
from lecentral.cli.central import main
from lecentral.config import RenewConfig, load_central
from lecentral.errors import ConfigError
from lecentral.renew import due_reason
from lecentral.store.sql import SqlStore
from lecentral.window import renew_at

HOUR, DAY = 3600, 86400


def start_pebble(dns_world: World, workdir: Path, validity: int) -> PebbleServer:
    return PebbleServer(workdir, dns_server=(LOOPBACK, dns_world.resolver.port),
                        config={"certificateValidityPeriod": validity}).start()


@pytest.fixture(scope="module")
def pebble_12h(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    with start_pebble(dns_world, tmp_path_factory.mktemp("pebble-12h"), 12 * HOUR) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def pebble_6d(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    with start_pebble(dns_world, tmp_path_factory.mktemp("pebble-6d"), 6 * DAY) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def pebble_90d(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    with start_pebble(dns_world, tmp_path_factory.mktemp("pebble-90d"), 90 * DAY) as pebble:
        yield pebble


class Issued:
    """One name issued by a real Pebble through ``lecentral renew``: its config, TOML, store."""

    def __init__(self, dns_world: World, pebble: PebbleServer, tmp: Path, prefix: str) -> None:
        self.name = new_zone(dns_world, prefix)
        self.config = make_config(dns_world, tmp, pebble=pebble, min_interval=0)
        self.store = open_store(self.config)
        _, key = add_row(self.store, [self.name])
        self.toml = write_toml(self.config, tmp / "lecentral.toml", min_interval=0)
        first = renew_cli(self.toml, "--once")
        assert first.exit_code == 0 and first.outcome(self.name)["status"] == "issued", first.data
        self.cert = assert_issued(self.store, self.name, [self.name], key)

    def due(self, at: int, **renew: Any) -> tuple[bool, str]:
        """The renew job's decision about the stored row at time ``at`` under ``[renew] renew``."""
        config = dataclasses.replace(self.config,
                                     renew=dataclasses.replace(self.config.renew, **renew))
        row = self.store.get(self.name)
        assert row is not None
        return due_reason(row, at, config, False, None)

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.toml), *args])


@pytest.fixture
def issued_12h(dns_world: World, pebble_12h: PebbleServer, tmp_path: Path) -> Iterator[Issued]:
    issued = Issued(dns_world, pebble_12h, tmp_path, "h12")
    yield issued
    issued.store.close()


@pytest.fixture
def issued_6d(dns_world: World, pebble_6d: PebbleServer, tmp_path: Path) -> Iterator[Issued]:
    issued = Issued(dns_world, pebble_6d, tmp_path, "d6")
    yield issued
    issued.store.close()


@pytest.fixture
def issued_90d(dns_world: World, pebble_90d: PebbleServer, tmp_path: Path) -> Iterator[Issued]:
    issued = Issued(dns_world, pebble_90d, tmp_path, "d90")
    yield issued
    issued.store.close()


def lifetime(cert: Certificate) -> int:
    """Both ends count (RFC 5280): Pebble's notAfter is notBefore + the period - 1 s."""
    return cert.not_after - cert.not_before + 1


# --- 12 hours -----------------------------------------------------------------------------------


def test_a_fresh_12_hour_certificate_is_not_reissued_on_the_next_run(issued_12h: Issued) -> None:
    """The issue's bug: with before_days 30 every run reissued it (min_interval 0 here, so
    nothing but the window holds it back)."""
    assert lifetime(issued_12h.cert) in range(12 * HOUR - 1, 12 * HOUR + 2)
    before = issued_12h.store.get(issued_12h.name)
    again = renew_cli(issued_12h.toml, "--once")
    assert again.exit_code == 0
    outcome = again.outcome(issued_12h.name)
    assert outcome["status"] == "not-due", outcome
    assert "renews at" in outcome["message"]
    assert "half of its 12-hour lifetime left" in outcome["message"]
    assert issued_12h.store.get(issued_12h.name) == before


def test_a_12_hour_certificate_becomes_due_with_6_hours_left(issued_12h: Issued) -> None:
    renew_at = issued_12h.cert.not_after - lifetime(issued_12h.cert) // 2
    assert abs(renew_at - (issued_12h.cert.not_after - 6 * HOUR)) <= 1
    due, why = issued_12h.due(renew_at - 1)
    assert not due and why.startswith("expires in 6 hours; renews at")
    due, why = issued_12h.due(renew_at)
    assert due and "half of its 12-hour lifetime left" in why, why


def test_list_and_show_say_when_and_why(issued_12h: Issued) -> None:
    renew_at = issued_12h.cert.not_after - lifetime(issued_12h.cert) // 2
    listed = issued_12h.cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    [item] = json.loads(listed.stdout)
    assert item["ts_renew_at"] == renew_at
    assert item["renew_reason"] == "half of its 12-hour lifetime left"
    assert item["renew_at"] and item["renew_at"] in issued_12h.cli("list").stdout
    assert "(half of its 12-hour lifetime left)" in issued_12h.cli("list").stdout
    shown = issued_12h.cli("show", issued_12h.name)
    assert shown.exit_code == 0
    assert f"at {item['renew_at']} UTC (half of its 12-hour lifetime left" in shown.stdout
    assert json.loads(issued_12h.cli("show", issued_12h.name, "--json").stdout)["ts_renew_at"] == \
        renew_at


def test_list_of_a_row_without_certificate(dns_world: World, pebble_12h: PebbleServer,
                                           tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, pebble=pebble_12h)
    store = open_store(config)
    add_row(store, [new_zone(dns_world, "none")])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    result = CliRunner().invoke(main, ["--config", str(toml), "list", "--json"])
    [item] = json.loads(result.stdout)
    assert item["renew_at"] is None and item["renew_reason"] == "now: no certificate yet"
    store.close()


def test_doctor_warns_about_min_interval_against_the_shortest_lifetime(issued_12h: Issued) -> None:
    """A 4-hour min_interval is more than a quarter of the 12-hour certificate's lifetime."""
    toml = write_toml(issued_12h.config, issued_12h.toml.parent / "slow.toml", min_interval=4 * HOUR)
    result = CliRunner().invoke(main, ["--config", str(toml), "doctor", "--no-dns", "--json"])
    assert result.exit_code == 1, result.output
    [finding] = [f for f in json.loads(result.stdout)["findings"] if f["name"] == "[renew]"]
    assert finding["level"] == "warning"
    assert "renew.min_interval 14400 s is more than 1/4 of the shortest certificate lifetime " \
        "in the database (12 hours)" in finding["message"]
    assert "at most 10800 s" in finding["message"]
    fine = issued_12h.cli("doctor", "--no-dns", "--json")  # min_interval 0
    assert fine.exit_code == 0, fine.output
    assert not [f for f in json.loads(fine.stdout)["findings"] if f["name"] == "[renew]"]


# --- 6 days -------------------------------------------------------------------------------------


def test_a_6_day_certificate_renews_at_half_or_as_configured(issued_6d: Issued) -> None:
    cert = issued_6d.cert
    assert lifetime(cert) in range(6 * DAY - 1, 6 * DAY + 2)
    half = cert.not_after - lifetime(cert) // 2
    assert issued_6d.due(half - 1)[0] is False
    due, why = issued_6d.due(half)
    assert due and "half of its 6-day lifetime left" in why
    # "36h": a duration before notAfter
    assert issued_6d.due(cert.not_after - 36 * HOUR - 1, before="36h")[0] is False
    due, why = issued_6d.due(cert.not_after - 36 * HOUR, before="36h")
    assert due and '36 hours before it expires (renew.before "36h")' in why
    # "1/3": a third even under 10 days
    third = cert.not_after - lifetime(cert) // 3
    assert issued_6d.due(third - 1, before="1/3")[0] is False
    assert issued_6d.due(third, before="1/3")[0] is True


def test_before_days_in_an_existing_config_still_wins(issued_6d: Issued) -> None:
    """An explicit before_days = 30 (configs written before renew.before) is the absolute rule:
    a 6-day certificate is then always due, and the next run reissues it."""
    due, why = issued_6d.due(now_ts(), before_days=30)
    assert due and "30 days before it expires (renew.before_days)" in why
    toml = write_toml(issued_6d.config, issued_6d.toml.parent / "old.toml", min_interval=0,
                      before_days=30)
    again = renew_cli(toml, "--once")
    assert again.exit_code == 0 and again.outcome(issued_6d.name)["status"] == "issued", again.data
    row = issued_6d.store.get(issued_6d.name)
    assert row is not None and row.old_crt == issued_6d.cert.pem and row.crt != issued_6d.cert.pem
    doctor = CliRunner().invoke(main, ["--config", str(toml), "doctor", "--no-dns", "--json"])
    assert any("renew.before_days = 30 is at least the shortest certificate lifetime in the "
               "database (6 days)" in f["message"] for f in json.loads(doctor.stdout)["findings"])


# --- 90 days ------------------------------------------------------------------------------------


def test_a_90_day_certificate_renews_with_30_days_left(issued_90d: Issued) -> None:
    cert = issued_90d.cert
    assert lifetime(cert) in range(90 * DAY - 1, 90 * DAY + 2)
    at = cert.not_after - lifetime(cert) // 3
    assert abs(at - (cert.not_after - 30 * DAY)) <= 1
    due, why = issued_90d.due(at - 1)
    assert not due and why.startswith("expires in 30 days; renews at")
    due, why = issued_90d.due(at)
    assert due and "1/3 of its 90-day lifetime left" in why
    # before_days 70: due with 70 days left, when the relative rule is not
    assert issued_90d.due(cert.not_after - 70 * DAY)[0] is False
    assert issued_90d.due(cert.not_after - 70 * DAY, before_days=70)[0] is True
    not_due = renew_cli(issued_90d.toml, "--once")
    assert not_due.outcome(issued_90d.name)["status"] == "not-due"
    assert "1/3 of its 90-day lifetime left" in not_due.outcome(issued_90d.name)["message"]


# --- the configuration --------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lecentral.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("value, stored", [
    ('"1/3"', "1/3"), ('"36h"', "36h"), ('"50%"', "50%"), ('"30d"', "30d"), ('"Auto"', "auto"),
])
def test_before_values_parse(tmp_path: Path, value: str, stored: str) -> None:
    assert load_central(write(tmp_path, f"[renew]\nbefore = {value}\n")).renew.before == stored


def test_defaults_are_relative() -> None:
    assert RenewConfig().before == "auto" and RenewConfig().before_days == 0


@pytest.mark.parametrize("text, message", [
    ('before = "0.5"', ("renew.before must be \"auto\", a fraction .* \\(not '0.5': a number "
                        "without a unit is ambiguous\\)")),
    ("before = 30", "renew.before must be \"auto\", a fraction .* \\(not 30\\)"),
    ('before = "soon"', "renew.before must be \"auto\", a fraction .* \\(not 'soon'\\)"),
    ('before = "3/2"', ("renew.before = '3/2': a fraction of the lifetime must be more than 0 "
                        "and less than 1")),
    ('before = "0/3"', "renew.before = '0/3': a fraction of the lifetime must be more than 0"),
    ('before = "1/0"', "renew.before must be .* \\(not '1/0'\\)"),
    ('before = "10s"', "renew.before = '10s' is out of range"),
    ("before_days = -1", "renew.before_days must be at least 0"),
    ('before_days = "30"', "renew.before_days must be int"),
    ('before = "1/3"\nbefore_days = 20',
     "renew.before = '1/3' and renew.before_days = 20 both say when to renew; keep one"),
])
def test_bad_values_are_config_errors_naming_the_key(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = write(tmp_path, f"[renew]\n{text}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_central(path)
    assert str(info.value).startswith(f"{path}: ")
    result = CliRunner().invoke(main, ["--config", path, "config", "show"])
    assert result.exit_code == 2 and "renew.before" in result.stderr and not result.stdout


def test_config_show_warns_about_a_min_interval_above_a_day(tmp_path: Path) -> None:
    path = write(tmp_path, "[renew]\nmin_interval = 172800\n")
    result = CliRunner().invoke(main, ["--config", path, "config", "show", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["renew"]["min_interval"] == 172800
    assert "warning: renew.min_interval 172800 s is more than a day: a 6-day certificate" in \
        result.stderr
    quiet = CliRunner().invoke(main, ["--config", write(tmp_path, "[renew]\n"), "config", "show"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr
    assert 'before = "auto"' in quiet.stdout and "before_days = 0" in quiet.stdout


def test_the_store_is_not_touched_by_a_bad_window_config(tmp_path: Path, store: SqlStore) -> None:
    """A config error stops before the database is opened: nothing is written."""
    path = write(tmp_path, f'[database]\nurl = "{store.url}"\n[renew]\nbefore = "2"\n')
    result = CliRunner().invoke(main, ["--config", path, "renew", "--json"])
    assert result.exit_code == 2 and "renew.before" in result.stderr
    assert store.list() == []


# --- the cadence the shipped timers and cron lines run at ------------------------------------------

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def _timer_gaps(timer: str) -> list[int]:
    """Seconds between the next elapses of ``contrib/systemd/TIMER``'s OnCalendar, as systemd
    computes them (``systemd-analyze calendar``)."""
    import itertools
    import re
    import subprocess
    from datetime import datetime

    (spec,) = [line.split("=", 1)[1] for line in (CONTRIB / "systemd" / timer).read_text()
               .splitlines() if line.startswith("OnCalendar=")]
    done = subprocess.run(["systemd-analyze", "calendar", "--iterations=13", spec],
                          capture_output=True, text=True, timeout=60, check=True)
    times = [datetime.strptime(t, "%a %Y-%m-%d %H:%M:%S %Z").timestamp() for t in
             re.findall(r"(?:Next elapse|Iter\. #\d+): (\w{3} [\d-]+ [\d:]+ UTC)", done.stdout)]
    assert len(times) == 13, done.stdout
    return [int(b - a) for a, b in itertools.pairwise(times)]


def _cron_hours(name: str) -> str:
    (line,) = [line for line in (CONTRIB / "cron" / name).read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    return line.split()[1]


def test_the_timers_run_often_enough_for_6_day_certificates() -> None:
    """The central renew at least every 4 hours (a 12-hour certificate is due with 6 hours
    left), the agents at least twice a day (a 6-day one is renewed with 3 days left), both with
    jitter; the cron lines the same."""
    assert max(_timer_gaps("lecentral-renew.timer")) <= 4 * HOUR
    assert max(_timer_gaps("lecentral-install.timer")) <= 12 * HOUR
    for timer in ("lecentral-renew.timer", "lecentral-install.timer"):
        assert "RandomizedDelaySec=" in (CONTRIB / "systemd" / timer).read_text()
    assert _cron_hours("lecentral-renew") == "*/4"
    assert _cron_hours("lecentral-install") == "*"


# --- the agent's hour of tolerance with short lifetimes ---------------------------------------------


def test_the_agent_installs_each_renewed_12_hour_certificate(world: AgentWorld) -> None:
    """The agent's "same time" hour (SAME_TIME, only a guard against going backwards) stays
    right for 12-hour certificates: the one renewed at its renewal time (6 hours left) expires
    6 hours later and is installed; a reissue minutes later is installed too; the older one,
    stored back, never replaces it. The test CA signs here (lecentral_testing's TestCA, real
    certificates): two certificates 6 hours apart cannot be had from Pebble without waiting."""
    name = "short.example.test"
    world.add(name)
    now = dt.datetime.now(dt.UTC)
    first = world.issue(name, start=now - dt.timedelta(hours=6), days=0.5)
    world.write_config(world.entry(name))
    assert world.run("run").by_name(name)["status"] == "installed"
    window = renew_at(first.not_before, first.not_after, RenewConfig())
    assert window.at <= now_ts() < window.at + 120, window  # due now: 6 hours left

    renewed = world.issue(name, start=now, days=0.5)
    result = world.run("run").by_name(name)
    assert result["status"] == "installed" and "newer certificate" in result["message"], result
    crt = world.ssl / "certs" / f"{name}.crt"
    assert Certificate.load(crt.read_bytes()).fingerprint == renewed.fingerprint

    reissued = world.issue(name, start=now + dt.timedelta(minutes=10), days=0.5)
    result = world.run("run").by_name(name)
    assert result["status"] == "installed" and "reissued certificate" in result["message"], result
    assert Certificate.load(crt.read_bytes()).fingerprint == reissued.fingerprint

    world.issue(name, start=now - dt.timedelta(hours=6), days=0.5)  # the old one stored back
    result = world.run("run").by_name(name)
    assert result["status"] == "skipped" and "newer than the database" in result["message"]
    assert Certificate.load(crt.read_bytes()).fingerprint == reissued.fingerprint
