#!/usr/bin/env python3
"""Benchmark: ``lecentral list`` and ``lecentral list --json`` over 100,000 certificates, under
two seconds each with flat memory (issue 16), on SQLite and on MariaDB.

The table is filled in bulk with bench_sweep.py's realistic rows (per name a real CSR naming it,
a certificate for it from a test CA, 90 days, issued 1 to 50 days ago, its chain and md5_ca),
each with its issuing CA recorded in lecentral_cert_settings as renew records it (one in a
hundred with an ACME profile set).
The facts a renew sweep records (lecentral/store/facts.py) are then written for every row from
what the bench knows of it (checked against ``facts.derive`` on a sample), as a sweep after the
upgrade would have left them: a first sweep parses every row, minutes at this size, and
bench_sweep.py measures it. Then ``--bad`` rows are changed behind lecentral's back (another
row's certificate stored into them, as a foreign writer could): ``list`` must read those again
and show them as BAD CERTIFICATE; the bench checks that it does, that every row is listed, and
that the order is the documented one.

Each command is a fresh process from the real console script, run ``--repeat`` times; the
median wall time, the CPU time (user + system) and the peak RSS (GNU time's %M) are printed with
the load average. Memory is flat when the peak RSS at ``--rows`` is within ``--rss-slack`` MiB of
the peak RSS over a ``--small``-row table of the same rows (the process's own size).

Peers, on the same table in the same run:

- ``--old-tree DIR``: the same commands run from another checkout of lecentral (e.g. ``git
  worktree add /tmp/old main``) put first on PYTHONPATH: the code path before this change;
- always: the naive loop, ``openssl x509 -noout -subject -enddate`` over the certificates as
  files, timed on ``--naive-sample`` of them and scaled to all (it only knows expiry).

Exits 1 when a command takes more than ``--budget`` seconds (2 s), when memory is not flat, or
when the output is wrong.

    python bench/bench_list.py                          # 100,000 rows, SQLite and MariaDB
    python bench/bench_list.py --rows 10000 --backend sqlite
    python bench/bench_list.py --old-tree /tmp/old-main   # with the previous code as a peer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench_sweep import material  # type: ignore[import-not-found]
from sqlalchemy import insert, update

from lecentral.names import pem_fingerprint
from lecentral.store import facts
from lecentral.store.rows import CertRow
from lecentral.store.schema import cert_facts, cert_settings, certs
from lecentral.store.sql import SqlStore

DAY = 86400
COMMANDS = {"list --json": ["list", "--json"], "list": ["list"]}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def known_facts(dialect: str, row: dict[str, Any]) -> dict[str, Any]:
    """The facts a sweep derives from a good row (state ok), from what the bench made it of."""
    start = row["ts_last_update"]
    return {"name": row["name"], **facts.signature(dialect, row), "state": "ok",
            "not_before": start, "not_after": row["ts_expire"],
            "fingerprint": pem_fingerprint(row["crt"]), "names": json.dumps([row["name"]]),
            "ts_checked": int(time.time())}


def fill(url: str, rows: list[dict[str, Any]], bad: int) -> list[str]:
    """``certs`` and the facts of every row, then ``bad`` rows changed by a foreign writer
    (another row's certificate: it does not cover the name). Returns their names."""
    store = SqlStore(url)
    store.init_schema()
    dialect = store.dialect
    for sample in rows[:: max(1, len(rows) // 20)]:  # the shortcut says what derive says
        derived = facts.derive(sample["name"], CertRow.from_db(sample))
        mine = known_facts(dialect, sample)
        if any(derived[k] != mine[k] for k in derived):
            sys.exit(f"bench facts differ from facts.derive: {derived} != {mine}")
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            chunk = rows[start:start + 1000]
            conn.execute(insert(certs), chunk)
            conn.execute(insert(cert_facts), [known_facts(dialect, r) for r in chunk])
            # as renew leaves them (lecentral >= 0004): the issuing CA of every certificate;
            # an ACME profile set for one row in a hundred
            conn.execute(insert(cert_settings), [
                {"name": r["name"], "issuer_ca": "default", "ts_changed": r["ts_last_update"],
                 "issuer_ca_directory": "https://acme.example.test/directory",
                 "profile": "shortlived" if (start + i) % 100 == 0 else None}
                for i, r in enumerate(chunk)])
        changed = [rows[i]["name"] for i in range(7, len(rows), max(1, len(rows) // bad))][:bad] \
            if bad else []
        for name in changed:
            conn.execute(update(certs).where(certs.c.name == name)
                         .values(crt=rows[0]["crt"] if name != rows[0]["name"] else rows[1]["crt"]))
    store.close()
    return changed


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, bytes]:
    """(wall s, CPU s, peak RSS MiB, stdout) of one fresh process (GNU time)."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *argv], capture_output=True,
                          check=False, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]!r}")
    user, system, peak = done.stderr.decode().strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(peak) / 1024, done.stdout


def median_of(argv: list[str], repeat: int,
              env: dict[str, str] | None = None) -> tuple[float, float, float, bytes]:
    runs = [timed(argv, env) for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            max(r[2] for r in runs), runs[-1][3])


def check_output(what: str, out: bytes, rows: list[dict[str, Any]], changed: list[str]) -> str:
    """'' when the listing is right (every row, the changed ones BAD, in order), else why not."""
    names = {r["name"] for r in rows}
    if what == "list --json":
        items = json.loads(out)
        days = [(i["days_left"] is not None, i["days_left"] or 0, i["name"]) for i in items]
        if days != sorted(days):
            return "not sorted by (never issued first, days left, name)"
        if {i["name"] for i in items} != names or len(items) != len(rows):
            return f"{len(items)} items for {len(rows)} rows"
        bad = sorted(i["name"] for i in items if i["certificate_problems"] or i["invalid"])
        if bad != sorted(changed):
            return f"rows shown bad: {bad[:5]}..., changed: {sorted(changed)[:5]}..."
        return ""
    lines = out.decode().splitlines()
    if len(lines) != len(rows) + 1:
        return f"{len(lines)} lines for {len(rows)} rows"
    bad = sorted(line.split()[0] for line in lines if "BAD CERTIFICATE" in line)
    if bad != sorted(changed):
        return f"rows shown BAD CERTIFICATE: {bad[:5]}..., changed: {sorted(changed)[:5]}..."
    return ""


def naive(rows: list[dict[str, Any]], tmp: Path, sample: int) -> float:
    """Seconds ``openssl x509 -noout -subject -enddate`` takes over every row, scaled."""
    files = []
    for i, row in enumerate(rows[:sample]):
        path = tmp / f"naive{i}.pem"
        path.write_bytes(row["crt"])
        files.append(path)
    started = time.perf_counter()
    for path in files:
        subprocess.run(["openssl", "x509", "-noout", "-subject", "-enddate", "-in", str(path)],
                       capture_output=True, check=True)
    return (time.perf_counter() - started) / len(files) * len(rows)


def bench(label: str, url: str, small_url: str, rows: list[dict[str, Any]], tmp: Path,
          args: argparse.Namespace) -> bool:
    started = time.perf_counter()
    changed = fill(url, rows, args.bad)
    fill(small_url, rows[:args.small], 0)
    n = len(rows)
    print(f"\n== {label}: {n} rows and their facts filled in {time.perf_counter() - started:.1f} s"
          f"; {len(changed)} changed since by a foreign writer (must be BAD); {load()}")
    exe = str(Path(sysconfig.get_path("scripts")) / "lecentral")
    ok = True
    for what, cmd in COMMANDS.items():
        toml, small_toml = tmp / f"{label}.toml", tmp / f"{label}-small.toml"
        toml.write_text(f'[database]\nurl = "{url}"\n[renew]\nari = false\n')
        small_toml.write_text(f'[database]\nurl = "{small_url}"\n[renew]\nari = false\n')
        small = median_of([exe, "--config", str(small_toml), *cmd], 1)
        wall, cpu, peak, out = median_of([exe, "--config", str(toml), *cmd], args.repeat)
        wrong = check_output(what, out, rows, changed)
        flat = peak - small[2] <= args.rss_slack
        fast = wall <= args.budget
        ok &= fast and flat and not wrong
        print(f"lecentral {what:<12} {wall:6.2f} s (CPU {cpu:5.2f} s), peak RSS {peak:4.0f} MiB "
              f"({small[2]:.0f} MiB at {args.small} rows: {'flat' if flat else 'NOT FLAT'}); "
              f"{'OK' if fast else 'OVER'} the {args.budget:g} s target; "
              f"{'output right' if not wrong else 'WRONG: ' + wrong}; {load()}")
        if args.old_tree:
            env = {**os.environ, "PYTHONPATH": args.old_tree}
            code = "from lecentral.cli.central import main; main()"
            old = median_of([sys.executable, "-c", code, "--config", str(toml), *cmd], 1, env)
            print(f"  peer: the same from {args.old_tree}: {old[0]:6.2f} s (CPU {old[1]:5.2f} s),"
                  f" peak RSS {old[2]:4.0f} MiB: {old[0] / wall:.1f}x; {load()}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "mariadb", "both"), default="both")
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per command")
    parser.add_argument("--bad", type=int, default=100,
                        help="rows changed by a foreign writer after their facts were recorded")
    parser.add_argument("--small", type=int, default=1000,
                        help="rows of the table the peak RSS is compared with")
    parser.add_argument("--rss-slack", type=float, default=25.0,
                        help="MiB the peak RSS may grow from --small rows to --rows")
    parser.add_argument("--old-tree", help="a checkout of the previous lecentral, as a peer")
    parser.add_argument("--naive-sample", type=int, default=50)
    parser.add_argument("--buffer-pool-mb", type=int, default=512,
                        help="MariaDB's innodb_buffer_pool_size for the run (MB)")
    parser.add_argument("--keep", type=Path, help="keep the databases in this directory")
    args = parser.parse_args()
    now = int(time.time())
    started = time.perf_counter()
    rows = material(args.rows, now)
    print(f"made {args.rows} CSRs and certificates in {time.perf_counter() - started:.1f} s")
    ok = True
    with ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-list-")))
        seconds = naive(rows, tmp, args.naive_sample)
        print(f"naive loop `openssl x509 -noout -subject -enddate` per certificate file: "
              f"{seconds:.0f} s for {len(rows)} (timed on {args.naive_sample}, scaled); {load()}")
        if args.backend in ("sqlite", "both"):
            ok &= bench("sqlite", f"sqlite:///{tmp}/lecentral.db",
                        f"sqlite:///{tmp}/small.db", rows, tmp, args)
        if args.backend in ("mariadb", "both"):
            from lecentral_testing.mariadb import MariaDBServer

            server = stack.enter_context(MariaDBServer(tmp / "mariadb"))
            server.execute(f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool_mb << 20}")
            small_url = server.create_database("small")
            ok &= bench("mariadb", server.url, small_url, rows, tmp, args)
    print("OK" if ok else "FAILED: a target is missed or the output is wrong")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
