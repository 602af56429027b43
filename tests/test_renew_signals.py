"""``lecentral renew`` as cron and systemd run it: with stdout or stderr closed (``>&-``), and
stopped by SIGTERM (``systemctl stop``), on two processes (``[renew] processes = 2``), against
the real world (BIND, Pebble) of tests/renew_world.py; the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from renew_world import World, add_row, make_config, new_zone, open_store, write_toml

LECENTRAL = shutil.which("lecentral") or "lecentral"


def _world(dns_world: World, tmp_path: Path, count: int, **renew: Any) -> tuple[Path, list[str]]:
    """A database of ``count`` new certificates, its lecentral.toml on two processes of one
    worker each (so that the pass forks)."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    names = [new_zone(dns_world, "sig") for _ in range(count)]
    for name in names:
        add_row(store, [name])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=2, workers=2, **renew)
    return toml, names


def _runs(tmp_path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp_path / "lecentral.db") as db:
        return [(code, counts) for code, counts in db.execute(
            "SELECT exit_code, counts FROM lecentral_runs WHERE kind = 'renew'")]


def _issued(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "lecentral.db") as db:
        return sorted(n for (n,) in db.execute("SELECT name FROM certs WHERE crt IS NOT NULL "
                                               "AND crt != ''"))


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_run_on_two_processes_with_stdout_or_stderr_closed_issues_and_is_recorded(
        dns_world: World, tmp_path: Path, closed: str, as_json: bool) -> None:
    """cron's ``lecentral renew >&-``: nothing to print to is no reason to fail; every
    certificate is issued, the run recorded, exit 0."""
    toml, names = _world(dns_world, tmp_path, 3)
    command = [LECENTRAL, "--config", str(toml), "renew", *(["--json"] if as_json else [])]
    done = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *command],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _issued(tmp_path) == sorted(names)
    assert [(code, json.loads(counts)) for code, counts in _runs(tmp_path)] == [(0, {"issued": 3})]
    assert not list((tmp_path / "state" / "spool").glob("*.json"))
    if "2>&-" not in closed:
        assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
