"""CSR and certificate handling, checked against the openssl command line the seed used."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lecentral.certificates import (
    Certificate,
    Csr,
    check_name,
    load_chain,
    md5_ca,
    split_fullchain,
    verify_chain,
)
from lecentral.errors import CsrError
from lecentral.testing.pki import make_csr, make_key, make_self_signed


def openssl_md5_modulus(csr_path: Path) -> str:
    """What the seed's tooling stored: openssl req -noout -modulus -in X | openssl md5."""
    modulus = subprocess.run(["openssl", "req", "-noout", "-modulus", "-in", str(csr_path)],
                             check=True, capture_output=True).stdout
    out = subprocess.run(["openssl", "md5"], input=modulus, check=True, capture_output=True,
                         text=False).stdout.decode()
    return out.split("=")[-1].strip()


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_md5_modulus_matches_openssl(tmp_path: Path, bits: int) -> None:
    key = tmp_path / "k.pem"
    csr_path = tmp_path / "c.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", str(key),
                    "-out", str(csr_path), "-subj", "/CN=www.example.test"],
                   check=True, capture_output=True)
    csr = Csr.load(csr_path.read_bytes())
    assert csr.md5_modulus == openssl_md5_modulus(csr_path)
    assert csr.key_type == f"RSA {bits}"


def test_der_csr_is_accepted_and_gives_the_same_fingerprint(tmp_path: Path) -> None:
    pem, _ = make_csr(["a.example.test"])
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert Csr.load(der).md5_modulus == Csr.load(pem).md5_modulus


def test_ecdsa_fingerprint_is_sha256_of_spki() -> None:
    key = make_key("ec256")
    pem, _ = make_csr(["a.example.test"], key)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    csr = Csr.load(pem)
    assert csr.md5_modulus == hashlib.sha256(spki).hexdigest()
    assert len(csr.md5_modulus) == 64
    assert csr.key_type == "EC secp256r1"


def test_names_cn_first_then_sans_without_duplicates() -> None:
    pem, _ = make_csr(["www.example.test", "example.test", "www.example.test", "*.example.test"])
    assert Csr.load(pem).names == ["www.example.test", "example.test", "*.example.test"]


def test_small_rsa_key_is_refused() -> None:
    pem, _ = make_csr(["a.example.test"], make_key("rsa1024"))
    with pytest.raises(CsrError, match="1024 bits; at least 2048"):
        Csr.load(pem, "CSR file x.csr")


def test_garbage_is_refused_with_the_source_named() -> None:
    with pytest.raises(CsrError, match="CSR file /tmp/x.csr is not a valid PEM or DER"):
        Csr.load(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
                 "CSR file /tmp/x.csr")
    with pytest.raises(CsrError, match="not a valid PEM or DER"):
        Csr.load(b"\x30\x03\x02\x01\x00")


def test_tampered_csr_signature_is_refused() -> None:
    pem, _ = make_csr(["a.example.test"])
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    index = der.find(b"a.example.test")
    der[index] = ord("b")  # the name changes, the signature does not
    with pytest.raises(CsrError, match="invalid signature"):
        Csr.load(bytes(der))


@pytest.mark.parametrize("bad", ["", "localhost", "-a.example.test", "a..example.test",
                                 "a_b.example.test", "x" * 64 + ".example.test",
                                 "a.example.test;drop table certs"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(CsrError, match="not a valid DNS name"):
        check_name(bad)


def test_valid_names_are_normalised() -> None:
    assert check_name("WWW.Example.TEST.") == "www.example.test"
    assert check_name("*.example.test") == "*.example.test"


def test_certificate_fields_chain_and_md5_ca() -> None:
    leaf_pem, leaf_key = make_self_signed(["a.example.test", "b.example.test"])
    ca_pem, _ = make_self_signed(["ca.example.test"])
    cert = Certificate.load(leaf_pem)
    assert cert.names == ["a.example.test", "b.example.test"]
    assert cert.covers("b.example.test") and not cert.covers("c.example.test")
    assert cert.md5_modulus == Csr.load(make_csr(["a.example.test"], leaf_key)[0]).md5_modulus
    assert cert.not_after > cert.not_before
    leaf, ca = split_fullchain(leaf_pem + ca_pem)
    assert leaf == leaf_pem and ca == ca_pem
    assert md5_ca(ca) == hashlib.md5(ca_pem).hexdigest()
    with pytest.raises(CsrError, match="is not issued by"):
        verify_chain(cert, load_chain(ca_pem))
    verify_chain(cert, [cert])  # self-signed: issued by itself


def test_wildcard_coverage() -> None:
    pem, _ = make_self_signed(["*.example.test"])
    cert = Certificate.load(pem)
    assert cert.covers("www.example.test")
    assert not cert.covers("a.b.example.test")
    assert not cert.covers("example.test")
