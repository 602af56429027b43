#!/usr/bin/env python3
"""Benchmark: a renew sweep where nothing is due, over 100,000 rows, under one second on SQLite
and on MariaDB (issue 16).

The table is filled in bulk (one INSERT per 1,000 rows, not 100,000 ``lecentral add``) with
realistic rows: for each name a real CSR naming it, a certificate for it issued by a test CA
(90 days, issued 1 to 50 days ago: none due), the CA's chain, md5_ca, ts_expire = notAfter,
ts_last_update = notBefore, as ``save_issued`` writes them. One key pair serves every row (the
renew job compares each row's CSR, certificate and md5_modulus with each other, never rows with
rows).

What is measured, in one process, for each backend (``RenewJob.run`` with ``once``: the renew
lock, the start-of-run checks, the selection and the decisions; the same code ``lecentral renew
--once`` runs, without Python's start and the recording of the run in lecentral_runs, which
``bench_fleet.py`` measures):

- cold: the first sweep after ``lecentral upgrade`` to 0005: every row is parsed once and its
  facts are stored (lecentral/store/facts.py);
- warm (the target, median of ``--repeat``): SQL finds every row unchanged and outside its
  renewal window, nothing is parsed;
- peer: the path every run took before (and still takes with NAMEs or ``--force``): read every
  row and parse its CSR, certificate and chain, on the same table in the same run;
- and once, for the record, a whole ``lecentral renew --once`` process;
- ``lecentral list --json`` and ``lecentral list`` as fresh processes (target: 2 s each, issue
  16), before any sweep (every row read and parsed: their peer) and after (unchanged good rows
  read from the facts, without their blobs), with their peak RSS (GNU time's %M).

MariaDB runs with ``innodb_buffer_pool_size`` 512 MB (``--buffer-pool-mb``; the test world's
32 MB cannot hold the table), the same for the peer.

``[renew] ari = false`` in the bench's configuration: the sweep on dates alone. With a CA that
offers renewal information (ARI), the windows are kept in the database until the CA's
Retry-After and the sweep also skips the rows whose kept window is fresh and not yet due; the
rows whose window must be asked again are read (see docs/renew.md).

Peak memory is each process's maximum RSS (VmHWM; GNU time's %M for the commands).

    python bench/bench_sweep.py                         # 100,000 rows, SQLite and MariaDB
    python bench/bench_sweep.py --rows 10000 --backend sqlite
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert

from lecentral.certificates import Csr, md5_ca
from lecentral.config import CentralConfig, build
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.store.schema import certs
from lecentral.store.sql import SqlStore

DAY = 86400


def rss_mib() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would count the parent's at fork time)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def material(rows: int, now: int) -> list[dict[str, Any]]:
    """The rows: a CSR and a CA-issued certificate per name, none due."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench sweep CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(dt.datetime.fromtimestamp(now - 400 * DAY, dt.UTC))
          .not_valid_after(dt.datetime.fromtimestamp(now + 400 * DAY, dt.UTC))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    md5 = None
    rng = random.Random(16)
    made = []
    for i in range(rows):
        name = f"s{i:06d}.sweep.bench.test"
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        san = x509.SubjectAlternativeName([x509.DNSName(name)])
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(san, critical=False)
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        if md5 is None:
            md5 = Csr.load(csr).md5_modulus
        start = now - int(rng.uniform(1, 50) * DAY)
        crt = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(dt.datetime.fromtimestamp(start, dt.UTC))
               .not_valid_after(dt.datetime.fromtimestamp(start + 90 * DAY - 1, dt.UTC))
               .add_extension(san, critical=False)
               .sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        made.append({"name": name, "enable": "Y", "comment": None, "certbot": "N", "csr": csr,
                     "ca": ca_pem, "crt": crt, "md5_modulus": md5, "md5_ca": md5_ca(ca_pem),
                     "ts_expire": start + 90 * DAY - 1, "ts_last_update": start,
                     "count_fail_update": 0, "old_ca": None, "old_crt": None,
                     "webroot_path": None})
    return made


def fill(url: str, rows: list[dict[str, Any]]) -> None:
    store = SqlStore(url)
    store.init_schema()
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(insert(certs), rows[start:start + 1000])
    store.close()


