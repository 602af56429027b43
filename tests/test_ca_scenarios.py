"""``lecentral renew`` against CAs that behave unlike the fast, lenient default Pebble.

Each scenario runs the real command (``lecentral renew --json``, in-process) against a real BIND
(the session's ``dns_world``, with sub-zones made for each test) and a Pebble of this module,
started with the setting under test: validation that takes seconds, a block list, 2-hour
certificates. Failures must be loud: the CA's own problem detail in the outcome, the event log
and the exit status, and nothing half-written.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.pki import write_private
from lecentral_testing.ports import LOOPBACK
from renew_world import (
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
    renew_cli,
    run,
    write_toml,
)

from lecentral.certificates import Certificate, now_ts
from lecentral.config import ZoneConfig
from lecentral.store.sql import SqlStore

#: Pebble's VA sleeps a random 0..VA_SLEEP-1 whole seconds before each validation
VA_SLEEP = 4


def start_pebble(dns_world: World, workdir: Path, **options: Any) -> PebbleServer:
    """A Pebble of this module, resolving through the session's resolver (which asks its BIND)."""
    return PebbleServer(workdir, dns_server=(LOOPBACK, dns_world.resolver.port), **options).start()


@pytest.fixture(scope="module")
def slow_pebble(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """Pebble as it runs by default: its VA sleeps up to VA_SLEEP-1 s before each validation."""
    with start_pebble(dns_world, tmp_path_factory.mktemp("slow-pebble"), va_sleep=VA_SLEEP) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def blocked_name(dns_world: World) -> str:
    """A real, updatable sub-zone that the block-list Pebble refuses to issue for."""
    return new_zone(dns_world, "blocked")


@pytest.fixture(scope="module")
def blocklist_pebble(dns_world: World, blocked_name: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    with start_pebble(dns_world, tmp_path_factory.mktemp("blocklist-pebble"),
                      config={"domainBlocklist": [blocked_name]}) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def short_pebble(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """Pebble issuing certificates valid for 2 hours."""
    with start_pebble(dns_world, tmp_path_factory.mktemp("short-pebble"),
                      config={"certificateValidityPeriod": 7200}) as pebble:
        yield pebble


def log_since(pebble: PebbleServer, offset: int) -> str:
    return (pebble.workdir / "pebble.log").read_bytes()[offset:].decode(errors="replace")


def log_size(pebble: PebbleServer) -> int:
    return (pebble.workdir / "pebble.log").stat().st_size


def assert_unchanged_but_failed(store: SqlStore, name: str, before: Any, detail: str) -> None:
    """The row is as it was, except one more failure counted and the attempt's time."""
    after = store.get(name)
    assert after is not None and before is not None
    assert after.count_fail_update == before.count_fail_update + 1
    assert after.ts_last_update and after.ts_last_update >= now_ts() - 120
    assert dataclasses.replace(after, count_fail_update=before.count_fail_update,
                               ts_last_update=before.ts_last_update) == before
    event = store.events(name)[0]
    assert event.kind == "failed" and detail in event.message


# --- slow validation ---------------------------------------------------------------------------


def test_slow_validation_is_waited_for(dns_world: World, slow_pebble: PebbleServer,
                                       tmp_path: Path) -> None:
    """Pebble's VA sleeps 0-3 s before each of its three (concurrent) validation attempts of
    each of three names: the issuer keeps polling the authorizations (backing off to 2 s) until
    they are valid, finalizes only then, and does not oversleep: the run ends within a few
    seconds of the CA's slowest validation. If all nine sleeps were 0 s the order is repeated
    (up to three times) so that a real wait is tested."""
    names = [new_zone(dns_world, "slow") for _ in range(3)]
    config = make_config(dns_world, tmp_path, pebble=slow_pebble)
    store = open_store(config)
    _, key = add_row(store, names)
    toml = write_toml(config, tmp_path / "lecentral.toml")
    for attempt in range(3):
        offset = log_size(slow_pebble)
        started = time.monotonic()
        result = renew_cli(toml, "--once", "--force")
        elapsed = time.monotonic() - started
        assert result.exit_code == 0, result.data
        assert result.outcome(names[0])["status"] == "issued"
        log = log_since(slow_pebble, offset)
        slept = [float(s) for s in re.findall(r"Sleeping for ([0-9.]+)s seconds before validating", log)]
        assert len(slept) >= len(names), log
        if max(slept) >= 1:
            break
    assert max(slept) >= 1, f"Pebble never slept in {attempt + 1} orders: {slept}"
    # waited for the slowest validation, then at most one poll interval (2 s) and some work more
    assert max(slept) <= elapsed < max(slept) + 8, (slept, elapsed)
    assert_issued(store, names[0], names, key)
    # the authorizations were polled while pending, but not hammered (backoff up to 2 s)
    polls = len(re.findall(r"POST /authZ/", log))
    assert 3 < polls <= 3 + 3 * (4 + max(slept) / 2), polls
    assert "orderNotReady" not in log
    for name in names:
        assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []


def test_validation_slower_than_poll_timeout_fails_clearly(dns_world: World, slow_pebble: PebbleServer,
                                                          tmp_path: Path) -> None:
    """``[acme] poll_timeout`` 1 s against a VA sleeping 0-3 s before each of its three checks
    per name (all nine sleeps 0 s: a 4e-6 chance): the run gives up after about a second,
    names the setting, removes the TXT, and keeps nothing of the order."""
    names = [new_zone(dns_world, "impatient") for _ in range(3)]
    config = make_config(dns_world, tmp_path, pebble=slow_pebble)
    config = dataclasses.replace(config, acme=dataclasses.replace(config.acme, poll_timeout=1))
    store = open_store(config)
    add_row(store, names)
    before = store.get(names[0])
    started = time.monotonic()

    outcome = run(config, store).final[0]

    assert time.monotonic() - started < 10
    assert outcome.status == "failed"
    assert "no answer from the CA within 1 s ([acme] poll_timeout)" in outcome.message
    assert "waiting for the CA to validate" in outcome.message
    assert_unchanged_but_failed(store, names[0], before, "[acme] poll_timeout")
    for name in names:
        assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []


# --- a wrong TXT value -------------------------------------------------------------------------


def test_wrong_txt_value_is_refused_by_the_ca(dns_world: World, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The TXT published is another account's key authorization (as when two setups fight over a
    name, or a key file was swapped): the CA validates, finds the wrong value and refuses.

    The one non-real part: the value is replaced in lecentral's list of pending challenges (a
    patched ``AcmeClient.pending_challenges``); DNS, CA and the renew command are real."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from josepy.jwk import JWKEC

    from lecentral.acme.client import AcmeClient

    name = new_zone(dns_world, "wrongtxt")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    assert renew_cli(toml, "--once").exit_code == 0
    before = store.get(name)
    assert before is not None and before.crt

    other_account = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    real = AcmeClient.pending_challenges

    def wrong_values(self: AcmeClient, order: Any, typ: str) -> Any:
        return [dataclasses.replace(c, validation=c.challb.chall.validation(other_account))
                for c in real(self, order, typ)]

    monkeypatch.setattr(AcmeClient, "pending_challenges", wrong_values)
    result = renew_cli(toml, "--once", "--force", name)

    assert result.exit_code == 1 and not result.data["ok"]
    outcome = result.outcome(name)
    detail = "Correct value not found for DNS challenge"  # Pebble's problem detail
    assert outcome["status"] == "failed" and outcome["count_fail_update"] == 1
    assert detail in outcome["message"] and name in outcome["message"]
    assert f"lecentral dns check {name})" in outcome["message"]  # the failing name, not "NAME"
    assert_unchanged_but_failed(store, name, before, detail)
    assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []


# --- a TSIG key with the wrong algorithm -----------------------------------------------------


def test_wrong_tsig_algorithm_names_zone_and_key(dns_world: World, tmp_path: Path) -> None:
    """The key file has the right name and secret but hmac-sha256, while named.conf defines the
    key as hmac-sha512: named answers BADKEY. The update-permission test fails the certificate
    before any order: the message names the zone, the key and both places to compare."""
    name = new_zone(dns_world, "tsigalg")
    secret = dns_world.bind.tsig_keys["acme-update"]
    key_file = tmp_path / "sha256.key"
    write_private(key_file, f'key "acme-update" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'
                  .encode())
    config = make_config(dns_world, tmp_path)
    zones = {**config.dns.zones, name: ZoneConfig(tsig_key_file=str(key_file))}
    config = dataclasses.replace(config, dns=dataclasses.replace(config.dns, zones=zones))
    store = open_store(config)
    add_row(store, [name])
    before = store.get(name)
    toml = write_toml(config, tmp_path / "lecentral.toml")
    offset = log_size(dns_world.pebble)

    result = renew_cli(toml, "--once")

    assert result.exit_code == 1
    outcome = result.outcome(name)
    message = outcome["message"]
    assert outcome["status"] == "failed"
    assert f"zone {name}" in message and "TSIG key acme-update" in message
    assert "BADKEY" in message and "hmac-sha256" in message
    assert f"with another algorithm, make the algorithm in {key_file} the same" in message
    assert secret not in message and secret not in result.stderr
    assert_unchanged_but_failed(store, name, before, "BADKEY")
    assert "/order-plz" not in log_since(dns_world.pebble, offset)  # no order was created
    assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []


# --- a name the CA will not issue for ---------------------------------------------------------


def test_blocked_name_fails_with_the_cas_detail(dns_world: World, blocklist_pebble: PebbleServer,
                                                blocked_name: str, tmp_path: Path) -> None:
    """Pebble's ``domainBlocklist`` refuses the order (rejectedIdentifier): nothing is published
    in DNS, nothing saved, the failure counted, the exit status non-zero."""
    config = make_config(dns_world, tmp_path, pebble=blocklist_pebble)
    store = open_store(config)
    add_row(store, [blocked_name])
    before = store.get(blocked_name)
    toml = write_toml(config, tmp_path / "lecentral.toml")

    result = renew_cli(toml, "--once")

    assert result.exit_code == 1
    outcome = result.outcome(blocked_name)
    assert outcome["status"] == "failed", outcome
    assert "rejectedIdentifier" in outcome["message"] and blocked_name in outcome["message"]
    assert "remove it from the CSR" in outcome["message"]
    assert_unchanged_but_failed(store, blocked_name, before, "rejectedIdentifier")
    row = store.get(blocked_name)
    assert row is not None and row.crt is None and row.ca is None and row.ts_expire == 1
    assert dns_world.bind.txt_values(f"_acme-challenge.{blocked_name}") == []


# --- short-lived certificates ----------------------------------------------------------------


def test_two_hour_certificates(dns_world: World, short_pebble: PebbleServer, tmp_path: Path) -> None:
    """Pebble's ``certificateValidityPeriod`` 7200 s: the certificate is issued and saved with
    ts_expire its real notAfter, two hours away.

    What the next renew decides: within the hour ``renew.min_interval`` (default 3600 s) says
    not-due ("last attempt 0 min ago"); without it (min_interval 0) the renewal window, half of
    its 2-hour lifetime (docs/renew.md), still says not-due: a fresh short-lived certificate is
    not reissued at every run (tests/test_renew_window.py proves when it becomes due).
    ``--force`` orders a new one anyway.
    """
    name = new_zone(dns_world, "short")
    config = make_config(dns_world, tmp_path, pebble=short_pebble)
    store = open_store(config)
    _, key = add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")

    first = renew_cli(toml, "--once")

    assert first.exit_code == 0 and first.outcome(name)["status"] == "issued", first.data
    cert = assert_issued(store, name, [name], key)
    assert cert.not_after - int(cert.cert.not_valid_before_utc.timestamp()) in range(7199, 7202)
    assert abs(cert.not_after - (now_ts() + 7200)) < 120
    assert first.outcome(name)["ts_expire"] == cert.not_after

    # a whole sweep: not due, whether SQL decided it (unchanged since its facts were recorded,
    # window not open: not even read) or Python did (read: the facts were recorded only now) ...
    swept = renew_cli(toml, "--once")
    listed = [c["status"] for c in swept.data["certificates"] if c["name"] == name]
    assert swept.exit_code == 0, swept.data
    assert (swept.data["unchanged_not_due"], listed) in ((1, []), (0, ["not-due"])), swept.data
    # ... and asked by name, the row is read and the reason said
    hourly = renew_cli(toml, "--once", name)
    assert hourly.exit_code == 0
    assert hourly.outcome(name)["status"] == "not-due"
    assert "renew.min_interval 3600" in hourly.outcome(name)["message"]

    eager_toml = write_toml(config, tmp_path / "eager.toml", min_interval=0)
    eager = renew_cli(eager_toml, "--once", name)
    assert eager.exit_code == 0 and eager.outcome(name)["status"] == "not-due"
    assert "half of its 2-hour lifetime left" in eager.outcome(name)["message"]
    unchanged = store.get(name)
    assert unchanged is not None and unchanged.crt == cert.pem

    forced = renew_cli(eager_toml, "--once", "--force", name)
    assert forced.exit_code == 0 and forced.outcome(name)["status"] == "issued"
    row = store.get(name)
    assert row is not None and row.old_crt == cert.pem and row.crt != cert.pem
    assert Certificate.load(row.crt).not_after >= cert.not_after
