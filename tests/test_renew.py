"""The renew job against a real Pebble CA and a real BIND with per-name sub-zones (SQLite store).

Each test adds its own rows to a fresh SQLite database; the CA, the nameserver and the sub-zones
are shared by the whole session (``dns_world``, see renew_world.py).
"""

from __future__ import annotations

import dataclasses
import logging
import stat
from pathlib import Path

import pytest
from renew_world import (
    BADSECRET,
    CNAMED,
    DELEGATE,
    FROZEN,
    ONE,
    OTHERZONE,
    SAN1,
    SAN2,
    SPARE,
    UNKNOWNKEY,
    WILD,
    World,
    add_row,
    assert_issued,
    make_config,
    run,
)

from lecentral.config import CentralConfig
from lecentral.store.sql import SqlStore


@pytest.fixture
def config(dns_world: World, tmp_path: Path) -> CentralConfig:
    return make_config(dns_world, tmp_path)


def challenge_txt(dns_world: World, name: str) -> list[str]:
    return dns_world.bind.txt_values(f"_acme-challenge.{name}")


def test_single_name(dns_world: World, config: CentralConfig, store: SqlStore) -> None:
    _, key = add_row(store, [ONE])
    report = run(config, store)
    assert [(o.name, o.status) for o in report.final] == [(ONE, "issued")]
    assert_issued(store, ONE, [ONE], key)
    assert challenge_txt(dns_world, ONE) == []
    account_key = Path(config.acme.account_key)
    assert stat.S_IMODE(account_key.stat().st_mode) == 0o600


def test_sans_across_two_subzones_each_with_its_own_key(dns_world: World, config: CentralConfig,
                                                         store: SqlStore) -> None:
    """The seed could not do this: foo's and bar's TXT go into two sub-zones, two keys."""
    _, key = add_row(store, [SAN1, SAN2])
    report = run(config, store)
    assert report.final[0].status == "issued", report.final[0].message
    assert_issued(store, SAN1, [SAN1, SAN2], key)
    assert challenge_txt(dns_world, SAN1) == [] and challenge_txt(dns_world, SAN2) == []


def test_wildcard_and_apex_share_the_challenge_name(dns_world: World, config: CentralConfig,
                                                    store: SqlStore) -> None:
    _, key = add_row(store, [WILD, f"*.{WILD}"])
    report = run(config, store)
    assert report.final[0].status == "issued", report.final[0].message
    assert_issued(store, WILD, [WILD, f"*.{WILD}"], key)
    assert challenge_txt(dns_world, WILD) == []


def test_cname_delegated_challenge(dns_world: World, config: CentralConfig, store: SqlStore) -> None:
    _, key = add_row(store, [CNAMED])
    report = run(config, store)
    assert report.final[0].status == "issued", report.final[0].message
    assert_issued(store, CNAMED, [CNAMED], key)
    assert dns_world.bind.txt_values(f"cn.{DELEGATE}") == []


def test_issued_then_not_due_then_forced(dns_world: World, config: CentralConfig,
                                         store: SqlStore) -> None:
    add_row(store, [SPARE[0]])
    assert run(config, store).final[0].status == "issued"
    first = store.get(SPARE[0])
    again = run(config, store)
    assert again.final[0].status == "not-due"
    assert store.get(SPARE[0]) == first
    forced = run(config, store, force=True, names=(SPARE[0],))
    assert forced.final[0].status == "issued"
    row = store.get(SPARE[0])
    assert row is not None and first is not None
    assert row.old_crt == first.crt and row.old_ca == first.ca and row.crt != first.crt


FAILURES = {
    BADSECRET: "BADSIG",
    UNKNOWNKEY: "BADKEY",
    OTHERZONE: "does not grant key san1-key",
    FROZEN: "frozen",
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_dns_failure_is_clear_and_changes_nothing_else(dns_world: World, config: CentralConfig,
                                                       store: SqlStore, name: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Wrong secret, unknown key, a key granted another zone, a frozen zone: the update-permission
    test fails the certificate before any order, so no challenge can have been answered."""
    add_row(store, [name])
    before = store.get(name)
    if name == FROZEN:
        dns_world.bind.rndc("freeze", FROZEN)
    try:
        with caplog.at_level(logging.INFO):
            report = run(config, store)
    finally:
        if name == FROZEN:
            dns_world.bind.rndc("thaw", FROZEN)
    outcome = report.final[0]
    assert outcome.status == "failed"
    assert FAILURES[name] in outcome.message and name in outcome.message
    assert "order" not in " ".join(r.getMessage() for r in caplog.records if "created" in r.getMessage())
    after = store.get(name)
    assert after is not None and before is not None
    assert after.count_fail_update == 1
    assert after.ts_last_update and after.ts_last_update > 1
    assert dataclasses.replace(after, count_fail_update=0, ts_last_update=1) == before
    assert store.events(name)[0].kind == "failed" and FAILURES[name] in store.events(name)[0].message
    assert challenge_txt(dns_world, name) == []


def test_named_stopped(dns_world: World, config: CentralConfig, store: SqlStore) -> None:
    add_row(store, [SPARE[1]])
    before = store.get(SPARE[1])
    dns_world.bind.stop()
    try:
        report = run(config, store)
    finally:
        dns_world.bind.start()
    outcome = report.final[0]
    assert outcome.status == "failed"
    assert f"127.0.0.1:{dns_world.bind.port}" in outcome.message
    after = store.get(SPARE[1])
    assert after is not None and before is not None
    assert after.count_fail_update == 1 and after.crt is None
    assert dataclasses.replace(after, count_fail_update=0, ts_last_update=1) == before
    assert challenge_txt(dns_world, SPARE[1]) == []


def test_dry_run_changes_nothing(dns_world: World, config: CentralConfig, store: SqlStore) -> None:
    add_row(store, [SPARE[2]])
    add_row(store, [SPARE[3]], enable=False)
    before = store.list()
    events = store.events()
    report = run(config, store, dry_run=True)
    assert [(o.name, o.status) for o in report.final] == [(SPARE[2], "would-issue")]
    assert "would order" in report.final[0].message
    assert store.list() == before and store.events() == events
    assert not Path(config.acme.account_key).exists()  # no account was even registered


def test_invalid_row_is_refused_untouched(dns_world: World, config: CentralConfig,
                                          store: SqlStore) -> None:
    """A row whose md5_modulus does not match its CSR is never ordered nor written."""
    from sqlalchemy import text

    add_row(store, [SPARE[4]])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE certs SET md5_modulus = :m WHERE name = :n"),
                     {"m": "0" * 32, "n": SPARE[4]})
    before = store.get(SPARE[4])
    report = run(config, store)
    assert report.final[0].status == "invalid"
    assert "does not match the CSR" in report.final[0].message
    assert store.get(SPARE[4]) == before


def test_certbot_rows_with_an_unknown_http01_issuer_fail_clearly(dns_world: World, config: CentralConfig,
                                                                 store: SqlStore,
                                                                 tmp_path: Path) -> None:
    # the HTTP-01 issuers themselves are tested in test_webroot*.py
    add_row(store, [SPARE[5]], certbot=True, webroot_path=str(tmp_path))
    config = dataclasses.replace(config, renew=dataclasses.replace(config.renew,
                                                                   http01_issuer="certbot-webrot"))
    report = run(config, store)
    outcome = report.final[0]
    assert outcome.status == "failed" and "no issuer plugin named 'certbot-webrot'" in outcome.message
    row = store.get(SPARE[5])
    assert row is not None and row.crt is None and row.count_fail_update == 1
