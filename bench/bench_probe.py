#!/usr/bin/env python3
"""Benchmark: ``lecentral probe`` of 1,000 endpoints on loopback, versus ``openssl s_client``.

The world, on 127.0.0.1 (dynamic ports), in a temp dir:

* ``--names`` certificates (200 by default), each self-signed for its own key and stored in an
  SQLite database as a renew would (``save_issued``);
* ``--servers`` real nginx instances (5), each serving every name as its own virtual host (SNI
  picks the certificate);
* an agent report per (name, server) with that server's verify URL: names x servers endpoints.

Then ``lecentral probe --json`` runs once, end to end (a fresh process from its console script:
start-up, plugin scan, the store, 1,000 TLS handshakes, saving, judging), and every endpoint must
come back ``current``. The peer does the same job the way a shell loop would: ``openssl s_client
-servername NAME -connect HOST:PORT`` one endpoint after the other, over a sample (``--sample``,
50), whose per-endpoint time is compared with lecentral's.

Target (issue 13): 1,000 endpoints in under 10 s; the script exits 1 above ``--limit`` (10 s).

    python bench/bench_probe.py                    # 200 names x 5 servers = 1,000 endpoints
    python bench/bench_probe.py --names 20         # quicker: 100 endpoints
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from lecentral_testing.daemons import NginxServer
from lecentral_testing.daemons.certs import write_cert_files
from lecentral_testing.pki import make_csr

from lecentral.certificates import Certificate, Csr, now_ts
from lecentral.fleet.store import Deployment, FleetStore, Run
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore


def script(name: str) -> str:
    """The real console script of this interpreter (a pyenv shim would add its own start-up)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}: pip install -e '.[test]'")
    return str(path)


def build_world(base: Path, names: int, servers: int, stack: ExitStack) -> tuple[Path, list[tuple[str, str, int]]]:
    """The database, the nginx servers and the agents' reports; return the config and the
    endpoints as (name, host, port)."""
    from cryptography.hazmat.primitives import serialization

    db = base / "lecentral.db"
    store = SqlStore(f"sqlite:///{db}")
    store.init_schema()
    now = now_ts()
    vhosts = {}
    for i in range(names):
        name = f"site{i:04d}.bench.test"
        files = write_cert_files(base / "certs" / name, [name])
        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        csr, _ = make_csr([name], key)
        store.add(CertRow(name=name, csr=csr, md5_modulus=Csr.load(csr).md5_modulus, enable=True,
                          ts_expire=1, ts_last_update=1, count_fail_update=0))
        pem = files.cert.read_bytes()
        store.save_issued(name, pem, pem, Certificate.load(pem).not_after, now)
        vhosts[name] = (files.fullchain, files.key)
    default = write_cert_files(base / "certs" / "default", ["localhost"])
    ports = []
    for s in range(servers):
        nginx = NginxServer(base / f"nginx{s}", cert=default.fullchain, key=default.key, vhosts=vhosts)
        stack.enter_context(nginx)
        ports.append(nginx.ports["https"])
    fleet = FleetStore(store)
    endpoints = []
    for name in vhosts:
        items = []
        for s, port in enumerate(ports):
            items.append(Deployment(
                name=name, entry=f"nginx{s}", service="nginx", installed_fp=None,
                installed_not_after=None, served_fp=None, served_not_after=None, served_names=None,
                served_key_md5=None, served_url=None, served_error=None, ts_served=None,
                verify_urls=[f"tls://127.0.0.1:{port}"], paths=[], result="unchanged", message=""))
            endpoints.append((name, "127.0.0.1", port))
        fleet.report("127.0.0.1", items, Run("agent", "127.0.0.1", now, now, 0, {}), "bench", now)
    store.close()
    config = base / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    return config, endpoints


def run_lecentral(config: Path, expected: int) -> float:
    argv = [script("lecentral"), "--config", str(config), "probe", "--json"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"lecentral probe failed ({result.returncode}):\n{result.stderr.decode()[-3000:]}")
    rows = json.loads(result.stdout)["endpoints"]
    bad = [r for r in rows if r["state"] != "current"]
    if len(rows) != expected or bad:
        sys.exit(f"lecentral probe: {len(rows)} endpoints (expected {expected}), "
                 f"{len(bad)} not current, e.g. {bad[:2]}")
    return elapsed


def run_openssl(sample: list[tuple[str, str, int]]) -> float:
    openssl = shutil.which("openssl") or sys.exit("openssl is needed: apt-get install openssl")
    started = time.perf_counter()
    for name, host, port in sample:
        result = subprocess.run([openssl, "s_client", "-servername", name, "-connect", f"{host}:{port}"],
                                stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if b"BEGIN CERTIFICATE" not in result.stdout and b"Server certificate" not in result.stdout:
            sys.exit(f"openssl s_client {name} {host}:{port} read no certificate:\n"
                     f"{result.stdout.decode(errors='replace')[-1000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=200, help="certificates [200]")
    parser.add_argument("--servers", type=int, default=5, help="nginx instances serving every name [5]")
    parser.add_argument("--sample", type=int, default=50, help="endpoints for the openssl loop [50]")
    parser.add_argument("--limit", type=float, default=10.0, help="seconds allowed for the probe [10]")
    args = parser.parse_args()
    with ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-probe-")))
        os.chmod(base, 0o755)
        started = time.perf_counter()
        config, endpoints = build_world(base, args.names, args.servers, stack)
        total = len(endpoints)
        print(f"world: {args.names} names x {args.servers} nginx = {total} endpoints "
              f"({time.perf_counter() - started:.1f} s to set up)")
        took = run_lecentral(config, total)
        step = max(1, total // max(1, args.sample))
        sample = endpoints[::step][:args.sample]
        peer = run_openssl(sample)
    ours, theirs = took / total, peer / len(sample)
    print(f"lecentral probe: {total} endpoints in {took:.2f} s ({ours * 1000:.2f} ms/endpoint, "
          f"end to end, one process)")
    print(f"openssl s_client loop: {len(sample)} endpoints in {peer:.2f} s "
          f"({theirs * 1000:.2f} ms/endpoint)")
    print(f"per-endpoint ratio (openssl loop / lecentral): {theirs / ours:.1f}x")
    if took > args.limit:
        print(f"FAIL: {took:.2f} s is over the {args.limit:g} s target", file=sys.stderr)
        return 1
    print(f"OK: under {args.limit:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
