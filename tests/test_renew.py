"""The renew job against a real Pebble CA and a real BIND with per-name sub-zones (SQLite store).

Each test adds its own rows to a fresh SQLite database; the CA, the nameserver and the sub-zones
are shared by the whole session (``dns_world``, see renew_world.py).
"""

from __future__ import annotations

import dataclasses
import logging
import stat
from pathlib import Path
from typing import Any

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
    open_store,
    renew_cli,
    run,
    write_toml,
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
    assert row.old_crt == first.crt and row.crt != first.crt
    # the same Pebble CA signed both: old_ca is kept for a CA change, not every issuance
    assert row.ca == first.ca and row.old_ca is None


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
    """A misnamed issuer is the run's plugin problem (exit 3, said once), not the row's failure."""
    # the HTTP-01 issuers themselves are tested in test_webroot*.py
    add_row(store, [SPARE[5]], certbot=True, webroot_path=str(tmp_path))
    config = dataclasses.replace(config, renew=dataclasses.replace(config.renew,
                                                                   http01_issuer="certbot-webrot"))
    report = run(config, store)
    outcome = report.final[0]
    assert outcome.status == "blocked" and "no issuer plugin named 'certbot-webrot'" in outcome.message
    (problem,) = report.problems
    assert problem.exit_code == 3 and problem.names == [SPARE[5]] and not report.ok
    row = store.get(SPARE[5])
    assert row is not None and row.crt is None and row.count_fail_update == 0


def test_a_corrupt_stored_certificate_is_reissued_without_force(dns_world: World,
                                                                config: CentralConfig,
                                                                store: SqlStore) -> None:
    """UPDATE certs SET crt='garbage': the next run (a day later) orders a new certificate."""
    from sqlalchemy import text

    _, key = add_row(store, [SPARE[6]])
    assert run(config, store).final[0].status == "issued"
    first = store.get(SPARE[6])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE certs SET crt = 'garbage', ts_last_update = ts_last_update - "
                          "86400 WHERE name = :n"), {"n": SPARE[6]})
    report = run(config, store)
    outcome = report.final[0]
    assert outcome.status == "issued", outcome.message
    assert_issued(store, SPARE[6], [SPARE[6]], key)
    row = store.get(SPARE[6])
    assert row is not None and first is not None and row.crt != first.crt
    assert row.old_crt == b"garbage" and row.old_ca is None  # same CA: no old_ca
    assert [e.kind for e in store.events(SPARE[6])] == ["issued", "issued", "added"]


def _bad_csr(kind: str) -> tuple[bytes, Any]:
    """A CSR that lecentral add refuses, as a row written past it might hold (key returned)."""
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    from lecentral_testing.pki import make_csr, make_key

    name = SPARE[7]
    if kind == "not-the-row":
        return make_csr([ONE])
    key = make_key()
    choices: dict[str, list[x509.GeneralName]] = {
        "ip": [x509.DNSName(name), x509.IPAddress(ip_address("127.0.0.1"))],
    }
    sans = choices[kind]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


BAD_CSRS = {
    "ip": (f"{SPARE[7]}: the CSR asks for the IP address 127.0.0.1: IP addresses are proved by "
           "HTTP-01 only (RFC 8738), never by DNS-01: add it with --certbot --webroot PATH"),
    "not-the-row": f"does not name {SPARE[7]} (it names {ONE})",
}


@pytest.mark.parametrize("kind", list(BAD_CSRS))
def test_a_bad_csr_in_the_database_is_invalid_never_a_crash(dns_world: World,
                                                           config: CentralConfig,
                                                           store: SqlStore, kind: str) -> None:
    """An IP SAN used to reach the issuer and crash (TypeError); these rows are now refused
    before any order, with the reason, and left as they were."""
    from lecentral.certificates import md5_modulus
    from lecentral.store.rows import CertRow

    pem, key = _bad_csr(kind)
    store.add(CertRow(name=SPARE[7], csr=pem, md5_modulus=md5_modulus(key.public_key()),
                      enable=True, ts_expire=1, ts_last_update=1, count_fail_update=0))
    before = store.get(SPARE[7])
    report = run(config, store)
    outcome = report.final[0]
    assert outcome.status == "invalid" and BAD_CSRS[kind] in outcome.message, outcome.message
    assert store.get(SPARE[7]) == before
    assert [e.kind for e in store.events(SPARE[7])] == ["added"]
    assert challenge_txt(dns_world, SPARE[7]) == []


