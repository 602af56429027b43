"""Two central hosts on a MariaDB Galera cluster: the renew lock is a lease the cluster replicates.

A real three-node Galera cluster (``lecentral_testing.galera``: galera-4, SST by rsync) on
127.0.0.1, the shared Pebble + BIND world, real ``lecentral renew`` processes connected to
different nodes. What the tests show:

* ``GET_LOCK`` is node-local under Galera: two nodes grant the same name at once (why lecentral
  uses a lease row when ``wsrep_on`` is ON);
* the lease excludes across nodes, names its holder, runs out when its holder stops renewing it,
  and a holder whose lease was taken over cannot save;
* two renews at once on two nodes order and save every certificate exactly once;
* a node stopped (SIGKILL) in the middle of a run loses nothing: the run on it fails loudly, the
  certificate it had issued is spooled, and the next run saves it without a new order and orders
  the rest.

The one stand-in: the run on the dying node is a RenewJob whose ``_issue_with_fallback`` (the real
one) kills that node right after the CA issued the first certificate, so "in the middle" is a
certain moment (between issuance and save), not a timing guess.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.galera import GaleraCluster
from renew_world import SPARE, World, add_row, make_config, write_toml
from sqlalchemy import create_engine, text

from lecentral.errors import StoreError
from lecentral.host import this_host
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.renew.outcome import LEASE_LOST
from lecentral.store.migrations import HEAD
from lecentral.store.renewlock import mysql_lock_name
from lecentral.store.sql import SqlStore

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def galera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaleraCluster]:
    with GaleraCluster(tmp_path_factory.mktemp("galera")) as cluster:
        yield cluster


def database_on_every_node(cluster: GaleraCluster) -> tuple[str, list[str]]:
    """A new database (made on node 1, replicated): its name and its URL through each node."""
    name = f"t_galera_{os.getpid()}_{next(_numbers)}"
    cluster.nodes[0].create_database(name)
    return name, [node.url_for(name) for node in cluster.nodes]


def lecentral() -> str:
    found = shutil.which("lecentral")
    assert found is not None
    return found


def orders(text_: str) -> list[str]:
    """The ``NAME: order URL created`` lines of a ``-v`` run's stderr."""
    return [line for line in text_.splitlines() if ": order https://" in line]


def issued_events(store: SqlStore, name: str) -> int:
    return [e.kind for e in store.events(name)].count("issued")


# --- what GET_LOCK does under Galera, and the lease ------------------------------------------


def test_get_lock_is_node_local_under_galera(galera: GaleraCluster) -> None:
    """The finding behind the lease: MariaDB 10.11 + galera-4 grants one GET_LOCK name on two
    nodes at once (no error, no replication), so it cannot keep two hosts apart."""
    database, urls = database_on_every_node(galera)
    engines = [create_engine(url) for url in urls[:2]]
    try:
        with engines[0].connect() as one, engines[1].connect() as two:
            assert one.execute(text("SELECT @@wsrep_on")).scalar() == 1
            name = mysql_lock_name(database)
            assert one.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
            assert two.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_the_lease_excludes_across_nodes_and_names_its_holder(galera: GaleraCluster) -> None:
    _, urls = database_on_every_node(galera)
    stores = [SqlStore(url) for url in urls]
    stores[0].init_schema()
    galera.sync()
    try:
        with stores[0].renew_lock(0, lease=10) as got:
            assert got
            with stores[1].renew_lock(0) as other:
                assert not other  # through another node: taken
            with stores[2].renew_lock(1) as waited:
                assert not waited
            holder = stores[2].renew_lock_holder()
            assert holder is not None and (holder.host, holder.pid) == (this_host(), os.getpid())
            stores[0].renew_lock_check()  # still ours: no error
            _, others = database_on_every_node(galera)  # another database: its own lease
            other_db = SqlStore(others[1])
            other_db.init_schema()
            galera.sync()
            with other_db.renew_lock(0) as also:
                assert also
            other_db.close()
        assert stores[1].renew_lock_holder() is None  # given back: the row is gone everywhere
        with stores[1].renew_lock(0) as got_after:
            assert got_after
    finally:
        for store in stores:
            store.close()


