#!/usr/bin/env python3
"""Benchmark: 2,000 agents starting in the same minute against one MariaDB (max_connections 151).

One real MariaDB with its default ``max_connections``; ``--names`` certificates in it; each of
``--agents`` agents has its own install.toml, state directory and files target with a no-op
service, and runs the real ``lecentral-install run`` command in-process on one of ``--workers``
threads (lecentral_testing.crowd: a 2-core machine cannot start 2,000 Python processes in a
minute), each starting at a random moment within ``--window`` seconds. ``--busy N``: other
clients hold N of the server's connections during the run (a central host, monitoring, ...),
leaving fewer for the agents.

The same crowd runs twice, from fresh directories: with retry (``[database] retry_for``, 60 s by
default) and, as the peer, with retry off (``retry_for = 0``: what every agent did before). For
each: the database's connection peak (``Max_used_connections`` after ``FLUSH STATUS``), the
connections it refused, p50/p99 agent run time, retries taken, failures. Exits non-zero if any
agent failed with retry on (the target: every agent finishes).

    python bench/bench_agent_crowd.py                      # 2,000 agents, 300 threads, window 0
    python bench/bench_agent_crowd.py --busy 140           # a server already busy
    python bench/bench_agent_crowd.py --agents 500 --window 30
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql
from lecentral_testing.crowd import Crowd, CrowdResult
from lecentral_testing.mariadb import MariaDBServer


def status(db: MariaDBServer, name: str) -> int:
    [(_, value)] = db.execute(f"SHOW GLOBAL STATUS LIKE '{name}'")
    return int(value)


def hold(db: MariaDBServer, count: int) -> list[Any]:
    return [pymysql.connect(host="127.0.0.1", port=db.port, user=db.user, password=db.password,
                            ssl_disabled=True) for _ in range(count)]


def one_run(db: MariaDBServer, crowd: Crowd, args: argparse.Namespace,
            retry: dict[str, Any]) -> tuple[CrowdResult, int, int, int]:
    crowd.write_configs(args.agents, retry)
    db.execute("FLUSH STATUS")
    busy = hold(db, args.busy)
    try:
        result = crowd.run(args.window, workers=args.workers)
    finally:
        for connection in busy:
            connection.close()
    installed = sum(crowd.installed(i) for i in range(args.agents))
    return (result, status(db, "Max_used_connections"),
            status(db, "Connection_errors_max_connections"), installed)


def show(label: str, run: tuple[CrowdResult, int, int, int]) -> None:
    result, peak, refused, installed = run
    print(f"{label:<22} peak {peak:>4} conns  refused {refused:>6}  p50 {result.percentile(50):6.2f} s"
          f"  p99 {result.percentile(99):6.2f} s  retries {result.retries:>6}  failed "
          f"{len(result.failed):>5}  installed {installed:>5}  wall {result.wall:6.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--names", type=int, default=20, help="certificates in the database")
    parser.add_argument("--workers", type=int, default=300, help="threads running the agents")
    parser.add_argument("--window", type=float, default=0.0,
                        help="seconds over which the agents' start times are spread")
    parser.add_argument("--busy", type=int, default=0,
                        help="connections other clients hold during the run")
    parser.add_argument("--retry-for", type=float, default=60.0)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); {os.cpu_count()} "
          f"CPUs; {args.agents} agents, {args.workers} threads, window {args.window:g} s, "
          f"busy {args.busy}")
    with tempfile.TemporaryDirectory(prefix="bench-crowd-") as tmp, \
            MariaDBServer(Path(tmp) / "db") as db:
        [(max_connections,)] = db.execute("SELECT @@max_connections")
        print(f"MariaDB max_connections {max_connections}")
        url = db.create_database("crowd") + "?ssl_disabled=true"  # loopback: no TLS offered
        started = time.monotonic()
        crowd = Crowd(Path(tmp), url, agents=args.agents, names=args.names)
        print(f"set-up {time.monotonic() - started:.1f} s")
        try:
            with_retry = one_run(db, crowd, args, {"retry_for": args.retry_for})
            show(f"retry_for = {args.retry_for:g}", with_retry)
            without = one_run(db, crowd, args, {"retry_for": 0})
            show("retry off (peer)", without)
        finally:
            crowd.close()
    failed = len(with_retry[0].failed)
    print(f"failures: {failed} with retry vs {len(without[0].failed)} without "
          f"(of {args.agents}); peak connections {with_retry[1]} of {max_connections}")
    if failed or with_retry[3] < args.agents:
        print("TARGET MISSED: every agent must finish with its certificate in place", file=sys.stderr)
        return 1
    print("target met: every agent finished with its certificate in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