def test_a_seed_row_with_capitals_and_shell_digests_renews_on_mariadb(dns_world: World,
                                                                      mariadb_url: str,
                                                                      tmp_path: Path) -> None:
    """The seed's table (ascii_bin) with the name as the admin typed it and md5_modulus as
    openssl printed it: issued and saved under its own name, never renamed."""
    from lecentral_testing.pki import make_csr
    from sqlalchemy import text

    from lecentral.certificates import Csr

    config = make_config(dns_world, tmp_path, db_url=mariadb_url)
    store = open_store(config)
    pem, key = make_csr([SPARE[7]])
    typed = SPARE[7].replace("n8.example", "N8.Example")
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, "
                          "ts_last_update) VALUES (:n, 'Y', :c, :m, 1, 1)"),
                     {"n": typed, "c": pem, "m": f"(stdin)= {Csr.load(pem).md5_modulus.upper()}"})
    try:
        report = run(config, store)
        assert [(o.name, o.status) for o in report.final] == [(SPARE[7], "issued")], report.final
        assert_issued(store, SPARE[7], [SPARE[7]], key)
        with store.engine.begin() as conn:
            assert conn.execute(text("SELECT name FROM certs")).scalars().all() == [typed]
        assert run(config, store, names=(typed,)).final[0].status == "not-due"
    finally:
        store.close()


#: the phases of a DNS-01 issue by the built-in dns-subzone issuer, in order (lecentral.phases)
DNS01_PHASES = ["dns_check", "account", "order", "dns_publish", "propagation", "validation", "finalize",
                "dns_remove", "save"]


def test_json_says_where_each_certificates_time_went(dns_world: World, config: CentralConfig,
                                                     store: SqlStore, tmp_path: Path) -> None:
    """``lecentral renew --json``: each attempt's phases (name -> seconds), and the run's own
    (start of run, select, the pass)."""
    add_row(store, [ONE])
    result = renew_cli(write_toml(config, tmp_path / "lecentral.toml"), ONE)
    assert result.exit_code == 0, result.stderr
    outcome = result.outcome(ONE)
    assert outcome["status"] == "issued"
    assert sorted(outcome["phases"]) == sorted(DNS01_PHASES)
    assert all(isinstance(s, float) and s >= 0 for s in outcome["phases"].values())
    # and what each cost in CPU (the worker thread's), for a run of many workers
    assert sorted(outcome["phases_cpu"]) == sorted(DNS01_PHASES)
    assert all(isinstance(s, float) and s >= 0 for s in outcome["phases_cpu"].values())
    assert outcome["cpu_seconds"] > 0
    assert [a["phases"] for a in result.data["attempts"]] == [outcome["phases"]]
    assert sorted(result.data["phases"]) == ["issue", "select", "start_of_run"]


def test_verbose_log_and_a_failure_show_how_far_a_certificate_got(
        dns_world: World, config: CentralConfig, store: SqlStore,
        caplog: pytest.LogCaptureFixture) -> None:
    """The INFO line (``lecentral -v renew``) names the phases; a key the server refuses fails in
    the zone test: no phase after it ran, so no order was made at the CA."""
    add_row(store, [ONE])
    add_row(store, [BADSECRET])
    with caplog.at_level(logging.INFO, logger="lecentral.renew.job"):
        report = run(config, store)
    by_name = {o.name: o for o in report.final}
    assert by_name[ONE].status == "issued" and list(by_name[ONE].phases) == DNS01_PHASES
    assert by_name[BADSECRET].status == "failed"
    assert list(by_name[BADSECRET].phases) == ["dns_check"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{ONE}: issued in")]
    assert len(lines) == 1 and all(f"{phase} " in lines[0] for phase in DNS01_PHASES), lines
