"""Several ``lecentral renew`` at once on one MariaDB database: each certificate is ordered once.

Real processes against a database of the session's MariaDB (GET_LOCK) and the shared Pebble +
BIND world. The contention is made certain, not left to timing: the test holds the database's
renew lock while the renews start, sees both waiting in GET_LOCK on the server, and sees a third
one without ``--wait`` give up with exit 8 naming the test as the holder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from renew_world import SPARE, World, add_row, make_config, open_store, write_toml
from sqlalchemy import create_engine, text

from lecentral.host import this_host
from lecentral.store.sql import SqlStore


def waiting_in_get_lock(url: str) -> int:
    """How many connections of the application user wait in GET_LOCK on the server."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE INFO LIKE 'SELECT GET_LOCK%' AND ID <> CONNECTION_ID()")).scalar() or 0)
    finally:
        engine.dispose()


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
    argv = [lecentral, "--config", str(toml), "-v", "renew", "--json"]
    env = {**os.environ, "COLUMNS": "200"}
    holder = SqlStore(mariadb_url)
    with holder.renew_lock(0) as got:
        assert got
        procs = [subprocess.Popen([*argv, "--wait", "90"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        deadline = time.monotonic() + 60
        while waiting_in_get_lock(mariadb_url) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert waiting_in_get_lock(mariadb_url) == 2  # both renews are blocked on the lock
        impatient = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                                   check=False)
        assert all(p.poll() is None for p in procs)  # nothing went ahead while the lock was held
    holder.close()
    results = [p.communicate(timeout=120) for p in procs]

    assert impatient.returncode == 8, impatient.stderr
    assert f"(host {this_host()}, pid {os.getpid()}, since " in impatient.stderr
    assert json.loads(impatient.stdout)["lock_holder"]["pid"] == os.getpid()
    assert [p.returncode for p in procs] == [0, 0], results
    for _, err in results:  # each said whom it waited for
        assert f"is held (host {this_host()}, pid {os.getpid()}, since " in err
        assert "waiting up to 90 s for it" in err
    reports = [json.loads(out) for out, _ in results]
    issued = [c["name"] for r in reports for c in r["certificates"] if c["status"] == "issued"]
    assert sorted(issued) == sorted(names)  # every name issued, and by one process only
    assert sorted(len(r["attempts"]) for r in reports) == [0, len(names)]
    orders = [line for _, err in results for line in err.splitlines() if ": order https://" in line]
    assert len(orders) == len(names)
    for name in names:
        assert [e.kind for e in store.events(name)].count("issued") == 1
    assert store.renew_lock_holder() is None
    store.close()
