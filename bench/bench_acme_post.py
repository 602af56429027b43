#!/usr/bin/env python3
"""Benchmark: the client's CPU for one signed ACME request (POST-as-GET of the account) to Pebble.

A certificate is 7-8 such requests; this measures the cost of one in lecentral's client
(:class:`lecentral.acme.network.SafeNetwork`: JWS, requests, urllib3, TLS, the answer's checks),
as CPU seconds of the thread (``time.thread_time``), so the other processes on the machine
matter less than to wall times. With ``--compare TREE`` the same is measured with the
lecentral of TREE (first on ``PYTHONPATH``; e.g. a ``git archive`` of an older commit), the two
interleaved, and the script exits 1 unless this tree takes at most ``--target`` of TREE's time.

    python bench/bench_acme_post.py                      # this tree
    git archive main lecentral | tar -x -C /tmp/old
    python bench/bench_acme_post.py --compare /tmp/old   # side by side, 3 pairs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(requests_per_round: int, rounds: int) -> dict[str, float]:
    """Median and best client CPU per request, over ``rounds`` of ``requests_per_round``."""
    import josepy
    from acme import client, messages
    from cryptography.hazmat.primitives.asymmetric import ec
    from lecentral_testing.pebble import PebbleServer

    from lecentral.acme.network import SafeNetwork

    with PebbleServer().start() as pebble:
        jwk = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = SafeNetwork(jwk, alg=josepy.ES256, verify=str(pebble.ca_bundle), user_agent="bench")
        directory = messages.Directory.from_json(net.get(pebble.directory_url).json())
        acme = client.ClientV2(directory, net)
        account = acme.new_account(messages.NewRegistration.from_data(
            email="bench@bench.test", terms_of_service_agreed=True))
        per_request = []
        for number in range(rounds + 1):
            started = time.thread_time()
            for _ in range(requests_per_round):
                net.post(account.uri, None, new_nonce_url=directory["newNonce"])
            if number:  # the first round warms the connection and the caches up
                per_request.append((time.thread_time() - started) / requests_per_round)
        net.session.close()
    return {"median": statistics.median(per_request), "best": min(per_request)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="requests per round [300]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, the median kept [5]")
    parser.add_argument("--compare", metavar="TREE", help="an older lecentral tree, interleaved")
    parser.add_argument("--pairs", type=int, default=3, help="pairs with --compare [3]")
    parser.add_argument("--target", type=float, default=0.9,
                        help="with --compare: at most this share of TREE's CPU [0.9]")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.n, args.rounds)))
        return 0
    if not args.compare:
        result = measure(args.n, args.rounds)
        print(f"client CPU per signed request: median {result['median'] * 1e6:.0f} us, best "
              f"{result['best'] * 1e6:.0f} us (load {os.getloadavg()[0]:.2f})")
        return 0
    argv = [sys.executable, __file__, "--json", "-n", str(args.n), "--rounds", str(args.rounds)]
    old_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.abspath(args.compare), *filter(None, [os.environ.get("PYTHONPATH")])])}
    runs: dict[str, list[float]] = {"this tree": [], args.compare: []}
    for pair in range(args.pairs):
        order = [("this tree", None), (args.compare, old_env)]
        for label, env in (order if pair % 2 == 0 else order[::-1]):
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
            runs[label].append(json.loads(out)["median"])
    for label, values in runs.items():
        shown = ", ".join(f"{v * 1e6:.0f}" for v in values)
        print(f"{label:30s} client CPU per signed request: {statistics.median(values) * 1e6:.0f} us "
              f"(pairs: {shown})")
    ratio = statistics.median(runs["this tree"]) / statistics.median(runs[args.compare])
    print(f"this tree / {args.compare}: {ratio:.2f} (target <= {args.target}); "
          f"load {os.getloadavg()[0]:.2f}")
    return 0 if ratio <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
