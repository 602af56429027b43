"""``lecentral renew`` as cron and systemd run it: with stdout or stderr closed (``>&-``), and
stopped by SIGTERM (``systemctl stop``), on two processes (``[renew] processes = 2``), against
the real world (BIND, Pebble) of tests/renew_world.py; the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from renew_world import (
    BADSECRET,
    World,
    add_row,
    make_config,
    new_zone,
    open_store,
    write_toml,
)

LECENTRAL = shutil.which("lecentral") or "lecentral"


def _world(dns_world: World, tmp_path: Path, count: int, processes: int = 2,
           **renew: Any) -> tuple[Path, list[str]]:
    """A database of ``count`` new certificates, its lecentral.toml on ``processes`` processes,
    two workers in all (so that a pass of more than two forks)."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    names = [new_zone(dns_world, "sig") for _ in range(count)]
    for name in names:
        add_row(store, [name])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=processes, workers=2,
                      **renew)
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
    done = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *command], check=False,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _issued(tmp_path) == sorted(names)
    assert [(code, json.loads(counts)) for code, counts in _runs(tmp_path)] == [(0, {"issued": 3})]
    assert not list((tmp_path / "state" / "spool").glob("*.json"))
    if "2>&-" not in closed:
        assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr


def _start(toml: Path, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([LECENTRAL, "--config", str(toml), "renew", *args],
                            stdin=subprocess.DEVNULL, stdout=(tmp_path / "out").open("wb"),
                            stderr=(tmp_path / "err").open("wb"))


def _wait_for(what: Any, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert process.poll() is None, (process.returncode, (process.stdout, _text(process)))
        assert time.monotonic() < deadline, f"timed out: {_text(process)}"
        time.sleep(0.02)


def _text(process: subprocess.Popen[bytes]) -> str:
    err = Path(str(process.args[2])).parent / "err"
    return err.read_text() if err.exists() else ""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_sigterm_during_a_pass_finishes_what_is_in_flight_says_it_and_is_recorded(
        dns_world: World, tmp_path: Path) -> None:
    """``systemctl stop`` during a pass on two processes: no certificate is started any more,
    those in flight are issued and saved, the summary is printed (the others BLOCKED, "not
    tried: the run was stopped by SIGTERM"), the run recorded with exit status 143; nothing is
    left in the spool, no failure counted, the worker process gone with its parent, and the
    next run issues the rest."""
    toml, names = _world(dns_world, tmp_path, 16)
    process = _start(toml, tmp_path)
    _wait_for(lambda: len(_issued(tmp_path)) >= 1, process)
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, _text(process)
    out, err = (tmp_path / "out").read_text(), _text(process)
    issued = _issued(tmp_path)
    assert 1 <= len(issued) < len(names), out
    assert f"{len(issued)} issued" in out and f"{len(names) - len(issued)} blocked" in out, out
    assert out.count("not tried: the run's error on stderr") == len(names) - len(issued)
    assert "lecentral: WARNING: SIGTERM: stopping" in err
    assert (f"lecentral: error: the run was stopped by SIGTERM: {len(names) - len(issued)} "
            "certificate(s) not tried, their failure counts unchanged") in err
    assert "Traceback" not in err, err
    [(code, counts)] = _runs(tmp_path)
    assert code == 143 and json.loads(counts) == {"issued": len(issued),
                                                  "blocked": len(names) - len(issued)}
    with sqlite3.connect(tmp_path / "lecentral.db") as db:
        assert db.execute("SELECT SUM(count_fail_update) FROM certs").fetchone() == (0,)
    assert not list((tmp_path / "state" / "spool").glob("*.json"))
    assert children and all(_gone(pid) for pid in children)
    # the signal went to the first process only (kill PID): it passed it on to the worker
    # process, which stopped taking its share too (the shares: every other name, by name)
    blocked = set(names) - set(issued)
    due = sorted(names)
    assert blocked & set(due[0::2]) and blocked & set(due[1::2]), (sorted(blocked), due)
    again = subprocess.run([LECENTRAL, "--config", str(toml), "renew"], check=False,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _issued(tmp_path) == sorted(names)


def test_a_worker_process_whose_parent_is_killed_stops_and_frees_the_lock(
        dns_world: World, tmp_path: Path) -> None:
    """The first process killed outright (SIGKILL, the OOM killer): its worker process finishes
    what it has in flight (spooled) and orders nothing more alone; it ends, the renew lock
    with it, and the next run saves the spooled ones and issues the rest."""
    toml, names = _world(dns_world, tmp_path, 16)
    process = _start(toml, tmp_path)
    _wait_for(lambda: len(_issued(tmp_path)) >= 1, process)
    [child] = _children(process.pid)
    process.kill()
    process.wait(timeout=60)
    deadline = time.monotonic() + 120
    while not _gone(child):
        assert time.monotonic() < deadline, "the worker process orders on alone"
        time.sleep(0.05)
    spooled = len(list((tmp_path / "state" / "spool").glob("*.json")))
    assert len(_issued(tmp_path)) + spooled < len(names)  # it stopped early
    again = subprocess.run([LECENTRAL, "--config", str(toml), "renew"], check=False,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _issued(tmp_path) == sorted(names)


def test_sigterm_while_rounds_sleep_ends_the_run_with_round_one_shown(
        dns_world: World, tmp_path: Path) -> None:
    """``--rounds`` sleeping renew.retry_pause after a failure: SIGTERM ends the sleep, the run
    prints round 1's failure and its summary, is recorded, and exits 143."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [BADSECRET])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", retry_pause=3600, max_failures=5)
    process = _start(toml, tmp_path, "--rounds")
    _wait_for(lambda: "retrying in 3600 s" in _text(process), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143, _text(process)
    out, err = (tmp_path / "out").read_text(), _text(process)
    assert "FAILED" in out and BADSECRET in out and "1 failed" in out, out
    assert "lecentral: error: the run was stopped by SIGTERM: no retry round is made" in err
    [(code, counts)] = _runs(tmp_path)
    assert code == 143 and json.loads(counts) == {"failed": 1}


def test_a_world_readable_tsig_key_file_is_warned_about_once_per_run(dns_world: World,
                                                                      tmp_path: Path) -> None:
    """A run reads the key file several times (its checks, each zone's update test, each
    process): the operator hears of its mode once."""
    import dataclasses

    config = make_config(dns_world, tmp_path)
    shared = tmp_path / "acme-update.key"
    shared.write_bytes(Path(config.dns.tsig_key_file).read_bytes())
    shared.chmod(0o644)
    config = dataclasses.replace(config, dns=dataclasses.replace(config.dns,
                                                                 tsig_key_file=str(shared)))
    store = open_store(config)
    for _ in range(4):
        add_row(store, [new_zone(dns_world, "mode")])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=2, workers=2)
    done = subprocess.run([LECENTRAL, "--config", str(toml), "renew"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"TSIG key file {shared} is readable by every user") == 1, done.stderr


def test_a_worker_process_killed_is_said_once_on_stderr(dns_world: World, tmp_path: Path) -> None:
    """The OOM killer takes the worker process: its death is the run's problem, one error line
    on stderr (docs/renew.md), not a log line as well."""
    toml, _ = _world(dns_world, tmp_path, 16)
    process = _start(toml, tmp_path)
    _wait_for(lambda: len(_issued(tmp_path)) >= 1, process)
    [child] = _children(process.pid)
    os.kill(child, signal.SIGKILL)
    code = process.wait(timeout=120)
    err = _text(process)
    assert code != 0 and err.count(f"renew worker process {child} was killed by signal 9") == 1, err
    assert "Traceback" not in err


def test_sigterm_in_one_process_json_says_it(dns_world: World, tmp_path: Path) -> None:
    """``processes = 1`` and ``--json``: the same stop; the document says it (``stopped``,
    ``ok`` false, the others BLOCKED) and the run's record too."""
    toml, names = _world(dns_world, tmp_path, 12, processes=1)
    process = _start(toml, tmp_path, "--json")
    _wait_for(lambda: len(_issued(tmp_path)) >= 1, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, _text(process)
    data = json.loads((tmp_path / "out").read_text())
    issued = _issued(tmp_path)
    assert data["stopped"] == "the run was stopped by SIGTERM" and data["ok"] is False
    statuses = {c["name"]: c["status"] for c in data["certificates"]}
    assert sorted(n for n, s in statuses.items() if s == "issued") == issued
    assert {s for n, s in statuses.items() if n not in issued} == {"blocked"}
    assert len(issued) < len(names)
    with sqlite3.connect(tmp_path / "lecentral.db") as db:
        [(code, message)] = db.execute("SELECT exit_code, message FROM lecentral_runs").fetchall()
    assert code == 143 and message.endswith("; the run was stopped by SIGTERM")
