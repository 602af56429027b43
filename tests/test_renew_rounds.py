"""The renew job's harder paths: retry rounds, a CA answering badNonce half the time, a certificate
for the wrong key, secrets kept out of logs and mail, and the ``lecentral renew`` command."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import Mailbox
from click.testing import CliRunner
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK
from renew_world import (
    BADSECRET,
    FROZEN,
    ONE,
    PARENT,
    SPARE,
    World,
    add_row,
    make_config,
    open_store,
    write_toml,
)

from lecentral.config import NotifyConfig
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.types import IssuerContext, IssuerType


def registry_with(*plugins: object) -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    for number, plugin in enumerate(plugins):
        loaded.pm.register(plugin, name=f"test-plugin-{number}")
    return Registry(loaded)


# --- retry rounds ------------------------------------------------------------------------------


class ThawAfterFailure:
    """An event plugin: when the frozen zone's renewal fails, the operator thaws it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.failures: list[tuple[str, int]] = []

    @hookimpl
    def lecentral_renew_failed(self, name: str, error: str, count_fail_update: int) -> None:
        self.failures.append((name, count_fail_update))
        self.world.bind.rndc("thaw", FROZEN)


def test_failed_certificate_is_retried_in_the_next_round(dns_world: World, tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, retry_pause=0)
    store = open_store(config)
    add_row(store, [FROZEN])
    dns_world.bind.rndc("freeze", FROZEN)
    watcher = ThawAfterFailure(dns_world)
    try:
        report = RenewJob(config, store, registry_with(watcher)).run(RenewRequest())
    finally:
        if not watcher.failures:  # the watcher did not thaw it: leave the zone as we found it
            dns_world.bind.rndc("thaw", FROZEN)
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed"), (2, "issued")]
    assert watcher.failures == [(FROZEN, 1)]
    row = store.get(FROZEN)
    assert row is not None and row.crt and row.count_fail_update == 0
    assert [e.kind for e in store.events(FROZEN)][:2] == ["issued", "failed"]