#: a holder in its own process: takes the lease, says so, then on a line of stdin saves
HOLDER = """
import sys
from lecentral.store.sql import SqlStore
store = SqlStore(sys.argv[1])
with store.renew_lock(0, lease=4) as got:
    print("held" if got else "not held", flush=True)
    sys.stdin.readline()
    try:
        store.save_issued(sys.argv[2], b"not saved", b"", 2_000_000_000, 1)
        print("saved", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", flush=True)
"""


def test_a_frozen_holders_lease_runs_out_and_it_cannot_save_after(galera: GaleraCluster) -> None:
    """A holder that stops renewing (here a process frozen with SIGSTOP, as a hung host) blocks
    the others only until its lease expires; woken up, its save is refused, loudly, the row is
    untouched, and the successor's lease stands."""
    _, urls = database_on_every_node(galera)
    first = SqlStore(urls[0])
    first.init_schema()
    add_row(first, [SPARE[0]])
    galera.sync()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, urls[0], SPARE[0]],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    second = SqlStore(urls[1])
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        with second.renew_lock(0) as at_once:
            assert not at_once  # frozen, but its lease has not run out yet
        with second.renew_lock(30, lease=60) as taken:
            assert taken  # it ran out: the frozen holder blocks no longer
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write("save\n")
            holder.stdin.flush()
            said = holder.stdout.readline()
            assert said.startswith("LeaseLostError: "), said
            assert "lost the renew lease" in said and "spool" in said
            found = second.renew_lock_holder()  # the successor's lease is untouched
            assert found is not None and found.pid == os.getpid()
        holder.stdin.close()
        assert holder.wait(30) == 0
        row = first.get(SPARE[0])
        assert row is not None and row.crt is None
        assert issued_events(first, SPARE[0]) == 0
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait()
        first.close()
        second.close()


# --- two renews at once, on two nodes -----------------------------------------------------


def wait_for(what: str, paths: list[Path], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(what in p.read_text() for p in paths):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what!r} not in every one of {paths}: "
                         + "\n".join(p.read_text() for p in paths))


def test_two_renews_on_two_nodes_order_each_certificate_once(
        galera: GaleraCluster, dns_world: World, tmp_path: Path) -> None:
    """Two central hosts (own state dirs), each connected to its own node, started together
    while a third holder keeps the lease: both wait, then one takes it and renews everything;
    the other finds nothing due."""
    _, urls = database_on_every_node(galera)
    names = SPARE[:4]
    store = SqlStore(urls[2])
    store.init_schema()
    for name in names:
        add_row(store, [name])
    galera.sync()
    procs, errs = [], []
    holder = SqlStore(urls[2])
    env = {**os.environ, "COLUMNS": "200"}
    with holder.renew_lock(0, lease=10) as got:
        assert got
        for index in range(2):
            host = tmp_path / f"host{index + 1}"
            host.mkdir()
            config = make_config(dns_world, host, db_url=urls[index])
            toml = write_toml(config, host / "lecentral.toml", lease=10)
            err = host / "stderr"
            errs.append(err)
            procs.append(subprocess.Popen(
                [lecentral(), "--config", str(toml), "-v", "renew", "--json", "--wait", "60"],
                stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=env))
        wait_for("waiting up to 60 s for it", errs)  # both are blocked on the lease
        assert all(p.poll() is None for p in procs)
    holder.close()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    stderrs = [e.read_text() for e in errs]

    assert [p.returncode for p in procs] == [0, 0], stderrs
    for err in stderrs:
        assert f"is held (host {this_host()}, pid {os.getpid()}, since " in err
    reports = [json.loads(out) for out in outs]
    issued = [c["name"] for r in reports for c in r["certificates"] if c["status"] == "issued"]
    assert sorted(issued) == sorted(names)
    assert sorted(len(r["attempts"]) for r in reports) == [0, len(names)]
    assert len([line for err in stderrs for line in orders(err)]) == len(names)
    for name in names:
        assert issued_events(store, name) == 1
        row = store.get(name)
        assert row is not None and row.crt
    assert store.renew_lock_holder() is None
    store.close()