class NoSweep:
    """The store as before migration 0006: no sweep, so the job reads and parses every row."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def sweep(self, renew: Any, now: int) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def child(mode: str, url: str, state_dir: str) -> None:
    """One sweep in this (fresh) process; prints its time, peak RSS and what it found as JSON."""
    config = build(CentralConfig, {"database": {"url": url},
                                   "acme": {"directory": "https://127.0.0.1:9/dir"},
                                   "renew": {"ari": False, "state_dir": state_dir}}, "", "bench")
    store = SqlStore(url)
    before = rss_mib()
    started = time.perf_counter()
    report = RenewJob(config, store if mode == "sweep" else NoSweep(store),
                      Registry.load(entrypoints=False)).run(RenewRequest(once=True))
    seconds = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for outcome in report.final:
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
    print(json.dumps({"seconds": seconds, "rss_mib": rss_mib(), "rss_before_mib": before,
                      "unchanged": report.unchanged, "statuses": statuses}))


def run_child(mode: str, url: str, state_dir: Path, rows: int, label: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--url", url,
                           "--state-dir", str(state_dir)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"{label} {mode} failed ({done.returncode}): {done.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    statuses = found["statuses"]
    if set(statuses) - {"not-due"} or found["unchanged"] + statuses.get("not-due", 0) != rows:
        sys.exit(f"{label} {mode}: expected {rows} not-due rows, got {found['unchanged']} "
                 f"unchanged and {statuses}")
    return found


def timed_process(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one fresh process (GNU time's %M), its output discarded."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[-2:])} failed ({done.returncode}): {done.stderr[-2000:]!r}")
    return seconds, int(done.stderr.decode().strip().splitlines()[-1]) / 1024


def bench(label: str, url: str, rows: list[dict[str, Any]], tmp: Path, repeat: int,
          budget: float, list_peer: bool = True) -> bool:
    started = time.perf_counter()
    fill(url, rows)
    n = len(rows)
    print(f"\n== {label}: {n} rows filled in {time.perf_counter() - started:.1f} s")
    state = tmp / f"{label}-state"
    toml = tmp / f"{label}.toml"
    toml.write_text(f'[database]\nurl = "{url}"\n[acme]\ndirectory = "https://127.0.0.1:9/dir"\n'
                    f'[renew]\nari = false\nstate_dir = "{state}"\n')
    exe = str(Path(sysconfig.get_path("scripts")) / "lecentral")
    listings = {"lecentral list --json": [exe, "--config", str(toml), "list", "--json"],
                "lecentral list": [exe, "--config", str(toml), "list"]}
    # the peer of list: before any sweep recorded facts, every row is read and parsed
    list_before = ({k: timed_process(v) for k, v in listings.items()} if list_peer
                   else {k: (float("nan"), float("nan")) for k in listings})
    cold = run_child("sweep", url, state, n, label)
    print(f"cold sweep (parses every row once, stores its facts): {cold['seconds']:7.2f} s   "
          f"peak RSS {cold['rss_mib']:.0f} MiB")
    warms = [run_child("sweep", url, state, n, label) for _ in range(repeat)]
    if any(w["unchanged"] != n for w in warms):
        sys.exit(f"{label}: a warm sweep read rows: {[n - w['unchanged'] for w in warms]}")
    warm = statistics.median(w["seconds"] for w in warms)
    warm_rss = max(w["rss_mib"] for w in warms)
    print(f"warm sweep (decided in SQL, nothing parsed), median of {repeat}: {warm:7.3f} s   "
          f"peak RSS {warm_rss:.0f} MiB (at start {warms[0]['rss_before_mib']:.0f} MiB)")
    peer = run_child("peer", url, state, n, label)
    print(f"peer: every row read and parsed (the path before):    {peer['seconds']:7.2f} s   "
          f"peak RSS {peer['rss_mib']:.0f} MiB")
    started = time.perf_counter()
    done = subprocess.run([exe, "--config", str(toml), "renew", "--once"],
                          capture_output=True, text=True, check=False)
    whole = time.perf_counter() - started
    said = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    print(f"whole `lecentral renew --once` process (exit {done.returncode}, with Python's start "
          f"and the run recorded for the fleet): {whole:.2f} s: {said}")
    list_ok = True
    for what, argv in listings.items():
        seconds, peak = timed_process(argv)
        old_s, old_peak = list_before[what]
        list_ok &= seconds <= 2.0
        print(f"{what:<24} {seconds:6.2f} s, peak RSS {peak:4.0f} MiB "
              f"({'OK' if seconds <= 2.0 else 'OVER'} the 2 s target); before the facts "
              f"(every row parsed): {old_s:6.2f} s, {old_peak:4.0f} MiB: {old_s / seconds:.0f}x")
    ok = warm <= budget and done.returncode == 0 and list_ok
    print(f"{label}: warm sweep {warm:.3f} s for {n} rows: "
          f"{'OK' if warm <= budget else 'OVER'} (target {budget:.1f} s); "
          f"peer / warm: {peer['seconds'] / warm:.0f}x; peak RSS warm / peer: "
          f"{warm_rss / peer['rss_mib']:.2f}; cold / peer: {cold['seconds'] / peer['seconds']:.2f}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "mariadb", "both"), default="both")
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds for a warm sweep")
    parser.add_argument("--buffer-pool-mb", type=int, default=512,
                        help="MariaDB's innodb_buffer_pool_size for the run (MB)")
    parser.add_argument("--no-list-peer", action="store_true",
                        help="skip timing list before the facts (every row parsed: minutes)")
    parser.add_argument("--child", choices=("sweep", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.state_dir)
        return 0
    now = int(time.time())
    started = time.perf_counter()
    rows = material(args.rows, now)
    print(f"made {args.rows} CSRs and certificates in {time.perf_counter() - started:.1f} s")
    ok = True
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sweep-")))
        if args.backend in ("sqlite", "both"):
            ok &= bench("sqlite", f"sqlite:///{tmp}/lecentral.db", rows, tmp, args.repeat,
                        args.budget, not args.no_list_peer)
        if args.backend in ("mariadb", "both"):
            from lecentral_testing.mariadb import MariaDBServer

            server = stack.enter_context(MariaDBServer(tmp / "mariadb"))
            # the test world's 32 MB buffer pool cannot hold a 100,000-row certs table (about
            # 250 MB): every scan would read it from the files again. A server holding 100,000
            # certificates has its pool sized to its data (MariaDB's default is 128 MB)
            server.execute(f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool_mb << 20}")
            ok &= bench("mariadb", server.url, rows, tmp, args.repeat, args.budget,
                        not args.no_list_peer)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