class SubzoneAfterFailure:
    """An event plugin: when a name without its sub-zone fails, the operator creates the sub-zone."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.failures: list[str] = []

    @hookimpl
    def lecentral_renew_failed(self, name: str, error: str, count_fail_update: int) -> None:
        self.failures.append(error)
        self.world.bind.add_subzone(name)


def test_the_next_round_sees_a_subzone_made_meanwhile(dns_world: World, tmp_path: Path) -> None:
    """Zones are looked up once per pass, not once per run: the retry round finds the sub-zone
    the operator made after the first round failed in the parent zone (which takes no updates)."""
    import secrets

    name = f"late-{secrets.token_hex(3)}.{PARENT}"
    config = make_config(dns_world, tmp_path, retry_pause=0)
    store = open_store(config)
    add_row(store, [name])
    watcher = SubzoneAfterFailure(dns_world)
    report = RenewJob(config, store, registry_with(watcher)).run(RenewRequest())
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed"), (2, "issued")], \
        report.outcomes
    assert len(watcher.failures) == 1 and f"zone {PARENT}" in watcher.failures[0]
    row = store.get(name)
    assert row is not None and row.crt and row.count_fail_update == 0


def test_rounds_stop_after_max_failures(dns_world: World, tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, retry_pause=0, max_failures=2)
    store = open_store(config)
    add_row(store, [BADSECRET])
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(RenewRequest())
    assert [(o.round, o.status, o.count_fail_update) for o in report.outcomes] == [
        (1, "failed", 1), (2, "failed", 2), (3, "failed", 3)]
    row = store.get(BADSECRET)
    assert row is not None and row.count_fail_update == 3 and row.crt is None


def test_once_does_a_single_pass(dns_world: World, tmp_path: Path) -> None:
    config = make_config(dns_world, tmp_path, retry_pause=3600)
    store = open_store(config)
    add_row(store, [BADSECRET])
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(RenewRequest(once=True))
    assert [(o.round, o.status) for o in report.outcomes] == [(1, "failed")]


# --- a CA that keeps rejecting nonces --------------------------------------------------------


@pytest.fixture(scope="module")
def flaky_pebble(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    pebble = PebbleServer(tmp_path_factory.mktemp("flaky-pebble"),
                          dns_server=("127.0.0.1", dns_world.resolver.port),
                          env={"PEBBLE_WFE_NONCEREJECT": "50"}).start()
    yield pebble
    pebble.stop()


def test_half_the_nonces_rejected_all_issued(dns_world: World, flaky_pebble: PebbleServer, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(dns_world, tmp_path, pebble=flaky_pebble)
    store = open_store(config)
    names = SPARE[5:8]
    for name in names:
        add_row(store, [name])
    with caplog.at_level(logging.DEBUG, logger="lecentral.acme.network"):
        report = RenewJob(config, store, Registry.load(entrypoints=False)).run(RenewRequest(once=True))
    assert [(o.name, o.status) for o in report.final] == [(n, "issued") for n in names], \
        [o.message for o in report.final]
    retries = [r for r in caplog.records if "badNonce from the CA" in r.getMessage()]
    assert len(retries) >= 3  # about half of some 30 POSTs


# --- a certificate for another key -------------------------------------------------------------


class WrongKeyIssuer(Issuer):
    """Returns a real certificate, issued by Pebble through the dns-subzone issuer, but for a
    different key than the row's CSR: a stand-in for a CA that returns a certificate for another
    key, which no real Pebble does (the only non-real part of this test)."""

    def __init__(self, context: IssuerContext) -> None:
        from lecentral.builtin.dns_subzone import DnsSubzoneIssuer

        self.real = DnsSubzoneIssuer(context)

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        from lecentral_testing.pki import make_csr

        from lecentral.certificates import Csr

        other, _ = make_csr(csr.names)
        return self.real.issue(row, Csr.load(other))


class WrongKeyPlugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("wrong-key", WrongKeyIssuer, "test: a certificate for another key")]


def test_certificate_for_another_key_is_refused(dns_world: World, tmp_path: Path) -> None:

    config = make_config(dns_world, tmp_path)
    config = dataclasses.replace(config, renew=dataclasses.replace(config.renew,
                                                                  dns01_issuer="wrong-key"))
    store = open_store(config)
    add_row(store, [SPARE[4]])
    before = store.get(SPARE[4])
    report = RenewJob(config, store, registry_with(WrongKeyPlugin())).run(RenewRequest(once=True))
    outcome = report.final[0]
    assert outcome.status == "refused" and "another key" in outcome.message
    row = store.get(SPARE[4])
    assert row is not None and before is not None
    assert row.crt is None and row.ca is None and row.count_fail_update == 1
    assert "another key" in store.events(SPARE[4])[0].message


def test_many_failures_are_alerted_in_one_digest_per_pass(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """Twelve certificates failing the same way (no sub-zone: the parent zone takes no
    updates), ``alert_digest_after = 3``, two rounds: the run's first three failures are
    mailed one by one as they happen, the other nine in one alert at the end of the first pass
    (one error, ``NAME`` for each certificate's own name, every name listed); the second
    round's twelve in one alert more, the run's separate alerts spent: 5 mails for 24
    failures, each failure still counted and in its event log."""
    import secrets

    mails = smtp[0].messages
    token = secrets.token_hex(3)
    names = sorted(f"nosub{i:02d}-{token}.{PARENT}" for i in range(12))
    config = make_config(dns_world, tmp_path, retry_pause=0, max_failures=1,
                         alert_digest_after=3)
    config = dataclasses.replace(config, notify=NotifyConfig(
        mail_to=["ops@example.test"], smtp=f"{LOOPBACK}:{smtp[1]}"))
    store = open_store(config)
    for name in names:
        add_row(store, [name])
    before = len(mails)
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(RenewRequest())

    assert sorted((o.round, o.status) for o in report.outcomes) == \
        [(1, "failed")] * 12 + [(2, "failed")] * 12
    sent = mails[before:]
    subjects = [m["Subject"] for m in sent]
    assert len(sent) == 5, subjects
    alone = "[lecentral] WARNING: {}: renewal failed"
    alerted_alone = {n for n in names if alone.format(n) in subjects}
    assert len(alerted_alone) == 3
    digest = "[lecentral] WARNING: renew: {} more certificate(s) failed"
    digests = [m for m in sent if m["Subject"] in (digest.format(9), digest.format(12))]
    assert [m["Subject"] for m in digests] == [digest.format(9), digest.format(12)]
    first, second = (m.get_payload(decode=True).decode() for m in digests)
    assert "9 failed: " in first and f"zone {PARENT}" in first and "NAME" in first
    assert first.count(" failed: ") == 1  # one cause, one group
    assert {n for n in names if n in first} == set(names) - alerted_alone
    assert all(n in second for n in names) and "alert_digest_after" in second
    for name in names:
        row = store.get(name)
        assert row is not None and row.count_fail_update == 2
        assert [e.kind for e in store.events(name)] == ["failed", "failed", "added"]
    store.close()


# --- secrets: never in a log or a mail ---------------------------------------------------------


def test_no_secret_in_logs_or_mail(dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int],
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A failing run (wrong TSIG secret) and a succeeding one, with every logger at DEBUG and
    alerts mailed to a real SMTP server: no TSIG secret, EAB key or account key anywhere."""

    mails = smtp[0].messages
    address = f"{LOOPBACK}:{smtp[1]}"
    config = make_config(dns_world, tmp_path, retry_pause=0, max_failures=2)
    config = dataclasses.replace(
        config, notify=NotifyConfig(mail_to=["ops@example.test"], smtp=address),
        acme=dataclasses.replace(config.acme, eab_hmac_key=""))
    store = open_store(config)
    add_row(store, [BADSECRET])
    add_row(store, [ONE])
    job = RenewJob(config, store, Registry.load(entrypoints=False))
    with caplog.at_level(logging.DEBUG):
        report = job.run(RenewRequest())
    statuses = {o.name: o.status for o in report.final}
    assert statuses == {BADSECRET: "failed", ONE: "issued"}
    # the key files were read once, by the DNS layer, which told the run's redactor each secret
    used = [config.dns.tsig_key_file, config.dns.zones[BADSECRET].tsig_key_file]
    from lecentral.dns.tsig import read_key_file

    for path in used:
        for key in read_key_file(path).values():
            assert job.redact(f"x {key.secret} y") == "x ******** y"
    subjects = [m["Subject"] for m in mails]
    assert any("renewal failed 3 times in a row" in s for s in subjects), subjects
    assert sum(BADSECRET in s for s in subjects) == 3
    secrets = [*dns_world.bind.tsig_keys.values()]
    from lecentral.dns.tsig import read_key_file

    for path in [z.tsig_key_file for z in config.dns.zones.values()]:
        secrets += [k.secret for k in read_key_file(path).values()]
    account_key = Path(config.acme.account_key).read_text()
    secrets.append("".join(account_key.splitlines()[1:-1])[:40])
    texts = [r.getMessage() for r in caplog.records] + [m.as_string() for m in mails]
    texts += [e.message for e in store.events()]
    texts += [o.message for o in report.outcomes]
    for secret in secrets:
        for text in texts:
            assert secret not in text


# --- the command --------------------------------------------------------------------------------


def test_cli_renew_json_dry_run_and_exit_status(dns_world: World, tmp_path: Path) -> None:
    from lecentral.cli.central import main

    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [SPARE[3]])
    toml = str(write_toml(config, tmp_path / "lecentral.toml"))
    runner = CliRunner()

    dry = runner.invoke(main, ["--config", toml, "renew", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert SPARE[3] in dry.output and "WOULD-ISSUE" in dry.output and "dry run: 1 would-issue" in dry.output

    # a dry run catches what the real run would fail on: here an issuer name with a typo
    typo = str(write_toml(config, tmp_path / "typo.toml", dns01_issuer="dns-subzon"))
    wrong = runner.invoke(main, ["--config", typo, "renew", "--dry-run"])
    assert wrong.exit_code == 1, wrong.output
    assert "FAILED" in wrong.output and "no issuer plugin named 'dns-subzon'" in wrong.output

    ok = runner.invoke(main, ["--config", toml, "renew", "--once", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["ok"] and [c["status"] for c in data["certificates"]] == ["issued"]

    add_row(store, [BADSECRET])
    bad = runner.invoke(main, ["--config", toml, "renew", BADSECRET])
    assert bad.exit_code == 1
    assert "FAILED" in bad.output and "BADSIG" in bad.output

    unknown = runner.invoke(main, ["--config", toml, "renew", "nothere.example.test"])
    assert unknown.exit_code != 0 and "no certificate named nothere.example.test" in unknown.output
