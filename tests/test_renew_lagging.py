"""A second nameserver that lags: no challenge is answered until it serves the TXT too.

Its own small world: BIND with a secondary (ns2, on 127.0.0.1 at another port, reached through
``[dns] nameserver_addresses``), a resolver and Pebble. The secondary is held (no NOTIFY) so it
keeps serving the old zone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lecentral_testing.bind import BindServer
from lecentral_testing.resolver import resolving_pebble
from renew_world import World, add_row, make_config, open_store, run

from lecentral.config import CentralConfig

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


def test_lagging_secondary_that_catches_up_is_waited_for(lag_world: World, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The TXT is added while ns2 lags; it is found served everywhere (and the challenge
    answered) only after ns2 was released: the renew waited for it."""
    config = lag_config(lag_world, tmp_path, timeout=30)
    store = open_store(config)
    add_row(store, [LAG2])
    lag_world.bind.hold_secondary()
    released_at: list[float] = []
    secondary_before: list[list[str]] = []

    def release() -> None:
        # what ns2 served just before: the TXT must not be there yet (it really lagged)
        secondary_before.append(lag_world.bind.txt_values(f"_acme-challenge.{LAG2}", secondary=True))
        released_at.append(time.time())
        lag_world.bind.release_secondary()

    released = threading.Timer(1.5, release)
    released.start()
    try:
        with caplog.at_level(logging.INFO, logger="lecentral"):
            report = run(config, store)
    finally:
        released.join()
    assert report.final[0].status == "issued", report.final[0].message
    added = [r.created for r in caplog.records if r.getMessage().startswith("added TXT ")]
    served = [r.created for r in caplog.records
              if r.getMessage().startswith("TXT records served by every authoritative nameserver")]
    assert len(added) == 1 and len(served) == 1, caplog.text
    assert added[0] < released_at[0] < served[0]
    assert secondary_before == [[]]
    assert lag_world.bind.txt_values(f"_acme-challenge.{LAG2}") == []
