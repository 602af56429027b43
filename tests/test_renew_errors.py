"""The renew job's error branches, each through the real code path: a CA returning an expired
certificate, an issuer plugin that crashes, and a certificate issued but not saved. (The lock
held by another run: tests/test_renew_lock.py.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.pki import make_csr
from renew_world import BADSECRET, SPARE, World, add_row, make_config, open_store

from lecentral.certificates import Csr
from lecentral.config import CentralConfig
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.store.sql import SqlStore
from lecentral.types import IssuerContext, IssuerType


class FailureHook:
    """An event plugin recording ``lecentral_renew_failed``."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str, int]] = []

    @hookimpl
    def lecentral_renew_failed(self, name: str, error: str, count_fail_update: int) -> None:
        self.failures.append((name, error, count_fail_update))


def registry_with(*plugins: object) -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    for number, plugin in enumerate(plugins):
        loaded.pm.register(plugin, name=f"test-errors-{number}")
    return Registry(loaded)


def with_issuer(config: CentralConfig, name: str) -> CentralConfig:
    return dataclasses.replace(config, renew=dataclasses.replace(config.renew, dns01_issuer=name))


# --- the CA returns an expired certificate -------------------------------------------------


@pytest.fixture(scope="module")
def short_pebble(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A real Pebble whose certificates are valid for 1 s (notAfter = notBefore): expired by the
    time lecentral checks them."""
    pebble = PebbleServer(tmp_path_factory.mktemp("short-pebble"),
                          dns_server=("127.0.0.1", dns_world.resolver.port),
                          config={"certificateValidityPeriod": 1}).start()
    yield pebble
    pebble.stop()


def test_expired_certificate_from_the_ca_is_refused(dns_world: World, short_pebble: PebbleServer,
                                                    tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, pebble=short_pebble)
    store = open_store(config)
    add_row(store, [SPARE[6]])
    hook = FailureHook()
    report = RenewJob(config, store, registry_with(hook)).run(RenewRequest(once=True))
    [outcome] = report.final
    assert outcome.status == "refused", outcome.message
    assert "the CA returned a certificate that expired at" in outcome.message
    assert "refused" in outcome.message
    row = store.get(SPARE[6])
    assert row is not None and row.crt is None and row.ca is None and row.ts_expire == 1
    assert row.count_fail_update == 1
    [event, _added] = store.events(SPARE[6])
    assert event.kind == "failed" and "expired at" in event.message
    assert hook.failures == [(SPARE[6], outcome.message, 1)]
    assert report.failed == [outcome]  # the command exits 1
    store.close()


# --- an issuer plugin that crashes -------------------------------------------------------------


class CrashingIssuer(Issuer):
    """A plugin issuer with a bug: it raises a plain Python exception, not a LecentralError."""

    def __init__(self, context: IssuerContext) -> None:
        self.config = context.config

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        raise KeyError("zone-map")


class CrashingPlugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("crashing", CrashingIssuer, "test: an issuer with a bug")]


def test_issuer_crash_fails_only_its_certificate(dns_world: World, tmp_path: Path) -> None:
    """The crash is a counted failure naming the exception, retried in the next round like any
    other; the run goes on and reports it (no traceback escapes the job)."""
    config = with_issuer(make_config(dns_world, tmp_path, retry_pause=0, max_failures=1),
                         "crashing")
    store = open_store(config)
    add_row(store, [SPARE[7]])
    hook = FailureHook()
    report = RenewJob(config, store, registry_with(CrashingPlugin(), hook)).run(RenewRequest())
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed"), (2, "failed")]
    outcome = report.final[0]
    assert outcome.message == "issuer crashing crashed: KeyError: 'zone-map'"
    row = store.get(SPARE[7])
    assert row is not None and row.crt is None and row.count_fail_update == 2
    assert [e.kind for e in store.events(SPARE[7])] == ["failed", "failed", "added"]
    assert [(n, c) for n, _, c in hook.failures] == [(SPARE[7], 1), (SPARE[7], 2)]
    store.close()


# --- issued, but the save fails --------------------------------------------------------------


class RemovedMeanwhileIssuer(Issuer):
    """The real dns-subzone issuer (Pebble + BIND); while the order runs, an operator removes the
    row with ``lecentral remove`` (another connection). Only the timing is arranged by the test:
    the order, the checks and the failing save are the real ones."""

    def __init__(self, context: IssuerContext) -> None:
        from lecentral.builtin.dns_subzone import DnsSubzoneIssuer

        self.real = DnsSubzoneIssuer(context)
        self.url = context.config.database.url

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        issued = self.real.issue(row, csr)
        operator = SqlStore(self.url)
        try:
            operator.remove(row.name)
        finally:
            operator.close()
        return issued

    def begin_pass(self) -> None:
        self.real.begin_pass()

    def close(self) -> None:
        self.real.close()


class RemovedMeanwhilePlugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("removed-meanwhile", RemovedMeanwhileIssuer, "test: row removed")]


def test_issued_but_not_saved_is_a_failure(dns_world: World, tmp_path: Path) -> None:
    config = with_issuer(make_config(dns_world, tmp_path), "removed-meanwhile")
    store = open_store(config)
    add_row(store, [SPARE[5]])
    hook = FailureHook()
    report = RenewJob(config, store, registry_with(RemovedMeanwhilePlugin(), hook)).run(
        RenewRequest(once=True))
    [outcome] = report.final
    assert outcome.status == "failed"
    assert outcome.message.startswith("issued but not saved: ")
    assert f"no certificate named '{SPARE[5]}' in the database" in outcome.message
    assert "the certificate is discarded" in outcome.message  # not promised to the next run
    assert not list((Path(config.renew.state_dir) / "spool").glob("*"))  # nothing left to it
    assert report.failed == [outcome]
    assert store.get(SPARE[5]) is None  # nothing half-written, nothing re-created
    assert [e.kind for e in store.events(SPARE[5])] == ["removed", "added"]
    assert [n for n, _, _ in hook.failures] == [SPARE[5]]  # event hooks hear of it too
    store.close()


class CsrReplacedMeanwhileIssuer(RemovedMeanwhileIssuer):
    """The real issuer; while the order runs, the operator stores a new CSR (lecentral set-csr,
    another connection): the certificate the CA returns is for the old key."""

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        issued = self.real.issue(row, csr)
        new = Csr.load(make_csr([row.name])[0])
        operator = SqlStore(self.url)
        try:
            operator.set_csr(row.name, new.pem, new.md5_modulus)
        finally:
            operator.close()
        return issued


class CsrReplacedMeanwhilePlugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("csr-replaced", CsrReplacedMeanwhileIssuer, "test: set-csr meanwhile")]


def test_a_certificate_for_a_replaced_csr_is_never_saved(dns_world: World, tmp_path: Path) -> None:
    """Saving checks the row's md5_modulus in the same transaction: a certificate for the key the
    server no longer has is not stored (the agent would refuse it anyway, silently stale)."""
    config = with_issuer(make_config(dns_world, tmp_path), "csr-replaced")
    store = open_store(config)
    add_row(store, [SPARE[4]])
    hook = FailureHook()
    report = RenewJob(config, store, registry_with(CsrReplacedMeanwhilePlugin(), hook)).run(
        RenewRequest(once=True))
    [outcome] = report.final
    assert outcome.status == "refused" and report.failed == [outcome]
    assert outcome.message.startswith(f"refused: {SPARE[4]}: its CSR was replaced while this "
                                      "certificate was being issued")
    assert "the next renew orders one for the new CSR" in outcome.message
    assert list((tmp_path / "state" / "spool").glob("*.json")) == []  # not kept to be saved later
    row = store.get(SPARE[4])
    assert row is not None and row.crt is None and row.ca is None
    assert [e.kind for e in store.events(SPARE[4])] == ["csr", "added"]
    assert [n for n, _, _ in hook.failures] == [SPARE[4]]
    store.close()


def test_a_refused_zone_fails_before_any_request_to_the_ca(dns_world: World, tmp_path: Path) -> None:
    """docs/renew.md: a wrong key fails the certificate before any request to the CA. With the
    CA unreachable, the error is still the zone's (BADSIG), not the ACME directory's."""
    config = make_config(dns_world, tmp_path)
    config = dataclasses.replace(config, acme=dataclasses.replace(
        config.acme, directory="https://127.0.0.1:1/dir"))
    store = open_store(config)
    add_row(store, [BADSECRET])
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(RenewRequest(once=True))
    [outcome] = report.final
    assert outcome.status == "failed" and "BADSIG" in outcome.message, outcome.message
    assert "ACME" not in outcome.message and "127.0.0.1:1" not in outcome.message
    store.close()
