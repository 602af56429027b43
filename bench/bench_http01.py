#!/usr/bin/env python3
"""Benchmark: N certificates by HTTP-01 through each issuer, versus a plain certbot loop.

Brings up BIND (one sub-zone per name, A 127.0.0.1), nginx serving N sites, each from its own
webroot, on one port, and Pebble (PEBBLE_VA_NOSLEEP=1) validating HTTP-01 at that port, all on
127.0.0.1. Then, each in a fresh process and database:

(a) ``lecentral renew --once`` with ``[renew] http01_issuer = "webroot"`` (native ACME client,
    ``renew.workers`` at a time, one account);
(b) ``lecentral renew --once`` with ``http01_issuer = "certbot-webroot"`` (one certbot run per
    certificate; certbot locks its state directory, so the runs take turns);
(c) the seed's way: ``certbot certonly --webroot -w WEBROOT --csr CSR`` per name in a shell loop.

Prints the wall times, the per-certificate times and the ratios against (c).

    python bench/bench_http01.py            # N=20
    python bench/bench_http01.py -n 5       # quicker
    python bench/bench_http01.py --no-certbot
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench_renew import certbot_certonly, timed  # same directory: run as a script

if TYPE_CHECKING:
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer
    from lecentral_testing.webroot import WebrootSites

PARENT = "http.test"


def lecentral_config(workdir: Path, db: str, issuer: str, bind: BindServer, web: WebrootSites,
                     pebble: PebbleServer, workers: int) -> Path:
    """lecentral.toml for one issuer's run: its own SQLite database and certbot state."""
    from lecentral_testing.central import central_tables
    from lecentral_testing.tomlfile import write_toml

    tables = central_tables(workdir, pebble, bind, email=f"hostmaster@{PARENT}", database=db)
    tables["renew"] = {"workers": workers, "http01_issuer": issuer,
                       "state_dir": str(workdir / f"state-{db}")}
    tables["http01"] = {"port": web.port}
    tables["certbot"] = {"state_dir": str(workdir / f"certbot-{db}")}
    return write_toml(workdir / f"lecentral-{issuer}.toml", tables)


def add_rows(toml: Path, sites: dict[str, tuple[list[str], Path]], csr_dir: Path) -> None:
    """An enabled, due certbot='Y' row per site, its CSR made once and kept for the other runs."""
    from lecentral_testing.central import new_row
    from lecentral_testing.pki import make_csr

    from lecentral.config import load_central
    from lecentral.store.sql import SqlStore

    store = SqlStore(load_central(str(toml)).database.url)
    store.init_schema()
    csr_dir.mkdir(exist_ok=True)
    for names, webroot in sites.values():
        path = csr_dir / f"{names[0]}.csr"
        if not path.exists():
            path.write_bytes(make_csr(names)[0])
        store.add(new_row(path.read_bytes(), certbot=True, webroot_path=str(webroot)))
    store.close()


def certbot_loop(workdir: Path, sites: dict[str, tuple[list[str], Path]], csr_dir: Path,
                 pebble: PebbleServer) -> float:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    state = workdir / "certbot-loop"
    out = workdir / "certbot-out"
    out.mkdir()
    certbot = shutil.which("certbot") or sys.exit("certbot not found: pip install certbot")
    started = time.perf_counter()
    for names, webroot in sites.values():
        timed(certbot_certonly(certbot, pebble, csr_dir / f"{names[0]}.csr", out, state,
                               "--webroot", "-w", str(webroot), email=f"hostmaster@{PARENT}"), env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="number of certificates [20]")
    parser.add_argument("--workers", type=int, default=8, help="renew.workers [8]")
    parser.add_argument("--no-certbot", action="store_true",
                        help="skip the certbot-webroot issuer and the certbot loop")
    args = parser.parse_args()

    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer
    from lecentral_testing.ports import LOOPBACK
    from lecentral_testing.webroot import WebrootSites

    workdir = Path(tempfile.mkdtemp(prefix="lecentral-bench-http01-"))
    sites = {f"s{i}": ([f"h{i}.{PARENT}"], workdir / "sites" / f"s{i}")
             for i in range(1, args.n + 1)}
    names = [n for site, _ in sites.values() for n in site]
    lecentral = shutil.which("lecentral") or sys.exit("lecentral not found: pip install -e .")
    csr_dir = workdir / "csr"
    results: dict[str, float] = {}
    try:
        with BindServer(workdir / "dns", parent=PARENT, subzones=names) as bind, \
                WebrootSites(workdir / "web", sites) as web, \
                PebbleServer(workdir / "pebble", dns_server=(LOOPBACK, bind.port),
                             http_port=web.port) as pebble:
            issuers = ["webroot"] if args.no_certbot else ["webroot", "certbot-webroot"]
            for number, issuer in enumerate(issuers):
                toml = lecentral_config(workdir, f"db{number}", issuer, bind, web, pebble,
                                        args.workers)
                add_rows(toml, sites, csr_dir)
                results[issuer] = timed([lecentral, "--config", str(toml), "renew", "--once"])
            if not args.no_certbot:
                results["loop"] = certbot_loop(workdir, sites, csr_dir, pebble)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    n = args.n
    print(f"N = {n} certificates by HTTP-01, nginx + Pebble + BIND on 127.0.0.1, "
          f"{os.cpu_count()} cores")
    loop = results.get("loop")
    labels = {"webroot": f"(a) lecentral renew --once, webroot issuer, workers={args.workers}",
              "certbot-webroot": "(b) lecentral renew --once, certbot-webroot issuer",
              "loop": "(c) certbot certonly --webroot --csr loop"}
    for key, seconds in results.items():
        line = f"{labels[key]}: {seconds:8.2f} s  ({seconds / n:.3f} s/cert)"
        if loop is not None and key != "loop":
            line += f"  certbot loop / this: {loop / seconds:.1f}x"
        print(line)


if __name__ == "__main__":
    main()
