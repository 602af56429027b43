"""Two ``lecentral renew`` at once on one MariaDB database: each certificate is ordered once.

Two real processes, started together against a database of the session's MariaDB (GET_LOCK) and
the shared Pebble + BIND world; the database's renew lock lets one of them work while the other
finds the lock taken (or, if it comes second, finds nothing due any more).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from renew_world import SPARE, World, add_row, make_config, open_store, write_toml


def test_two_renews_at_once_order_each_certificate_once(dns_world: World, mariadb_url: str,
                                                        tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, db_url=mariadb_url)
    store = open_store(config)
    names = SPARE[:4]
    for name in names:
        add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    lecentral = shutil.which("lecentral")
    assert lecentral is not None
    argv = [lecentral, "--config", str(toml), "-v", "renew", "--once", "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"}) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    reports = [json.loads(out) for out, _ in results]
    issued = [c["name"] for r in reports for c in r["certificates"] if c["status"] == "issued"]
    assert sorted(issued) == sorted(names)  # every name issued, and by one process only
    orders = [line for _, err in results for line in err.splitlines() if ": order https://" in line]
    assert len(orders) == len(names)
    for name in names:
        assert [e.kind for e in store.events(name)].count("issued") == 1
    store.close()
