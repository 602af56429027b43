"""Issue 14: the seed's own CSRs taken over, against a real Pebble and a real BIND (DNS-01).

The seed's documentation makes CSRs with ``commonName = foo`` and ``subjectAltName = DNS:bar`` (the
CN not repeated among the SANs), and its older CSRs are CN-only; it got their certificates with
``certbot certonly --csr``, which orders the CN with the SANs, and Let's Encrypt certifies them all
(Boulder's NamesFromCSR adds the CN to the SANs). lecentral reads them the same way: names = CN
then SANs, ordered together, each proved in its own sub-zone.

Pebble (the tests' CA, 2.4.0 here and still in its newest source) is not Boulder: at finalization
it compares the order's identifiers with the CSR's subjectAltNames only, so it refuses these CSRs
("Order includes different number of DNSnames identifiers than CSR specifies"), and ordering the
SANs alone would get a certificate without the CN. These tests therefore check what Pebble can
show for real: the order carries CN + SANs, both are validated over DNS-01, and Pebble's refusal
reaches the operator with the reason and what to do, nothing stored. The certificate such a row
already holds after the seed (Let's Encrypt's, for CN + SANs) is made by the tests' own CA
(lecentral_testing's TestCA signs exactly the CSR's names, as Boulder does: no Boulder runs here);
list and doctor then show the row healthy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from lecentral_testing.agent import TestCA
from lecentral_testing.pki import make_csr, make_key
from renew_world import (
    SPARE,
    World,
    assert_issued,
    make_config,
    open_store,
    renew_cli,
    write_toml,
)

from lecentral.certificates import Certificate
from lecentral.cli.central import main

# CN and subjectAltNames, each name with its own sub-zone in the shared BIND
SEED_CSRS = {
    "cn-outside-sans": (SPARE[5], [SPARE[6]]),  # the seed's docs: CN foo, SAN bar only
    "cn-only": (SPARE[4], None),  # the seed's older CSRs: no subjectAltName at all
}
PEBBLE_REFUSAL = "Order includes different number of DNSnames identifiers than CSR specifies"


def seed_csr(cn: str, sans: list[str] | None) -> tuple[bytes, Any]:
    """A CSR as the seed's openssl config makes it: ``sans`` None for no subjectAltName."""
    key = make_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if sans is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


def cli(toml: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(toml), *args])


@pytest.mark.parametrize("kind", list(SEED_CSRS))
def test_a_seed_csr_is_added_ordered_with_its_cn_and_shown_healthy(dns_world: World,
                                                                   tmp_path: Path,
                                                                   kind: str) -> None:
    cn, sans = SEED_CSRS[kind]
    names = [cn, *(sans or [])]
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    toml = write_toml(config, tmp_path / "lecentral.toml", min_interval=0)
    pem, key = seed_csr(cn, sans)
    (tmp_path / "seed.csr").write_bytes(pem)
    try:
        added = cli(toml, "add", cn, "--csr", str(tmp_path / "seed.csr"), "--enable")
        assert added.exit_code == 0, added.output
        assert f"added {cn} ({', '.join(names)}; RSA 2048; dns); enabled" in added.stdout, added.stdout
        assert f"the CSR's CN {cn} is not among its subjectAltNames" in added.stderr
        listed = cli(toml, "list")
        assert listed.exit_code == 0 and "INVALID" not in listed.output, listed.output

        # the real Pebble: the order carries the CN and the SANs, each proved in its sub-zone,
        # and Pebble's refusal at finalization (it reads the SANs only) says why and what to do
        renewed = renew_cli(toml, "--once", cn)
        outcome = renewed.outcome(cn)
        assert renewed.exit_code != 0 and outcome["status"] == "failed", renewed.data
        message = outcome["message"]
        assert "finalizing the order for" in message and PEBBLE_REFUSAL in message, message
        ordered = message.split("finalizing the order for ", 1)[1].split(":", 1)[0].split(", ")
        assert sorted(ordered) == sorted(names), message
        assert (f"the CSR's CN {cn} is not among its subjectAltNames: lecentral orders it with "
                "them, as certbot does and Let's Encrypt certifies, but this CA takes a CSR's "
                "names from its subjectAltName extension only (Pebble does) and refuses the CSR; "
                "make a CSR with every name in subjectAltName") in message
        row = store.get(cn)
        assert row is not None and row.crt is None and row.ca is None and row.csr == pem
        assert row.count_fail_update == 1
        for name in names:
            assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []

        # taken over: the certificate Let's Encrypt issued the seed for it (CN + SANs) is healthy
        ca = TestCA()
        crt = ca.sign(pem, days=60)
        assert sorted(Certificate.load(crt).names) == sorted(names)
        assert (Certificate.load(crt).cert.public_key().public_numbers()
                == key.public_key().public_numbers())  # the server's key
        store.save_issued(cn, crt, ca.pem, Certificate.load(crt).not_after, 2)
        listed = cli(toml, "list", "--json")
        assert listed.exit_code == 0, listed.output
        [item] = json.loads(listed.stdout)
        assert item["names"] == names and item["problems"] == [], item
        doctor = cli(toml, "doctor", "--json")  # with the DNS checks of every name
        findings = json.loads(doctor.stdout)["findings"]
        assert doctor.exit_code == 0, findings
        assert not [f for f in findings if f["level"] in ("error", "warning")], findings
    finally:
        store.close()


def test_the_same_names_in_the_sans_are_issued_by_pebble(dns_world: World, tmp_path: Path) -> None:
    """What the refusal above tells to do: the CN repeated among the SANs; Pebble issues it."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    toml = write_toml(config, tmp_path / "lecentral.toml", min_interval=0)
    pem, key = make_csr([SPARE[5], SPARE[6]])
    (tmp_path / "fixed.csr").write_bytes(pem)
    try:
        assert cli(toml, "add", SPARE[5], "--csr", str(tmp_path / "fixed.csr"),
                   "--enable").exit_code == 0
        renewed = renew_cli(toml, "--once", SPARE[5])
        assert renewed.exit_code == 0, renewed.data
        assert_issued(store, SPARE[5], [SPARE[5], SPARE[6]], key)
    finally:
        store.close()


def test_the_cn_outside_the_sans_needs_its_own_sub_zone(dns_world: World, tmp_path: Path) -> None:
    """DNS-01 proves every name, the CN included: a CN without a sub-zone is found by doctor and
    stops the renewal before any order (nothing stored, no TXT left)."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    toml = write_toml(config, tmp_path / "lecentral.toml", min_interval=0)
    cn = "nosubzone.example.test"
    pem, _ = seed_csr(cn, [SPARE[6]])
    (tmp_path / "seed.csr").write_bytes(pem)
    try:
        assert cli(toml, "add", cn, "--csr", str(tmp_path / "seed.csr"), "--enable").exit_code == 0
        doctor = cli(toml, "doctor", "--json")
        findings = json.loads(doctor.stdout)["findings"]
        assert doctor.exit_code == 1, findings
        errors = {(f["name"], f["check"]) for f in findings if f["level"] == "error"}
        assert (cn, "dns-subzone") in errors and {n for n, _ in errors} == {cn}, findings
        renewed = renew_cli(toml, "--once", cn)
        outcome = renewed.outcome(cn)
        assert outcome["status"] != "issued" and cn in outcome["message"], outcome
        assert "finalizing" not in outcome["message"], outcome
        row = store.get(cn)
        assert row is not None and row.crt is None
        assert dns_world.bind.txt_values(f"_acme-challenge.{SPARE[6]}") == []
    finally:
        store.close()
