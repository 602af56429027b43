#!/usr/bin/env python3
"""Benchmark: N certificates by DNS-01 with ``lecentral renew --once`` versus a certbot loop.

Brings up the local ACME world (BIND with N+1 updatable sub-zones, a forwarding resolver, Pebble
with PEBBLE_VA_NOSLEEP=1, all on 127.0.0.1) and, in one run:

(a) issues N certificates with one ``lecentral renew --once`` (a fresh process, wall time);
(b) issues the same N names with certbot + certbot-dns-rfc2136, one ``certbot certonly --csr``
    per name with ``--dns-rfc2136-propagation-seconds 0`` (what a cron loop over the seed's table
    would do);
(c) issues one more certificate with a cold ``lecentral renew --once NAME`` (new process).

Prints both wall times, their ratio and the per-certificate times. Targets (issue 3): N=50 at
least 20x faster than the certbot loop; one certificate cold under 1.0 s.

    python bench/bench_renew.py            # N=50
    python bench/bench_renew.py -n 10      # quicker
    python bench/bench_renew.py --no-certbot
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer

PARENT = "bench.test"


def lecentral_config(workdir: Path, bind: BindServer, pebble: PebbleServer, workers: int) -> Path:
    """lecentral.toml for the world: SQLite in workdir, ``workers`` orders at a time."""
    from lecentral_testing.central import central_tables
    from lecentral_testing.tomlfile import write_toml

    tables = central_tables(workdir, pebble, bind, email=f"hostmaster@{PARENT}")
    tables["renew"] = {"workers": workers, "state_dir": str(workdir / "state")}
    return write_toml(workdir / "lecentral.toml", tables)


def add_rows(toml: Path, names: list[str], csr_dir: Path) -> None:
    """A CSR file and an enabled, due row for each name (as ``lecentral add --enable`` makes it)."""
    from lecentral_testing.central import new_row
    from lecentral_testing.pki import make_csr

    from lecentral.config import load_central
    from lecentral.store.sql import SqlStore

    store = SqlStore(load_central(str(toml)).database.url)
    store.init_schema()
    csr_dir.mkdir(exist_ok=True)
    for name in names:
        pem, _ = make_csr([name])
        (csr_dir / f"{name}.csr").write_bytes(pem)
        store.add(new_row(pem))
    store.close()


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return elapsed


def certbot_certonly(certbot: str, pebble: PebbleServer, csr: Path, out: Path, state: Path,
                     *authenticator: str, email: str) -> list[str]:
    """argv of one ``certbot certonly --csr``, as a cron loop over the seed's table runs it."""
    name = csr.stem
    return [certbot, "certonly", "--non-interactive", "--agree-tos", "-m", email,
            "--server", pebble.directory_url, "--csr", str(csr),
            "--cert-path", str(out / f"{name}.crt"), "--chain-path", str(out / f"{name}.ca"),
            "--fullchain-path", str(out / f"{name}.full"),
            "--config-dir", str(state / "config"), "--work-dir", str(state / "work"),
            "--logs-dir", str(state / "logs"), *authenticator]


def certbot_loop(workdir: Path, names: list[str], csr_dir: Path, bind: BindServer,
                 pebble: PebbleServer) -> float:
    from lecentral_testing.pki import write_private

    secret = bind.tsig_keys["acme-update"]
    ini = write_private(workdir / "rfc2136.ini", (
        f"dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = {bind.port}\n"
        f"dns_rfc2136_name = acme-update\ndns_rfc2136_secret = {secret}\n"
        "dns_rfc2136_algorithm = HMAC-SHA512\n").encode())
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    state = workdir / "certbot"
    out = workdir / "certbot-out"
    out.mkdir()
    certbot = shutil.which("certbot") or sys.exit("certbot not found: pip install certbot "
                                                  "certbot-dns-rfc2136")
    started = time.perf_counter()
    for name in names:
        timed(certbot_certonly(certbot, pebble, csr_dir / f"{name}.csr", out, state,
                               "--authenticator", "dns-rfc2136", "--dns-rfc2136-credentials", str(ini),
                               "--dns-rfc2136-propagation-seconds", "0", email=f"hostmaster@{PARENT}"),
              env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50, help="number of certificates [50]")
    parser.add_argument("--workers", type=int, default=8, help="renew.workers [8]")
    parser.add_argument("--no-certbot", action="store_true", help="skip the certbot loop")
    args = parser.parse_args()

    from lecentral_testing.bind import BindServer
    from lecentral_testing.resolver import resolving_pebble

    workdir = Path(tempfile.mkdtemp(prefix="lecentral-bench-"))
    names = [f"h{i}.{PARENT}" for i in range(1, args.n + 1)]
    cold = f"cold.{PARENT}"
    bind = BindServer(workdir / "dns", parent=PARENT, subzones=[*names, cold])
    lecentral = shutil.which("lecentral") or sys.exit("lecentral not found: pip install -e .")
    try:
        with bind, resolving_pebble(workdir, bind, probe_name=PARENT) as (_, pebble):
            toml = lecentral_config(workdir, bind, pebble, args.workers)
            add_rows(toml, [*names, cold], workdir / "csr")
            a = timed([lecentral, "--config", str(toml), "renew", "--once", *names])
            b = None if args.no_certbot else certbot_loop(workdir, names, workdir / "csr", bind, pebble)
            c = timed([lecentral, "--config", str(toml), "renew", "--once", cold])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    n = args.n
    print(f"N = {n} certificates, DNS-01 into {n} sub-zones, Pebble + BIND on 127.0.0.1, "
          f"{os.cpu_count()} cores")
    print(f"(a) lecentral renew --once, workers={args.workers}: {a:8.2f} s  ({a / n:.3f} s/cert)")
    if b is not None:
        print(f"(b) certbot certonly --csr loop (dns-rfc2136): {b:8.2f} s  ({b / n:.3f} s/cert)")
        print(f"    ratio certbot / lecentral: {b / a:.1f}x  (target >= 20x)")
    print(f"(c) one certificate, cold lecentral renew --once NAME: {c:.2f} s  (target < 1.0 s)")


if __name__ == "__main__":
    main()
