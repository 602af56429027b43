"""contrib/ monitoring files stay valid: the Prometheus rules (``promtool check rules`` and
``promtool test rules``), the metrics and probe units' command lines and the cron line run for
real, and the NRPE command lines (run for real against a database). Every unit's
``systemd-analyze verify``: tests/test_systemd_units.py."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_world import Fleet

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib"
RULES = CONTRIB / "prometheus" / "lecentral.rules.yml"
RULES_TEST = ROOT / "tests" / "data" / "prometheus" / "lecentral.rules.test.yml"
BIN = Path(sys.executable).parent


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          **kwargs)  # type: ignore[call-overload, no-any-return]


def test_prometheus_rules_are_valid() -> None:
    done = run(["promtool", "check", "rules", str(RULES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 19 rules found" in done.stdout


def test_prometheus_rules_fire_as_documented() -> None:
    done = run(["promtool", "test", "rules", str(RULES_TEST)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_metrics_rules_only_use_metrics_lecentral_writes(fleet: Fleet) -> None:
    """Every lecentral_* name in the rules is one ``lecentral metrics`` writes (no typo that
    would make an alert silently never fire)."""
    import re

    a = fleet.issue("a.example.test")
    fleet.report("web1", "a.example.test", a, a)
    fleet.renew_run()
    written = set(re.findall(r"^# TYPE (lecentral_\w+) ", fleet.run("metrics").stdout, re.MULTILINE))
    used = set(re.findall(r"\b(lecentral_[a-z_]+)\b", RULES.read_text()))
    assert used <= written, used - written


def _exec_start(unit: Path) -> list[str]:
    (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_metrics_units_command_runs(fleet: Fleet, tmp_path: Path) -> None:
    """The metrics unit's own command line (systemd-analyze verify of every unit:
    tests/test_systemd_units.py)."""
    # the unit's own command line, with this venv's lecentral and a temporary textfile directory
    argv = _exec_start(CONTRIB / "systemd" / "lecentral-metrics.service")
    assert argv[0] == "/usr/local/bin/lecentral" and "--textfile" in argv
    out = tmp_path / "lecentral.prom"
    argv = [str(BIN / "lecentral"), "--config", str(fleet.config), *argv[1:]]
    argv[argv.index("--textfile") + 1] = str(out)
    fleet.issue("a.example.test")
    done = run(argv)
    assert done.returncode == 0, done.stderr
    assert "lecentral_certificate_expiry_timestamp_seconds" in out.read_text()


def test_nrpe_command_lines_run(fleet: Fleet, tmp_path: Path) -> None:
    """Each central command of contrib/nrpe/lecentral.cfg, run as NRPE would (a process)."""
    fleet.issue("a.example.test", days=90, age=1)
    fleet.issue("www.example.com", days=90, age=65)  # 25 days left: WARNING only at --warning 30
    fleet.renew_run()
    lines = [ln for ln in (CONTRIB / "nrpe" / "lecentral.cfg").read_text().splitlines()
             if ln.startswith("command[")]
    assert len(lines) == 3
    codes = {}
    for line in lines:
        name, _, command = line.partition("]=")
        argv = shlex.split(command)
        if argv[0] == "/usr/bin/sudo":  # as the renew job's user, who can read its journals
            assert argv[1:4] == ["-n", "-u", "lecentral"], argv
            argv = argv[4:]
        exe = Path(argv[0]).name
        assert argv[0] == f"/usr/local/bin/{exe}" and exe in ("lecentral", "lecentral-install")
        if exe == "lecentral-install":
            config = tmp_path / "install.toml"
            config.write_text(f'[database]\nurl = "{fleet.url}"\n')
            argv = [str(BIN / exe), "--config", str(config), *argv[1:]]
        else:
            argv = [str(BIN / exe), "--config", str(fleet.config), *argv[1:]]
        done = run(argv)
        first = done.stdout.splitlines()[0]
        codes[name.removeprefix("command[")] = (done.returncode, first)
        assert done.stderr == "", done.stderr
    assert codes["check_lecentral"][0] == 0, codes
    assert codes["check_lecentral_www"][0] == 1, codes
    assert codes["check_lecentral_www"][1].startswith("LECENTRAL WARNING - 1 warning problem(s) in "
                                                      "1 certificate: www.example.com: expires in")
    assert codes["check_lecentral_install"] == (
        0, "LECENTRAL-INSTALL OK - no [[cert]] entry in install.toml"), codes


ICINGA_MAIN = """\
include <itl>
const NodeName = "lecentral.example.com"
object Host "lecentral.example.com" { check_command = "dummy" }
object Host "web1.example.com" { check_command = "dummy"; vars.lecentral_agent = true }
include "%s"
"""


def test_icinga2_config_validates(tmp_path: Path) -> None:
    """Icinga 2 itself (Debian's icinga2-bin) validates the CheckCommands and Services."""
    main = tmp_path / "icinga2.conf"
    main.write_text(ICINGA_MAIN % (CONTRIB / "icinga2" / "lecentral.conf"))
    # as this user: icinga2 would switch to its own, which cannot read pytest's 0700 tmp dirs
    import grp
    import os
    import pwd

    env = {**os.environ, "ICINGA2_USER": pwd.getpwuid(os.getuid()).pw_name,
           "ICINGA2_GROUP": grp.getgrgid(os.getgid()).gr_name}
    done = run(["icinga2", "daemon", "-C", "-c", str(main)], env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Instantiated 2 CheckCommands" not in done.stdout  # the ITL's are there too
    assert "Instantiated 3 Services." in done.stdout, done.stdout[-2000:]


def test_icinga2_options_exist() -> None:
    """The options the CheckCommands pass are options of the commands."""
    text = (CONTRIB / "icinga2" / "lecentral.conf").read_text()
    for exe, options in (("lecentral", ("--warning", "--critical", "--max-lines")),
                         ("lecentral-install", ("--warning", "--critical", "--stale-after"))):
        done = run([str(BIN / exe), "check", "--help"])
        assert done.returncode == 0
        for option in options:
            assert f'"{option}"' in text and option in done.stdout


def test_probe_unit_and_cron_line_run(fleet: Fleet, tmp_path: Path) -> None:
    """The probe unit's command line and the cron line's run against a database (no endpoint
    yet: exit 0, nothing printed); verify of the unit: tests/test_systemd_units.py."""
    (cron,) = [ln for ln in (CONTRIB / "cron" / "lecentral-probe").read_text().splitlines()
               if ln and not ln.startswith("#")]
    cron_argv = shlex.split(cron)[6:]  # minute hour day month weekday user COMMAND...
    for argv in (_exec_start(CONTRIB / "systemd" / "lecentral-probe.service"), cron_argv):
        assert argv[0] == "/usr/local/bin/lecentral" and "probe" in argv
        done = run([str(BIN / "lecentral"), "--config", str(fleet.config), *argv[1:]])
        assert done.returncode == 0, done.stderr
        assert done.stdout == "" and done.stderr == ""  # -q: quiet for cron when all is well


def test_agent_cron_line_spreads_the_runs(tmp_path: Path) -> None:
    """contrib/cron/lecentral-install, run by /bin/sh as cron runs it (dash on Debian: no
    $RANDOM), sleeps a random 0..1799 s before the agent, and no "%" (cron's newline) is in it.
    ``sleep`` and the agent are stand-ins here that print their arguments."""
    (line,) = [ln for ln in (CONTRIB / "cron" / "lecentral-install").read_text().splitlines()
               if ln and not ln.startswith("#")]
    command = line.split(None, 6)[6]  # minute hour day month weekday user COMMAND
    assert "%" not in command
    assert command.endswith("/usr/local/bin/lecentral-install run --quiet")
    for tool in ("sleep", "lecentral-install"):
        stand_in = tmp_path / tool
        stand_in.write_text(f'#!/bin/sh\necho "{tool} $*"\n')
        stand_in.chmod(0o755)
    command = command.replace("/usr/local/bin/lecentral-install", str(tmp_path / "lecentral-install"))
    waits = set()
    for _ in range(5):
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False,
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
        assert done.returncode == 0 and done.stderr == "", done.stderr
        sleep, agent = done.stdout.splitlines()
        assert agent == "lecentral-install run --quiet"
        seconds = int(sleep.removeprefix("sleep "))
        assert 0 <= seconds < 1800
        waits.add(seconds)
    assert len(waits) > 1  # random, not the same minute on every server
