#!/usr/bin/env python3
"""Benchmark: ``lecentral fleet`` (the table and ``--json``), ``lecentral check`` and
``lecentral metrics --textfile`` over 100,000 certificates × 3 hosts, each under two seconds
(issue 16; issue 13's target was 10,000 × 3 under one second: ``-n 10000 --budget 1``).

The database (SQLite, or a throwaway MariaDB with ``--mariadb``) is filled in bulk with realistic
rows: real PEM certificates and CSRs, each naming its row (valid rows, whose facts a sweep
records as ``ok``; ``--distinct`` key pairs reused across the names), ``ts_last_update`` the issue time as
``save_issued`` writes it, 1 % of the names failing (their lifetime then comes from parsing the
certificate), 1 % stale on one host, one host silent for a few names, a renew run and three agent
runs. Each command is a fresh process from its real console script, run ``--repeat`` times; the
median wall and CPU seconds and the peak RSS (GNU time's %M) are printed and the script exits 1
if any is above ``--budget`` seconds, or if its peak RSS is more than ``--flat-slack`` MiB
above its peak on a table of ``--flat-base`` certificates (memory flat: not growing with the
number of certificates).

On MariaDB the commands are timed once the server has written back what the bench's bulk
writes left (dirty pages, undo history): right after 100,000 inserts its background threads
take a core of the two for a minute, which a server holding a fleet does not do between two
renew runs.

Each command is timed twice: before any renew sweep (every ``crt`` is read and fingerprinted, as
before migration 0006) and after one sweep recorded the facts of every row (the fingerprint is
then read from ``lecentral_cert_facts`` while the server's checksum of the stored crt is
unchanged; lecentral/store/facts.py). The second is the target.

The peer: no Nagios-style ``check_ssl_cert`` runs over a database, so the comparison is the naive
loop an admin would write, ``openssl x509 -enddate -noout`` over the same certificates written as
10,000 files. It is timed on ``--naive-sample`` of them and scaled to all (said in the output).

    python bench/bench_fleet.py                 # 100,000 × 3, SQLite
    python bench/bench_fleet.py -n 10000 --budget 1   # issue 13's size and target
    python bench/bench_fleet.py --mariadb       # the same on a local MariaDB (Debian's mariadb-server)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
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

from lecentral.certificates import Certificate, Csr, md5_ca
from lecentral.fleet.store import FleetStore, Run
from lecentral.names import pem_fingerprint
from lecentral.store.schema import certs, deployments
from lecentral.store.sql import SqlStore

DAY = 86400
HOSTS = ("web1", "web2", "web3")


def script(name: str) -> str:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}: pip install -e '.[test]'")
    return str(path)


def keys(count: int, now: int) -> list[tuple[Any, bytes, str]]:
    """(key, previous crt, its md5_modulus) for ``count`` EC keys."""
    made = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"key{i}.bench.test"
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        san = x509.SubjectAlternativeName([x509.DNSName(name)])
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(san, critical=False)
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        made.append((key, issue(key, name, now, 80)[0], Csr.load(csr).md5_modulus))
    return made


def issue(key: Any, name: str, now: int, age_days: float) -> tuple[bytes, int, int]:
    """(crt, notBefore, notAfter): a 90-day certificate for ``name``, ``age_days`` old."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    san = x509.SubjectAlternativeName([x509.DNSName(name)])
    start = dt.datetime.fromtimestamp(int(now - age_days * DAY), dt.UTC)
    end = start + dt.timedelta(days=90)
    crt = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
           .public_key(key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(start).not_valid_after(end)
           .add_extension(san, critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return crt, int(start.timestamp()), int(end.timestamp())


def csr_for(key: Any, name: str) -> bytes:
    """A CSR naming ``name`` (the row's own: a valid row, as the renew job wants it)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    san = x509.SubjectAlternativeName([x509.DNSName(name)])
    return (x509.CertificateSigningRequestBuilder().subject_name(subject)
            .add_extension(san, critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def fill(url: str, n: int, distinct: int, now: int) -> list[bytes]:
    """The rows (each with its own CSR and certificate naming it, on ``distinct`` keys: valid
    rows, whose facts a sweep records as ``ok``); returns each name's crt (for the naive loop)."""
    store = SqlStore(url)
    store.init_schema()
    material = keys(distinct, now)
    olds = {i: Certificate.load(m[1]) for i, m in enumerate(material)}
    rows, deps, crts = [], [], []
    rng = random.Random(13)
    for i in range(n):
        k = i % distinct
        key, old, md5 = material[k]
        name = f"n{i:05d}.bench.test"
        crt, not_before, not_after = issue(key, name, now, rng.uniform(1, 50))
        fingerprint = pem_fingerprint(crt)
        failing = rng.random() < 0.01
        rows.append({"name": name, "enable": "Y", "comment": None, "certbot": "N",
                     "csr": csr_for(key, name), "ca": crt, "crt": crt, "md5_modulus": md5,
                     "md5_ca": md5_ca(crt), "ts_expire": not_after,
                     "ts_last_update": now - 3600 if failing else not_before,
                     "count_fail_update": rng.choice([1, 2, 3]) if failing else 0,
                     "old_ca": old, "old_crt": old, "webroot_path": None})
        crts.append(crt)
        stale = rng.random() < 0.01
        for h, host in enumerate(HOSTS):
            installed = ((olds[k].fingerprint, olds[k].not_after) if stale and h == 1
                         else (fingerprint, not_after))
            silent = host == "web3" and i < 5
            deps.append({
                "name": name, "host": host, "entry": name, "service": "nginx",
                "installed_fp": installed[0], "installed_not_after": installed[1],
                "served_fp": installed[0], "served_not_after": installed[1],
                "served_names": json.dumps([name]), "served_key_md5": md5,
                "served_url": f"tls://{host}:443", "served_error": None, "ts_served": now - 600,
                "verify_urls": json.dumps([f"tls://{host}:443"]),
                "paths": json.dumps([f"/etc/ssl/{name}.pem"]),
                "result": "up-to-date", "message": "", "agent_version": "bench",
                "ts_reported": now - (5 * DAY if silent else 600), "db_user": None})
    with store.engine.begin() as conn:
        for start in range(0, n, 1000):
            conn.execute(insert(certs), rows[start:start + 1000])
        for start in range(0, len(deps), 1000):
            conn.execute(insert(deployments), deps[start:start + 1000])
    fleet = FleetStore(store)
    fleet.record_run(Run("renew", "central", now - 4000, now - 3600, 0, {"not-due": n}), "bench")
    for host in HOSTS[:2]:
        fleet.record_run(Run("agent", host, now - 700, now - 600, 0, {"up-to-date": n}), "bench")
    store.close()
    return crts


def drained(argv: list[str]) -> tuple[int, bytes, bytes]:
    """(exit status, the last 2,000 bytes of stdout, stderr) of ``argv``, its stdout read
    through a pipe as ``| cat > /dev/null`` reads it: in large reads, kept nowhere. (Until
    2026-12-04 ``subprocess.run(capture_output=True)``, whose 32 KiB reads into a list and
    join of ``fleet --json``'s 175 MB took about 0.3 s of the 2 cores beside the command
    timed: bench/README.md.)"""
    import threading

    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr
        err: list[bytes] = []
        reader = threading.Thread(target=lambda: err.append(stderr.read()))
        reader.start()
        tail = b""
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            tail = (tail + chunk)[-2000:]
        reader.join()
        return proc.wait(), tail, err[0]


def timed(argv: list[str], repeat: int, ok_codes: tuple[int, ...] = (0, 1, 2)
          ) -> tuple[float, float, float]:
    """(median seconds, peak RSS MiB, median CPU seconds: user + system) of ``argv`` as a fresh
    process under GNU time (the CPU seconds say more than the wall clock on a shared machine)."""
    times, peaks, cpus = [], [], []
    for _ in range(repeat):
        started = time.perf_counter()
        returncode, out, err = drained(["/usr/bin/time", "-f", "%M %U %S", *argv])
        times.append(time.perf_counter() - started)
        if returncode not in ok_codes:
            sys.exit(f"{' '.join(argv[-3:])} failed ({returncode}):\n"
                     f"{out.decode(errors='replace')}{err.decode(errors='replace')[-2000:]}")
        peak, user, system = err.decode().strip().splitlines()[-1].split()
        peaks.append(int(peak) / 1024)
        cpus.append(float(user) + float(system))
    return statistics.median(times), max(peaks), statistics.median(cpus)


def record_facts(url: str) -> float:
    """What a renew sweep records for every row (its facts), as the first sweep after
    ``lecentral upgrade`` does; the seconds it took."""
    from lecentral.config import RenewConfig

    store = SqlStore(url)
    started = time.perf_counter()
    store.record_facts(store.sweep(RenewConfig(), int(time.time())).rows)
    store.close()
    return time.perf_counter() - started


def settle(server: Any, limit: float = 180) -> float:
    """Wait until MariaDB has written back what the bench's bulk writes left (dirty pages,
    undo history to purge): its background threads would otherwise share the 2 cores with
    the commands timed next, which a server holding a fleet does not do between two renew
    runs. Returns the seconds waited (at most ``limit``)."""
    started = time.perf_counter()
    server.execute("SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001")
    previous = server.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")[0][0]
    server.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    try:
        while time.perf_counter() - started < limit:
            dirty = int(server.execute("SHOW GLOBAL STATUS LIKE "
                                       "'Innodb_buffer_pool_pages_dirty'")[0][1])
            history = int(server.execute(
                "SELECT count FROM information_schema.INNODB_METRICS "
                "WHERE name = 'trx_rseg_history_len'")[0][0])
            if dirty < 50 and history < 50:
                break
            time.sleep(1)
    finally:
        server.execute(f"SET GLOBAL innodb_max_dirty_pages_pct = {previous}")
    return time.perf_counter() - started


def naive(crts: list[bytes], workdir: Path, sample: int) -> tuple[float, int]:
    """``openssl x509 -enddate`` over certificate files, timed on ``sample`` of them."""
    files = []
    workdir.mkdir()
    for i, crt in enumerate(crts):
        path = workdir / f"n{i:05d}.pem"
        path.write_bytes(crt)
        files.append(path)
    chosen = files[:sample]
    started = time.perf_counter()
    for path in chosen:
        subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(path)],
                       capture_output=True, check=True)
    return (time.perf_counter() - started) * len(files) / len(chosen), len(chosen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="certificates (× 3 hosts)")
    parser.add_argument("--distinct", type=int, default=200, help="distinct key pairs")
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per command")
    parser.add_argument("--flat-base", type=int, default=1000,
                        help="certificates of the small table each command's peak RSS is "
                             "compared with (memory flat: not growing with the table)")
    parser.add_argument("--flat-slack", type=float, default=25,
                        help="MiB a command's peak RSS may exceed its peak on --flat-base")
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (to profile)")
    parser.add_argument("--mariadb", action="store_true", help="a local MariaDB instead of SQLite")
    parser.add_argument("--buffer-pool-mb", type=int, default=512,
                        help="MariaDB's innodb_buffer_pool_size for the run (MB)")
    args = parser.parse_args()
    now = int(time.time())
    with ExitStack() as stack:
        if args.keep:
            tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
            print(f"keeping {tmp}")
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        if args.mariadb:
            from lecentral_testing.mariadb import MariaDBServer

            server = stack.enter_context(MariaDBServer(tmp / "mariadb"))
            # the test world's 32 MB buffer pool cannot hold 100,000 rows × 3 (a server holding
            # them has its pool sized to its data)
            server.execute(f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool_mb << 20}")
            url = server.url
            base_url = server.create_database("lecentral_base")
        else:
            url = f"sqlite:///{tmp}/lecentral.db"
            base_url = f"sqlite:///{tmp}/base.db"
        started = time.perf_counter()
        crts = fill(url, args.n, args.distinct, now)
        print(f"filled {args.n} certificates × {len(HOSTS)} hosts ({url.split(':')[0]}) in "
              f"{time.perf_counter() - started:.1f} s")
        if args.mariadb:
            print(f"waited {settle(server):.0f} s for MariaDB to write back the bulk writes")
        config = tmp / "lecentral.toml"
        config.write_text(f'[database]\nurl = "{url}"\n')
        base = [script("lecentral"), "--config", str(config)]
        has_fleet = subprocess.run([*base, "fleet", "--help"], capture_output=True,
                                   check=False).returncode == 0
        commands = {
            "lecentral check": [*base, "check"],
            "lecentral metrics --textfile": [*base, "metrics", "--textfile", str(tmp / "l.prom")],
        }
        if has_fleet:
            commands["lecentral fleet"] = [*base, "fleet"]
            commands["lecentral fleet --json"] = [*base, "fleet", "--json"]
            commands["lecentral fleet --problems --json"] = [*base, "fleet", "--problems",
                                                             "--json"]
        before = {label: timed(argv, args.repeat) for label, argv in commands.items()}
        print(f"recorded the facts of every row (the first renew sweep's work) in "
              f"{record_facts(url):.1f} s")
        if args.mariadb:
            print(f"waited {settle(server):.0f} s for MariaDB to write back the bulk writes")
        results = {label: timed(argv, args.repeat) for label, argv in commands.items()}
        # memory flat: each command's peak RSS on a small table (facts recorded), to compare
        fill(base_url, args.flat_base, min(args.distinct, args.flat_base), now)
        record_facts(base_url)
        base_config = tmp / "base.toml"
        base_config.write_text(f'[database]\nurl = "{base_url}"\n')
        small = {label: timed([argv[0], "--config", str(base_config), *argv[3:]], 1)[1]
                 for label, argv in commands.items()}
        first = subprocess.run(commands["lecentral check"], capture_output=True, text=True,
                               check=False).stdout.splitlines()
        print(f"check says: {first[0][:160]}...")
        peer, sampled = naive(crts, tmp / "files", min(args.naive_sample, len(crts)))
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nload average now: {load} (on {os.cpu_count()} cores)")
        print(f"{'command':<36}{'median':>8}{'CPU':>8}{'peak RSS':>10}"
              f"{f'at {args.flat_base}':>10}   {'without facts':>24}")
        missed = False
        for label, (seconds, peak, cpu) in results.items():
            flag = "" if seconds <= args.budget else f"  OVER {args.budget:.1f} s"
            if peak > small[label] + args.flat_slack:
                flag += f"  NOT FLAT (+{peak - small[label]:.0f} MiB)"
            missed = missed or bool(flag)
            old_s, old_peak, old_cpu = before[label]
            print(f"{label:<36}{seconds:>7.2f}s{cpu:>7.2f}s{peak:>6.0f} MiB{small[label]:>6.0f} MiB"
                  f"   {old_s:>6.2f}s {old_cpu:>5.2f}s {old_peak:>5.0f} MiB"
                  f"   naive loop / this: {peer / seconds:.0f}x{flag}")
        if not has_fleet:
            print(f"{'lecentral fleet --json':<32}{'TODO':>10}  (no fleet command in this tree yet)")
        print(f"{'naive openssl x509 loop':<32}{peer:>9.2f}s  (timed on {sampled} files, scaled "
              f"to {len(crts)}; expiry only: no deployments, no failures)")
        return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
