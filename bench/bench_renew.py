#!/usr/bin/env python3
"""Benchmark: N certificates by DNS-01 with ``lecentral renew --once`` versus a certbot loop.

Brings up the local ACME world (BIND with N+1 updatable sub-zones, a forwarding resolver, Pebble
with PEBBLE_VA_NOSLEEP=1, all on 127.0.0.1) and, in one run:

(a) issues N certificates with one ``lecentral renew --once --json`` (a fresh process, wall
    time), R times (the later runs with --force: new orders for the same names), the median
    kept; where the time went is read from the report's ``phases`` (per certificate: zone test,
    account, order, DNS publish, propagation, CA validation, finalize + download, DNS removal,
    save; per run: select, the pass, and the rest: start-up and imports), with the CPU seconds
    of lecentral, Pebble and both nameds;
(b) issues the same N names (or the first K) with certbot + certbot-dns-rfc2136, one ``certbot
    certonly --csr`` per name with ``--dns-rfc2136-propagation-seconds 0`` (what a cron loop over
    the seed's table would do);
(c) issues one more certificate with a cold ``lecentral renew --once NAME`` (new process).

Prints the wall times, the phases, the CPU, and the ratio certbot / lecentral per certificate.
Target (issue 16): at least 100x; exits 1 below it (``--target``).

    python bench/bench_renew.py                     # N=50
    python bench/bench_renew.py -n 10 --repeat 1    # quicker
    python bench/bench_renew.py --certbot-sample 10 # certbot on 10 names, per certificate
    python bench/bench_renew.py --no-certbot --profile /tmp/spy.txt   # py-spy's samples of (a)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer

PARENT = "bench.test"
#: issue 16: a 50-certificate batch at least 100x a certbot loop, per certificate
TARGET = 100.0


def lecentral_config(workdir: Path, bind: BindServer, pebble: PebbleServer,
                     workers: int, processes: int = 1) -> Path:
    """lecentral.toml for the world: SQLite in workdir, ``workers`` orders at a time in each of
    ``processes`` processes."""
    from lecentral_testing.central import central_tables
    from lecentral_testing.tomlfile import write_toml

    tables = central_tables(workdir, pebble, bind, email=f"hostmaster@{PARENT}")
    tables["renew"] = {"workers": workers, "state_dir": str(workdir / "state")}
    if processes != 1:  # an older tree (--compare) does not know the key
        tables["renew"]["processes"] = processes
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


def compiled_env() -> dict[str, str]:
    """Our environment without PYTHONDONTWRITEBYTECODE, for the measured lecentral processes:
    installed packages are byte-compiled (certbot's are), and a checkout's modules are compiled
    once by :func:`compile_lecentral` (bench_cold.py and bench_agent_noop.py do the same)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_lecentral() -> None:
    """Byte-compile lecentral and its plugins where they are imported from (an editable install
    or a PYTHONPATH tree), as pip does when it installs a package."""
    import compileall
    import importlib.util
    from importlib.metadata import entry_points

    plugins = {ep.module.split(".")[0] for ep in entry_points(group="lecentral.plugins")}
    for package in sorted({"lecentral", *plugins}):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for where in spec.submodule_search_locations:
                compileall.compile_dir(where, quiet=1)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    return run(argv, env)[0]


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of a command that must succeed."""
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n"
                 f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: the per-certificate phases, in the order a certificate goes through them (lecentral.phases)
PHASES = [("dns_check", "zone update-permission test (RFC 2136 add+delete)"),
          ("account", "ACME directory + account (the first ones wait)"),
          ("order", "order creation (newOrder + authorizations)"),
          ("dns_publish", "DNS publish (RFC 2136 updates)"),
          ("propagation", "propagation check (every NS serves the TXT)"),
          ("validation", "CA validation wait (answer + authorization polling)"),
          ("finalize", "finalize + certificate download"),
          ("dns_remove", "DNS removal of the TXT (RFC 2136)"),
          ("save", "check, spool, save to the store")]


def phase_table(report: dict[str, Any], wall: float, workers: int) -> list[str]:
    """Where the time went, from ``lecentral renew --json``: per phase the mean per certificate
    and its share of the certificates' summed time; then the run's own phases and the rest of
    the process (start-up, imports, recording the run)."""
    issued = [c for c in report["attempts"] if c["status"] == "issued"]
    if len(issued) != len(report["attempts"]) or not issued:
        sys.exit(f"not every certificate was issued: {json.dumps(report['attempts'])[:3000]}")
    if "phases" not in issued[0]:  # an older lecentral (PYTHONPATH=its tree), for comparison
        return ["    (this lecentral's renew --json has no phases)"]
    n = len(issued)
    total = sum(c["seconds"] for c in issued)
    sums = {name: sum(c["phases"].get(name, 0.0) for c in issued) for name, _ in PHASES}
    other = total - sum(sums.values())
    # the worker thread's CPU in each phase (older trees: none): what a phase costs, while its
    # wall time is mostly its turn for the interpreter, the CA, the nameservers, the disk
    cpu = {name: sum(c.get("phases_cpu", {}).get(name, 0.0) for c in issued) for name, _ in PHASES}
    cpu_total = sum(c.get("cpu_seconds", 0.0) for c in issued)
    cpu_other = cpu_total - sum(cpu.values())

    def ms(seconds: float) -> str:
        return f"{seconds / n * 1000:7.1f} ms"

    lines = [(f"    per certificate (mean of {n}; {workers} workers overlap them, so the sum is "
              "not the wall time):"),
             f"      {'phase':<55} {'wall':>10}  {'share':>7}  {'CPU':>10}"]
    for name, what in PHASES:
        lines.append(f"      {what:<55} {ms(sums[name])}  {100 * sums[name] / total:5.1f} %  "
                     f"{ms(cpu[name])}")
    lines.append(f"      {'(between the phases)':<55} {ms(other)}  {100 * other / total:5.1f} %  "
                 f"{ms(cpu_other)}")
    lines.append(f"      {'one certificate, end to end':<55} {ms(total)}  {'':7}  {ms(cpu_total)}")
    run_phases = report.get("phases", {})
    inside = sum(run_phases.values())
    lines.append("    the run (wall):")
    for name, what in [("start_of_run", "start of run (spool, leftovers)"),
                       ("select", "selecting the due rows"),
                       ("issue", f"the pass: {n} certificates on {workers} workers")]:
        seconds = run_phases.get(name, 0.0)
        lines.append(f"      {what:<55} {seconds * 1000:7.1f} ms  {100 * seconds / wall:5.1f} %")
    rest = wall - inside
    lines.append(f"      {'process start-up, imports, recording the run':<55} {rest * 1000:7.1f} ms  "
                 f"{100 * rest / wall:5.1f} %")
    return lines


def compare(tree: str, pairs: int, lecentral: str, toml: Path, names: list[str],
            meter: CpuMeter) -> list[str]:
    """Run (a) alternately with this tree and with ``tree`` (an older lecentral, e.g. a ``git
    archive`` of main, first on PYTHONPATH), ``pairs`` times each, who goes first alternating;
    the medians of the wall time and of each process's CPU, side by side."""
    import compileall
    import statistics

    compileall.compile_dir(str(Path(tree) / "lecentral"), quiet=1)
    envs = {"this tree": compiled_env(),
            tree: {**compiled_env(), "PYTHONPATH": os.pathsep.join(
                p for p in (tree, os.environ.get("PYTHONPATH")) if p)}}
    # the older tree reads the same configuration without the keys it does not know
    old_toml = toml.with_name("lecentral-compared.toml")
    old_toml.write_text("".join(line for line in toml.read_text().splitlines(keepends=True)
                                if not line.startswith("processes")))
    tomls = {"this tree": toml, tree: old_toml}

    def argv(who: str, *force: str) -> list[str]:
        return [lecentral, "--config", str(tomls[who]), "renew", "--once", "--json", *force,
                *names]

    run(argv("this tree"), envs["this tree"])  # the first issuance of every name: not measured
    results: dict[str, list[tuple[float, dict[str, float]]]] = {who: [] for who in envs}
    for number in range(pairs):
        order = list(envs) if number % 2 == 0 else list(envs)[::-1]
        for who in order:
            before = meter.now()
            wall, _ = run(argv(who, "--force"), envs[who])
            results[who].append((wall, meter.since(before)))
    lines = []
    for who, got in results.items():
        wall = statistics.median(w for w, _ in got)
        cpu = {what: statistics.median(c[what] for _, c in got) for what in got[0][1]}
        parts = ", ".join(f"{what} {seconds:.2f} s" for what, seconds in cpu.items())
        lines.append(f"    {who:<30} wall {wall:.2f} s (" + ", ".join(f"{w:.2f}" for w, _ in got)
                     + f"); CPU {parts}")
    lines.append(f"    load {os.getloadavg()[0]:.2f} after the pairs")
    return lines


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


class CpuMeter:
    """CPU seconds of this script's children (lecentral, certbot) and of the world's servers."""

    def __init__(self, servers: dict[str, int | None]) -> None:
        self.servers = servers

    def now(self) -> dict[str, float]:
        return {"client": children_cpu(),
                **{who: cpu_seconds(pid) for who, pid in self.servers.items()}}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {who: seconds - before[who] for who, seconds in self.now().items()}


def cpu_line(what: str, cpu: dict[str, float], wall: float, n: int) -> str:
    parts = ", ".join(f"{who} {seconds:.2f} s" for who, seconds in cpu.items())
    return (f"    CPU during {what}: {parts}; together {sum(cpu.values()):.2f} s of {wall:.2f} s "
            f"wall; client {cpu['client'] / n * 1000:.1f} ms/cert")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50, help="number of certificates [50]")
    parser.add_argument("--workers", type=int, default=None,
                        help="renew.workers [lecentral's default]")
    parser.add_argument("--processes", type=int, default=None,
                        help="renew.processes [lecentral's default]")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="run (a) R times (then with --force) and take the median [3]")
    parser.add_argument("--certbot-sample", type=int, default=None, metavar="K",
                        help="time certbot on the first K names only and compare per "
                             "certificate [all N]")
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"minimum ratio certbot/lecentral per certificate [{TARGET:g}]")
    parser.add_argument("--profile", metavar="FILE",
                        help="sample (a) with py-spy (pip install py-spy) into FILE (collapsed "
                             "stacks, threads holding the GIL) to see where lecentral's CPU goes")
    parser.add_argument("--compare", metavar="TREE",
                        help="also run (a) with the lecentral of TREE (e.g. a git archive of "
                             "main) on PYTHONPATH, interleaved with this tree's runs, and print "
                             "both medians")
    parser.add_argument("--no-certbot", action="store_true",
                        help="skip the certbot loop (no ratio: exits 0)")
    args = parser.parse_args()

    from lecentral_testing.bind import BindServer
    from lecentral_testing.resolver import resolving_pebble

    from lecentral.config import RenewConfig

    workers = args.workers or RenewConfig().workers
    processes = args.processes or RenewConfig().processes
    compile_lecentral()
    workdir = Path(tempfile.mkdtemp(prefix="lecentral-bench-"))
    names = [f"h{i}.{PARENT}" for i in range(1, args.n + 1)]
    sample = names[:args.certbot_sample] if args.certbot_sample else names
    cold = f"cold.{PARENT}"
    bind = BindServer(workdir / "dns", parent=PARENT, subzones=[*names, cold])
    lecentral = shutil.which("lecentral") or sys.exit("lecentral not found: pip install -e .")
    load_before = os.getloadavg()[0]
    runs: list[tuple[float, dict[str, Any], dict[str, float]]] = []
    b = None
    try:
        with bind, resolving_pebble(workdir, bind, probe_name=PARENT) as (resolver, pebble):
            toml = lecentral_config(workdir, bind, pebble, workers, processes)
            add_rows(toml, [*names, cold], workdir / "csr")
            meter = CpuMeter({"Pebble": pebble.pid, "BIND": bind.pid,
                              "resolver": resolver.pid})
            if args.compare:
                compared = compare(args.compare, args.repeat, lecentral, toml, names, meter)
            for number in range(max(1, args.repeat)):
                argv = [lecentral, "--config", str(toml), "renew", "--once", "--json", *names]
                if number or args.compare:
                    argv.insert(-len(names), "--force")  # the same names again, new orders
                if args.profile and number == 0:
                    spy = shutil.which("py-spy") or sys.exit("py-spy not found: pip install py-spy")
                    argv = [spy, "record", "-r", "200", "--gil", "-f", "raw", "-o", args.profile,
                            "--", *argv]
                before = meter.now()
                wall, out = run(argv, compiled_env())
                # py-spy may print too: the report is the JSON document
                report = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]
                runs.append((wall, report, meter.since(before)))
            if not args.no_certbot:
                before = meter.now()
                b = certbot_loop(workdir, sample, workdir / "csr", bind, pebble)
                certbot_cpu = meter.since(before)
            c = timed([lecentral, "--config", str(toml), "renew", "--once", cold], compiled_env())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    n = args.n
    walls = sorted(r[0] for r in runs)
    a, report, cpu = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    print(f"N = {n} certificates, DNS-01 into {n} sub-zones, Pebble + BIND on 127.0.0.1, "
          f"{os.cpu_count()} cores, load {load_before:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(f"(a) lecentral renew --once, workers={workers}, processes={processes}: {a:8.2f} s  ({a / n:.4f} s/cert), "
          f"median of {len(runs)}: " + ", ".join(f"{w:.2f}" for w in walls) + " s")
    for line in phase_table(report, a, workers):
        print(line)
    print(cpu_line("(a)", cpu, a, n))
    if args.compare:
        print(f"(a') interleaved with {args.compare} (PYTHONPATH), {args.repeat} pair(s), "
              "each a renew --once --force of the N names:")
        for line in compared:
            print(line)
    print(f"(c) one certificate, cold lecentral renew --once NAME: {c:.2f} s")
    if b is None:
        return
    k = len(sample)
    print(f"(b) certbot certonly --csr loop (dns-rfc2136), {k} names: {b:8.2f} s  "
          f"({b / k:.3f} s/cert)")
    print(cpu_line("(b)", certbot_cpu, b, k))
    print(f"    CPU per certificate, certbot / lecentral: "
          f"{certbot_cpu['client'] / k / (cpu['client'] / n):.1f}x")
    ratio = (b / k) / (a / n)
    print(f"    ratio certbot / lecentral per certificate: {ratio:.1f}x  (target >= {args.target:g}x)")
    if ratio < args.target:
        print(f"TARGET MISSED: {ratio:.1f}x < {args.target:g}x")
        sys.exit(1)


if __name__ == "__main__":
    main()
