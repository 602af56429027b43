#!/usr/bin/env python3
"""Benchmark: a no-op ``lecentral-install run`` versus a no-op ``certbot renew``, 20 certificates each.

What an agent running hourly costs when there is nothing to do. In one run, on 127.0.0.1:

* the agent: 20 ``[[cert]]`` entries, the store (SQLite, or a throwaway MariaDB with
  ``--backend mariadb``) holding the 20 certificates already installed; ``lecentral-install run
  --quiet`` compares each installed leaf with the database row and does nothing;
* certbot: 20 lineages issued by Pebble (``PEBBLE_VA_ALWAYS_VALID=1``, manual DNS hook ``true``)
  in its own --config-dir/--work-dir/--logs-dir; ``certbot renew`` finds nothing due.

Each command is a fresh process started from its real console script (not a pyenv shim), run
``--repeat`` times alternately; the medians of wall time and peak RSS (``wait4``'s ru_maxrss) are
printed with their ratios (peak RSS measured by GNU time).

Targets (issue 16): wall time at most 0.5x certbot's no-op, peak memory at most certbot's
(1.0x); the script exits 1 when either is missed.

Both sides run from byte-compiled modules, as installed packages do (pip and Debian compile
them): ``PYTHONDONTWRITEBYTECODE`` is dropped for the measured processes, and the first run of
each side (not measured) writes what is missing.

    python bench/bench_agent_noop.py                     # 20 certificates, 5 rounds, SQLite
    python bench/bench_agent_noop.py --backend mariadb   # the issue's numbers are MariaDB's
    python bench/bench_agent_noop.py -n 5 -r 3           # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

WALL_TARGET = 0.5
MEMORY_TARGET = 1.0
TIME = shutil.which("time", path="/usr/bin:/bin") or sys.exit("GNU time is needed: apt-get install time")


def script(name: str) -> str:
    """The real console script of this interpreter (a pyenv shim would add its own start-up)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}: pip install -e '.[test]'")
    return str(path)


def compiled_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) without PYTHONDONTWRITEBYTECODE: the modules are byte-compiled."""
    return {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process; exits if it fails.

    The peak comes from GNU time's ``%M``, not from our own wait4(): a child forked from this
    (large) Python process inherits its RSS high-water mark, which would hide the real peak.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        result = subprocess.run([TIME, "-f", "%M", "-o", report.name, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=compiled_env(env), check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"{' '.join(argv[:3])}... failed ({result.returncode}):\n"
                     f"{result.stdout.decode(errors='replace')[-3000:]}")
        return elapsed, int(report.read().split()[-1])


def agent_side(workdir: Path, names: list[str], db_url: str | None = None) -> list[str]:
    """The store and install.toml of 20 installed certificates; return the no-op command."""
    from lecentral_testing.agent import AgentWorld

    world = AgentWorld(workdir, db_url=db_url)
    for name in names:
        world.add(name, key="ec256")
        world.issue(name, days=90)
    world.write_config(*(world.entry(name) for name in names))
    world.close()
    argv = [script("lecentral-install"), "--config", str(world.config_path), "run", "--quiet"]
    measure(argv)  # the real first run: installs all of them
    # files written less than 2 s ago are not remembered as up to date (lecentral.install.uptodate)
    time.sleep(2.1)
    measure(argv)  # the first no-op: remembers them
    return argv


def certbot_side(workdir: Path, names: list[str], pebble: object) -> tuple[list[str], dict[str, str]]:
    """certbot lineages for ``names`` from Pebble; return the no-op renew command and its env."""
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}  # type: ignore[attr-defined]
    dirs = ["--config-dir", str(workdir / "config"), "--work-dir", str(workdir / "work"),
            "--logs-dir", str(workdir / "logs")]
    certbot = script("certbot")
    for name in names:
        measure([certbot, "certonly", "--non-interactive", "--agree-tos", "-m", "ops@bench.test",
                 "--server", pebble.directory_url,  # type: ignore[attr-defined]
                 "--manual", "--preferred-challenges", "dns", "--manual-auth-hook", "true",
                 "--key-type", "ecdsa", "-d", name, *dirs], env)
    return [certbot, "renew", "--non-interactive", *dirs], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20, help="certificates on each side (default 20)")
    parser.add_argument("-r", "--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--backend", choices=("sqlite", "mariadb"), default="sqlite",
                        help="the agent's database (default sqlite; mariadb: a throwaway server)")
    args = parser.parse_args()

    from lecentral_testing.pebble import PebbleServer

    names = [f"host{i}.bench.test" for i in range(1, args.n + 1)]
    workdir = Path(tempfile.mkdtemp(prefix="lecentral-bench-agent-"))
    try:
        with ExitStack() as stack:
            pebble = stack.enter_context(PebbleServer(workdir / "pebble",
                                                      env={"PEBBLE_VA_ALWAYS_VALID": "1"}))
            db_url = None
            if args.backend == "mariadb":
                from lecentral_testing.mariadb import MariaDBServer

                db_url = stack.enter_context(MariaDBServer(workdir / "mariadb")).url
            agent = agent_side(workdir / "agent", names, db_url)
            certbot, env = certbot_side(workdir / "certbot", names, pebble)
            measure(certbot, env)  # compiles what certbot's first runs did not
            runs: dict[str, list[tuple[float, int]]] = {"agent": [], "certbot": []}
            for _ in range(args.repeat):
                runs["agent"].append(measure(agent))
                runs["certbot"].append(measure(certbot, env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    wall = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    rss = {k: statistics.median(m for _, m in v) / 1024 for k, v in runs.items()}
    wall_ratio, memory_ratio = wall["agent"] / wall["certbot"], rss["agent"] / rss["certbot"]
    print(f"no-op with {args.n} certificates ({args.backend}), median of {args.repeat} fresh "
          f"processes each; load {os.getloadavg()[0]:.1f}")
    print(f"  lecentral-install run --quiet : {wall['agent']:6.3f} s  {rss['agent']:6.1f} MiB peak")
    print(f"  certbot renew                 : {wall['certbot']:6.3f} s  {rss['certbot']:6.1f} MiB peak")
    print(f"  ratio agent / certbot         : wall {wall_ratio:.2f}x (target <= {WALL_TARGET:.2f}x)   "
          f"memory {memory_ratio:.2f}x (target <= {MEMORY_TARGET:.2f}x)")
    missed = [f"wall {wall_ratio:.2f}x > {WALL_TARGET:.2f}x"] if wall_ratio > WALL_TARGET else []
    if memory_ratio > MEMORY_TARGET:
        missed.append(f"memory {memory_ratio:.2f}x > {MEMORY_TARGET:.2f}x")
    if missed:
        sys.exit(f"target missed: {', '.join(missed)}")
    print("targets met")


if __name__ == "__main__":
    main()
