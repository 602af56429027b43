"""A second nameserver that lags: no challenge is answered until it serves the TXT too.

Its own small world: BIND with a secondary (ns2, on 127.0.0.1 at another port, reached through
``[dns] nameserver_addresses``), a resolver and Pebble. The secondary is held (no NOTIFY) so it
keeps serving the old zone.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from renew_world import World, add_row, make_config, open_store, run

from lecentral.config import CentralConfig
from lecentral.testing.bind import BindServer
from lecentral.testing.resolver import resolving_pebble

LAG1, LAG2 = "lag1.example.test", "lag2.example.test"


@pytest.fixture(scope="module")
def lag_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("lag-world")
    bind = BindServer(workdir / "bind", subzones=[LAG1, LAG2], secondary=True)
    for key in ("san1-key", "san2-key", "delegate-key"):  # make_config names them
        bind.add_key(key)
    with bind, resolving_pebble(workdir, bind) as (resolver, pebble):
        yield World(bind, pebble, workdir, resolver)


def lag_config(world: World, tmp: Path, timeout: float) -> CentralConfig:
    config = make_config(world, tmp)
    dns = dataclasses.replace(
        config.dns, zones={}, propagation_timeout=timeout,
        nameserver_addresses={"ns2.example.test": f"127.0.0.1:{world.bind.secondary_port}"})
    return dataclasses.replace(config, dns=dns)


def test_lagging_secondary_times_out_naming_it(lag_world: World, tmp_path: Path) -> None:
    config = lag_config(lag_world, tmp_path, timeout=1.5)
    store = open_store(config)
    add_row(store, [LAG1])
    lag_world.bind.hold_secondary()
    try:
        report = run(config, store)
    finally:
        lag_world.bind.release_secondary()
    outcome = report.final[0]
    assert outcome.status == "failed"
    assert f"127.0.0.1:{lag_world.bind.secondary_port}" in outcome.message, outcome.message
    row = store.get(LAG1)
    assert row is not None and row.crt is None and row.count_fail_update == 1
    assert lag_world.bind.txt_values(f"_acme-challenge.{LAG1}") == []


def test_lagging_secondary_that_catches_up_is_waited_for(lag_world: World, tmp_path: Path) -> None:
    config = lag_config(lag_world, tmp_path, timeout=30)
    store = open_store(config)
    add_row(store, [LAG2])
    lag_world.bind.hold_secondary()
    released = threading.Timer(1.0, lag_world.bind.release_secondary)
    released.start()
    try:
        report = run(config, store)
    finally:
        released.join()
    assert report.final[0].status == "issued", report.final[0].message
    assert lag_world.bind.txt_values(f"_acme-challenge.{LAG2}") == []