# --- a node stopped in the middle of a run ------------------------------------------------


class KillsItsNode(RenewJob):
    """The real job; right after the CA issued its first certificate, the node this run is
    connected to is killed (SIGKILL: a crash), before the certificate is saved."""

    def __init__(self, *args: Any, galera: GaleraCluster, node: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.galera, self.node = galera, node
        self.killed = False

    def _issue_with_fallback(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._issue_with_fallback(*args, **kwargs)
        if not self.killed:
            self.killed = True
            self.galera.nodes[self.node].kill()
        return result


def run_until_its_node_dies(galera: GaleraCluster, dns_world: World, tmp_path: Path,
                            urls: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """A run through node 2 that kills node 2 right after its first issuance: checks that it
    failed loudly with that certificate spooled and nothing more ordered; returns its name."""
    config = make_config(dns_world, tmp_path, db_url=urls[1], workers=1, lease=10)
    dying = SqlStore(urls[1])
    caplog.set_level(logging.INFO)
    try:
        job = KillsItsNode(config, dying, Registry.load(entrypoints=False), galera=galera, node=1)
        report = job.run(RenewRequest(once=True))
    finally:
        dying.close()
    assert job.killed
    first = report.outcomes[0]
    assert first.status == "failed" and "issued but not saved" in first.message
    assert "the next run saves it without a new order" in first.message
    spooled = list((tmp_path / "state" / "spool").glob("*.json"))
    assert [p.stem for p in spooled] == [first.name]
    rest = report.outcomes[1:]
    assert len(rest) == 3 and all(o.status == "blocked" for o in rest)  # not tried, not counted
    assert all("not tried" in o.message and "lost the renew lease" in o.message
               for o in rest), [o.message for o in rest]
    [problem] = report.problems  # one problem of the run, one alert, not three
    assert "lost the renew lease" in problem.message and sorted(problem.names) == \
        sorted(o.name for o in rest)
    # its alert says so: "renew: the renew lease was lost, 3 certificate(s) not tried"
    assert problem.cause == LEASE_LOST
    assert not report.ok
    assert len([r for r in caplog.records if ": order https://" in r.getMessage()]) == 1
    return first.name


def renew_through(dns_world: World, host: Path, url: str) -> tuple[subprocess.CompletedProcess[str],
                                                                   dict[str, Any]]:
    """``lecentral renew --wait 60`` of the host whose state dir is under ``host``."""
    toml = write_toml(make_config(dns_world, host, db_url=url), host / "lecentral.toml",
                      lease=10)
    done = subprocess.run([lecentral(), "--config", str(toml), "-v", "renew", "--json",
                           "--wait", "60"], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    return done, json.loads(done.stdout)


@pytest.fixture
def four_rows(galera: GaleraCluster) -> Iterator[tuple[list[str], SqlStore]]:
    """A new database with four due rows; node 2 is brought back (IST) after the test."""
    _, urls = database_on_every_node(galera)
    store = SqlStore(urls[0])
    store.init_schema()
    for name in SPARE[4:8]:
        add_row(store, [name])
    galera.sync()
    try:
        yield urls, store
    finally:
        store.close()
        galera.nodes[1].start()


def test_a_node_killed_mid_run_loses_nothing(galera: GaleraCluster, dns_world: World,
                                             tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             four_rows: tuple[list[str], SqlStore]) -> None:
    """The next run of the same host, through a node that is up, waits out the dead run's lease,
    saves the spooled certificate without a new order and orders the others."""
    urls, store = four_rows
    names = SPARE[4:8]
    first = run_until_its_node_dies(galera, dns_world, tmp_path, urls, caplog)

    after, data = renew_through(dns_world, tmp_path, urls[0])
    assert f"{first}: saved from the spool" in after.stderr and "no new order" in after.stderr
    assert len(orders(after.stderr)) == 3
    assert first not in "".join(orders(after.stderr))
    assert [(c["name"], c["status"]) for c in data["spooled"]] == [(first, "issued")]
    issued = sorted(c["name"] for c in data["certificates"] if c["status"] == "issued")
    assert issued == sorted(n for n in names if n != first)
    for name in names:  # saved once each, nothing lost
        assert issued_events(store, name) == 1
        row = store.get(name)
        assert row is not None and row.crt and row.count_fail_update == 0
    assert not list((tmp_path / "state" / "spool").glob("*.json"))


def test_after_a_node_died_the_other_host_takes_over_once_the_lease_ran_out(
        galera: GaleraCluster, dns_world: World, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, four_rows: tuple[list[str], SqlStore]) -> None:
    """What docs/ha.md says of the other host: it cannot see the first host's spool, so it
    orders that certificate again (one extra order, nothing lost); the first host's next run
    then drops its spooled copy as superseded and orders nothing."""
    urls, store = four_rows
    names = SPARE[4:8]
    first = run_until_its_node_dies(galera, dns_world, tmp_path, urls, caplog)

    other = tmp_path / "other-host"
    other.mkdir()
    took_over, data = renew_through(dns_world, other, urls[2])
    assert len(orders(took_over.stderr)) == 4
    assert sorted(c["name"] for c in data["certificates"] if c["status"] == "issued") == \
        sorted(names)

    again, data = renew_through(dns_world, tmp_path, urls[0])
    assert orders(again.stderr) == []
    assert f"{first}: the database already holds a certificate valid as long as the " \
        "spooled one" in again.stderr
    assert not list((tmp_path / "state" / "spool").glob("*.json"))
    for name in names:
        assert issued_events(store, name) == 1


def test_triggers_refused_without_log_bin_trust_says_what_to_set(galera: GaleraCluster) -> None:
    """Galera logs like a binary log: an account without SUPER cannot create lecentral's
    triggers unless log_bin_trust_function_creators is ON. lecentral init says so (not "check
    that the server is up"), and leaves no half-made revision behind."""
    _, urls = database_on_every_node(galera)
    node = galera.nodes[0]
    node.execute("SET GLOBAL log_bin_trust_function_creators = 0")
    store = SqlStore(urls[0])
    try:
        with pytest.raises(StoreError) as refused:
            store.init_schema()
        message = str(refused.value)
        assert "log_bin_trust_function_creators = ON" in message and "docs/ha.md" in message
        assert "check that the server is up" not in message
        assert node.password not in message and node.root_password not in message
        assert store.schema_revision() != HEAD
    finally:
        node.execute("SET GLOBAL log_bin_trust_function_creators = 1")
    store.init_schema()  # with the setting: it completes
    assert store.schema_revision() == HEAD
    store.close()


def test_the_node_settings_in_the_docs_are_the_clusters(galera: GaleraCluster) -> None:
    """docs/ha.md's [mariadb] settings are the ones this cluster runs with (and passes with)."""
    text_ = (Path(__file__).parents[1] / "docs" / "ha.md").read_text()
    block = re.search(r"```ini\n\[mariadb\]\n(.*?)```", text_, re.DOTALL)
    assert block is not None
    settings = dict(line.split(" = ") for line in block.group(1).splitlines())
    assert "wsrep_on" in settings and "log_bin_trust_function_creators" in settings
    for node in galera.nodes:
        for key, value in settings.items():
            (got,), = node.execute(f"SELECT @@GLOBAL.{key}")
            expected = {"ON": 1, "OFF": 0}.get(value, value)
            assert str(got).upper() == str(expected).upper(), (node.name, key, got)
