"""contrib/systemd as shipped: every unit and timer passes ``systemd-analyze verify`` with its real
ExecStart (this checkout's console scripts in place of /usr/local/bin), the timers spread their
runs, the service user and directories come from the sysusers.d and tmpfiles.d files (applied to
a throwaway root with the real systemd-sysusers and systemd-tmpfiles), and the central units may
write the default paths of the configuration under their sandbox.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lecentral.config import CentralConfig

SYSTEMD = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
BIN = Path(sys.executable).parent
SERVICES = sorted(p.name for p in SYSTEMD.glob("*.service"))
TIMERS = sorted(p.name for p in SYSTEMD.glob("*.timer"))


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)


def man_path(tmp_path: Path) -> dict[str, str]:
    """The environment of a host where the man pages were installed as docs/reference.md says
    (``python -m lecentral.cli.manpage .../man1``): systemd-analyze verify runs ``man`` on each
    ``Documentation=man:`` page."""
    man1 = tmp_path / "man" / "man1"
    done = run([sys.executable, "-m", "lecentral.cli.manpage", str(man1)])
    assert done.returncode == 0, done.stderr
    return {**os.environ, "MANPATH": str(tmp_path / "man")}


@pytest.mark.parametrize("service", SERVICES)
def test_every_unit_verifies_with_its_real_command(service: str, tmp_path: Path) -> None:
    text = (SYSTEMD / service).read_text()
    assert "/usr/local/bin/lecentral" in text
    (tmp_path / service).write_text(text.replace("/usr/local/bin/", f"{BIN}/"))
    timer = service.replace(".service", ".timer")
    paths = [str(tmp_path / service)]
    if (SYSTEMD / timer).exists():
        (tmp_path / timer).write_text((SYSTEMD / timer).read_text())
        paths.append(str(tmp_path / timer))
    done = run(["systemd-analyze", "verify", *paths], env=man_path(tmp_path))
    assert done.returncode == 0, done.stderr
    assert service.removesuffix(".service") not in done.stderr, done.stderr


@pytest.mark.parametrize("timer", TIMERS)
def test_every_timer_spreads_its_runs_and_has_its_service(timer: str) -> None:
    section = unit(timer)["Timer"]
    assert section.get("RandomizedDelaySec"), f"{timer}: a fleet must not wake at the same second"
    if section.get("OnCalendar"):  # a run missed while the host was down is made up at boot
        assert section.get("Persistent") == "true"
    assert (SYSTEMD / timer.replace(".timer", ".service")).exists()


def test_sysusers_and_tmpfiles_make_the_user_and_its_directories(tmp_path: Path) -> None:
    """Applied to a throwaway root: the lecentral user, and its directories owned by it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    shutil.copy("/etc/passwd", root / "etc" / "passwd")  # root and the system groups exist
    shutil.copy("/etc/group", root / "etc" / "group")
    done = run(["systemd-sysusers", f"--root={root}", str(SYSTEMD / "lecentral.sysusers.conf")])
    assert done.returncode == 0, done.stderr
    passwd = (root / "etc" / "passwd").read_text()
    (entry,) = [line for line in passwd.splitlines() if line.startswith("lecentral:")]
    uid = int(entry.split(":")[2])
    assert entry.split(":")[5] == "/var/lib/lecentral"
    done = run(["systemd-tmpfiles", "--create", f"--root={root}",
                str(SYSTEMD / "lecentral.tmpfiles.conf")])
    assert done.returncode == 0, done.stderr
    for path, mode, owner in (("var/lib/lecentral", 0o750, uid), ("var/lib/lecentral/renew", 0o700, uid),
                              ("var/lib/lecentral/certbot", 0o700, uid),
                              ("etc/lecentral", 0o750, 0), ("etc/lecentral/csr", 0o750, 0)):
        info = (root / path).stat()
        assert (info.st_mode & 0o777, info.st_uid) == (mode, owner), path


@pytest.mark.parametrize("service", ["lecentral-renew.service", "lecentral-probe.service",
                                     "lecentral-metrics.service"])
def test_central_units_may_write_the_default_paths(service: str) -> None:
    """User=lecentral under ProtectSystem=strict: every path the defaults write (database,
    account key, renew spool, certbot state) is under a ReadWritePaths= of the unit."""
    section = unit(service)["Service"]
    assert section["User"] == "lecentral" and section["ProtectSystem"] == "strict"
    writable = section["ReadWritePaths"].split()
    defaults = CentralConfig()
    written = [defaults.database.url.removeprefix("sqlite:///"), defaults.acme.account_key,
               defaults.renew.state_dir, defaults.certbot.state_dir]
    for path in written:
        assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), \
            (service, path, writable)


@pytest.mark.parametrize("service", SERVICES)
def test_documentation_points_at_a_page_lecentral_writes(service: str, tmp_path: Path) -> None:
    """``Documentation=man:PAGE(1)``: a page ``python -m lecentral.cli.manpage`` writes, which
    ``man`` finds once installed (verify above fails on a page man cannot show)."""
    (link,) = unit(service)["Unit"]["Documentation"].split()
    assert link.startswith("man:") and link.endswith("(1)"), link
    page = link.removeprefix("man:").removesuffix("(1)")
    done = run(["man", "-w", page], env=man_path(tmp_path))
    assert done.returncode == 0 and done.stdout.strip().endswith(f"{page}.1"), done.stderr
