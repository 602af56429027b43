#!/usr/bin/env python3
"""Benchmark: one certificate from a cold process, ``lecentral renew --once NAME`` vs certbot.

The world of bench_renew.py (BIND with a sub-zone per name, a forwarding resolver, Pebble with
``PEBBLE_VA_NOSLEEP=1`` and ``PEBBLE_AUTHZREUSE=0``, all on 127.0.0.1; its helpers are imported,
not copied). In one run, ``--rounds`` times each, alternately:

* ``lecentral renew --once NAME`` for one due DNS-01 certificate, a fresh process (start-up,
  imports, plugins, config, store, ACME account, order, DNS publish, propagation check,
  validation, finalize, save);
* ``certbot certonly --csr`` for one certificate with certbot-dns-rfc2136
  (``--dns-rfc2136-propagation-seconds 0``), a fresh process too.

Then one more ``lecentral renew --once NAME`` under ``python -X importtime``: the ten top-level
packages whose imports cost most are printed. Both sides run from byte-compiled modules, as
installed packages do (``PYTHONDONTWRITEBYTECODE`` is dropped for the measured processes; the
first, unmeasured round of each writes what is missing).

Target (issue 16): the median cold lecentral under 0.5 s; the script exits 1 above ``--limit``.

    python bench/bench_cold.py               # 5 rounds
    python bench/bench_cold.py -r 3 --no-certbot
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
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_renew import PARENT, add_rows, certbot_certonly, lecentral_config

LIMIT = 0.5


def compiled_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) without PYTHONDONTWRITEBYTECODE: the modules are byte-compiled."""
    return {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}


def script(name: str) -> str:
    """The real console script of this interpreter (a pyenv shim would add its own start-up)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}: pip install -e '.[test]'")
    return str(path)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of one process and its stderr; exits if it fails."""
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=compiled_env(env), check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stderr


def import_top(stderr: str, top: int = 10) -> list[tuple[str, float]]:
    """Self time (ms) of ``-X importtime`` summed per top-level package, the ``top`` largest."""
    per_package: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if self_us.isdigit():
            per_package[name.split(".")[0]] += int(self_us) / 1000
    return sorted(per_package.items(), key=lambda kv: -kv[1])[:top]


def rfc2136_ini(workdir: Path, bind: object) -> Path:
    from lecentral_testing.pki import write_private

    secret = bind.tsig_keys["acme-update"]  # type: ignore[attr-defined]
    return write_private(workdir / "rfc2136.ini", (
        f"dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = {bind.port}\n"  # type: ignore[attr-defined]
        f"dns_rfc2136_name = acme-update\ndns_rfc2136_secret = {secret}\n"
        "dns_rfc2136_algorithm = HMAC-SHA512\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--rounds", type=int, default=5, help="measured rounds [5]")
    parser.add_argument("--no-certbot", action="store_true", help="skip certbot")
    parser.add_argument("--limit", type=float, default=LIMIT, help=f"seconds [{LIMIT}]")
    args = parser.parse_args()

    from lecentral_testing.bind import BindServer
    from lecentral_testing.resolver import resolving_pebble

    rounds = args.rounds + 1  # the first, unmeasured, compiles and warms the page cache
    ours = [f"cold{i}.{PARENT}" for i in range(rounds + 1)]  # + the -X importtime run
    theirs = [f"cb{i}.{PARENT}" for i in range(rounds)]
    workdir = Path(tempfile.mkdtemp(prefix="lecentral-bench-cold-"))
    bind = BindServer(workdir / "dns", parent=PARENT, subzones=[*ours, *theirs])
    lecentral = script("lecentral")
    times: dict[str, list[float]] = {"lecentral": [], "certbot": []}
    try:
        with bind, resolving_pebble(workdir, bind, probe_name=PARENT) as (_, pebble):
            toml = lecentral_config(workdir, bind, pebble, workers=8)
            add_rows(toml, [*ours, *theirs], workdir / "csr")
            env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
            ini = rfc2136_ini(workdir, bind)
            out = workdir / "certbot-out"
            out.mkdir()
            for i in range(rounds):
                elapsed, _ = timed([lecentral, "--config", str(toml), "renew", "--once", ours[i]])
                if i:
                    times["lecentral"].append(elapsed)
                if args.no_certbot:
                    continue
                elapsed, _ = timed(certbot_certonly(
                    script("certbot"), pebble, workdir / "csr" / f"{theirs[i]}.csr", out,
                    workdir / "certbot", "--authenticator", "dns-rfc2136",
                    "--dns-rfc2136-credentials", str(ini), "--dns-rfc2136-propagation-seconds", "0",
                    email=f"hostmaster@{PARENT}"), env)
                if i:
                    times["certbot"].append(elapsed)
            _, stderr = timed([sys.executable, "-X", "importtime", lecentral, "--config", str(toml),
                               "renew", "--once", ours[-1]])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    cold = statistics.median(times["lecentral"])
    print(f"one certificate from a cold process, DNS-01, Pebble + BIND on 127.0.0.1; median of "
          f"{args.rounds}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  lecentral renew --once NAME : {cold:6.3f} s  (all: "
          f"{', '.join(f'{t:.2f}' for t in times['lecentral'])})")
    if times["certbot"]:
        theirs_median = statistics.median(times["certbot"])
        print(f"  certbot certonly --csr      : {theirs_median:6.3f} s  (all: "
              f"{', '.join(f'{t:.2f}' for t in times['certbot'])})")
        print(f"  ratio certbot / lecentral   : {theirs_median / cold:.1f}x")
    print("  imports of one cold run, self time per top-level package (-X importtime):")
    for package, ms in import_top(stderr):
        print(f"    {package:28s} {ms:7.1f} ms")
    if cold > args.limit:
        sys.exit(f"target missed: {cold:.3f} s > {args.limit} s")
    print(f"target met: {cold:.3f} s <= {args.limit} s")


if __name__ == "__main__":
    main()
