"""CSR and certificate handling, checked against the openssl command line the seed used."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from lecentral_testing.pki import make_csr, make_key, make_self_signed

from lecentral.certificates import (
    Certificate,
    Csr,
    check_name,
    is_ip,
    load_chain,
    md5_ca,
    normalise_digest,
    split_fullchain,
    verify_chain,
)
from lecentral.errors import CsrError


def sh(command: str, data: bytes | None = None) -> str:
    """A shell pipeline's stdout, as the seed's scripts ran them."""
    return subprocess.run(["sh", "-c", command], input=data, check=True,
                          capture_output=True).stdout.decode()


def openssl_md5_modulus(csr_path: Path) -> str:
    """What the seed's tooling stored: openssl req -noout -modulus -in X | openssl md5."""
    out = sh(f"openssl req -noout -modulus -in {csr_path} | openssl md5")
    return out.split("=")[-1].strip()


def openssl_csr(tmp_path: Path, subject: str, san: str | None, newkey: str = "rsa:2048") -> Path:
    """A CSR made by the openssl command line, with ``san`` as its subjectAltName (or none)."""
    csr_path = tmp_path / "c.csr"
    argv = ["openssl", "req", "-new", "-newkey", newkey, "-nodes", "-keyout", str(tmp_path / "k.pem"),
            "-out", str(csr_path), "-subj", subject]
    if san is not None:
        argv += ["-addext", f"subjectAltName={san}"]
    subprocess.run(argv, check=True, capture_output=True)
    return csr_path


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_md5_modulus_matches_openssl(tmp_path: Path, bits: int) -> None:
    csr_path = openssl_csr(tmp_path, "/CN=www.example.test", "DNS:www.example.test", f"rsa:{bits}")
    csr = Csr.load(csr_path.read_bytes())
    assert csr.md5_modulus == openssl_md5_modulus(csr_path)
    assert csr.key_type == f"RSA {bits}"


@pytest.mark.parametrize("curve, kind", [("prime256v1", "EC secp256r1"),
                                         ("secp384r1", "EC secp384r1")])
def test_ecdsa_fingerprint_matches_openssl(tmp_path: Path, curve: str, kind: str) -> None:
    """EC keys have no modulus: the SHA-256 of the DER SubjectPublicKeyInfo, as openssl makes it."""
    params = tmp_path / "ec.pem"
    sh(f"openssl ecparam -name {curve} -out {params}")
    csr_path = openssl_csr(tmp_path, "/CN=a.example.test", "DNS:a.example.test", f"ec:{params}")
    expected = sh(f"openssl req -in {csr_path} -noout -pubkey | openssl pkey -pubin -outform DER "
                  "| openssl sha256").split("=")[-1].strip()
    csr = Csr.load(csr_path.read_bytes())
    assert csr.md5_modulus == expected and len(expected) == 64
    assert csr.key_type == kind


def test_der_csr_is_accepted_and_gives_the_same_fingerprint(tmp_path: Path) -> None:
    pem, _ = make_csr(["a.example.test"])
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert Csr.load(der).md5_modulus == Csr.load(pem).md5_modulus


def test_certificate_and_csr_of_one_ec_key_match(tmp_path: Path) -> None:
    key = make_key("ec256")
    pem, _ = make_csr(["a.example.test"], key)
    crt, _ = make_self_signed(["a.example.test"], key)
    (tmp_path / "a.crt").write_bytes(crt)
    expected = sh(f"openssl x509 -in {tmp_path / 'a.crt'} -noout -pubkey | openssl pkey -pubin "
                  "-outform DER | openssl sha256").split("=")[-1].strip()
    assert Csr.load(pem).md5_modulus == Certificate.load(crt).md5_modulus == expected


def test_names_cn_first_then_sans_without_duplicates() -> None:
    pem, _ = make_csr(["www.example.test", "example.test", "www.example.test", "*.example.test"])
    assert Csr.load(pem).names == ["www.example.test", "example.test", "*.example.test"]


def test_small_rsa_key_is_refused() -> None:
    pem, _ = make_csr(["a.example.test"], make_key("rsa1024"))
    with pytest.raises(CsrError, match="1024 bits; at least 2048"):
        Csr.load(pem, "CSR file x.csr")


def test_garbage_is_refused_with_the_source_named() -> None:
    with pytest.raises(CsrError, match="CSR file /tmp/x.csr has a -----BEGIN CERTIFICATE "
                       "REQUEST----- block that is damaged"):
        Csr.load(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
                 "CSR file /tmp/x.csr")
    with pytest.raises(CsrError, match="is binary data that is not a certificate request"):
        Csr.load(b"\x30\x03\x02\x01\x00")


@pytest.mark.parametrize(("data", "words"), [
    (b"", "CSR file x.csr is empty: expected a certificate request (CSR) in PEM"),
    (b"not a CSR\n", ("CSR file x.csr is text, but not a certificate request (CSR): there is no "
                     "-----BEGIN CERTIFICATE REQUEST----- line")),
    (b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
     ("holds a PEM PRIVATE KEY, not a certificate request (CSR); a private key never leaves its "
     "server")),
    (b"-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----\n",
     "holds a PEM CERTIFICATE, not a certificate request (CSR); give the CSR, not a certificate"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIC\n", "block that is damaged (cut short"),
])
def test_garbage_csr_is_described_in_words(data: bytes, words: str) -> None:
    """Not the parser's internals (``Valid PEM but no BEGIN/END delimiters``, ASN.1 errors)."""
    with pytest.raises(CsrError) as caught:
        Csr.load(data, "CSR file x.csr")
    message = str(caught.value)
    assert words in message
    for internal in ("delimiters", "ASN.1", "asn1", "ParseError", "Valid PEM", "error parsing"):
        assert internal not in message


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
    assert md5_ca(ca) == sh("md5sum", ca_pem).split()[0] == sh("openssl md5", ca_pem).split()[-1]
    with pytest.raises(CsrError, match="is not issued by"):
        verify_chain(cert, load_chain(ca_pem))
    verify_chain(cert, [cert])  # self-signed: issued by itself


def test_wildcard_coverage() -> None:
    pem, _ = make_self_signed(["*.example.test"])
    cert = Certificate.load(pem)
    assert cert.covers("www.example.test")
    assert not cert.covers("a.b.example.test")
    assert not cert.covers("example.test")


@pytest.mark.parametrize("command", ["openssl md5", "openssl dgst -md5", "md5sum", "md5sum -",
                                     "md5sum | tr a-f A-F", "openssl md5 | tr a-f A-F"])
def test_digests_written_by_shell_pipelines_are_the_same_digest(command: str) -> None:
    """``(stdin)= hex``, ``MD5(stdin)= hex``, ``hex  -``, upper case: all read as the hex."""
    data = b"-----BEGIN CERTIFICATE-----\n...\n"
    printed = sh(command, data)
    assert normalise_digest(printed) == md5_ca(data)


@pytest.mark.parametrize("bad", ["", "(stdin)= nothex", "abc", "MD5(stdin)= " + "0" * 31,
                                 "0" * 40])
def test_what_is_no_digest_is_refused(bad: str) -> None:
    assert normalise_digest(bad) is None


@pytest.mark.parametrize("subject, san, message", [
    ("/CN=www.example.test", "DNS:www.example.test,email:root@example.test",
     "has subjectAltNames of type RFC822Name, which CAs refuse"),
    ("/CN=www.example.test/CN=other.example.test", "DNS:www.example.test",
     "has 2 CNs (www.example.test, other.example.test): CAs read one only"),
    ("/CN=Web Server", "DNS:www.example.test",
     ("its CN 'Web Server' is not a DNS name nor an IP address, but the CN is one of the "
      "certificate's names")),
    ("/O=Example", None, "names no domain (no CN and no DNS or IP subjectAltName)"),
])
def test_csrs_no_ca_issues_from_are_refused(tmp_path: Path, subject: str, san: str | None,
                                            message: str) -> None:
    csr_path = openssl_csr(tmp_path, subject, san)
    with pytest.raises(CsrError) as info:
        Csr.load(csr_path.read_bytes(), f"CSR file {csr_path}")
    assert f"CSR file {csr_path} " in str(info.value) or f"CSR file {csr_path}:" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("subject, san, names, outside", [
    # the seed's documented CSR: the CN is not repeated among the subjectAltNames
    ("/CN=foo.example.test", "DNS:bar.other.test", ["foo.example.test", "bar.other.test"],
     "foo.example.test"),
    # the seed's older CSRs: CN only, no subjectAltName extension at all
    ("/CN=foo.example.test", None, ["foo.example.test"], "foo.example.test"),
    # the CN among the SANs in another case: one name (DNS names compare case-insensitively)
    ("/CN=WWW.Example.TEST", "DNS:www.example.test,DNS:Other.Example.Test",
     ["www.example.test", "other.example.test"], None),
    # an IP address CN is an IP name (RFC 8738), written canonically, outside the SANs too
    ("/CN=2001:DB8:0::1", "DNS:www.example.test", ["2001:db8::1", "www.example.test"],
     "2001:db8::1"),
    ("/O=Example", "DNS:www.example.test", ["www.example.test"], None),
])
def test_a_csr_names_its_cn_then_its_sans(tmp_path: Path, subject: str, san: str | None,
                                          names: list[str], outside: str | None) -> None:
    """Issue 14: as certbot (acme.crypto_util.get_identifiers_from_x509) and Let's Encrypt
    (Boulder's NamesFromCSR) read a CSR: its CN, then its subjectAltNames, no duplicates."""
    csr = Csr.load(openssl_csr(tmp_path, subject, san).read_bytes())
    assert csr.names == names
    assert csr.cn_outside_sans == outside
    assert ("is not among its subjectAltNames" in csr.sans_only_hint()) == (outside is not None)


def test_ip_addresses_in_a_csr_are_kept(tmp_path: Path) -> None:
    """RFC 8738: openssl's IP: subjectAltNames are names of the CSR, written canonically (an
    IPv6 address compressed, lower case); a CN holding an IP matches its iPAddress SAN."""
    csr_path = openssl_csr(tmp_path, "/CN=www.example.test",
                           "DNS:www.example.test,IP:192.0.2.7,IP:2001:DB8:0:0::1")
    csr = Csr.load(csr_path.read_bytes())
    assert csr.names == ["www.example.test", "192.0.2.7", "2001:db8::1"]
    assert csr.ips == ["192.0.2.7", "2001:db8::1"]
    csr.require_name("2001:0DB8::1", "CSR")
    only_ip = openssl_csr(tmp_path, "/CN=192.0.2.7", "IP:192.0.2.7")
    assert Csr.load(only_ip.read_bytes()).names == ["192.0.2.7"]


def test_ip_names_and_their_coverage(tmp_path: Path) -> None:
    """An IP is covered by the same address in an iPAddress SAN, however it is spelt; never by
    a wildcard, nor by a DNS name that reads like it."""
    assert check_name(" 2001:DB8:0::1 ") == "2001:db8::1" and check_name("192.0.2.7") == "192.0.2.7"
    with pytest.raises(CsrError, match="with a zone"):
        check_name("fe80::1%eth0")
    with pytest.raises(CsrError, match="not a valid DNS name .* nor an IP address"):
        check_name("999.0.0.1")
    key = make_key()
    for names in (["192.0.2.7", "2001:db8::1"], ["*.0.2.7", "www.example.test"]):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([])).issuer_name(x509.Name([]))
                   .public_key(key.public_key()).serial_number(1)
                   .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)).not_valid_after(dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n)
                        for n in names]), critical=False))
        cert = Certificate.load(builder.sign(key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM))
        ip_cert = names[0] == "192.0.2.7"
        assert cert.covers("192.0.2.7") is ip_cert
        assert cert.covers("2001:0DB8:0:0:0:0:0:1") is ip_cert
        assert not cert.covers("192.0.2.8")


def test_the_agents_csr_for_an_ip_has_no_cn(tmp_path: Path) -> None:
    """lecentral-install csr 192.0.2.7 --san www.example.test: an iPAddress SAN and no CN (CAs
    read a CN as a DNS name); with a DNS name first, that name is the CN."""
    from lecentral.install.csr import build_csr

    key = make_key()
    csr = build_csr(["192.0.2.7", "www.example.test"], key)
    assert csr.csr.subject == x509.Name([]) and csr.names == ["www.example.test", "192.0.2.7"]
    csr = build_csr(["www.example.test", "192.0.2.7"], key)
    assert csr.csr.subject.rfc4514_string() == "CN=www.example.test"
    assert csr.ips == ["192.0.2.7"]


def test_a_csr_without_cn_but_with_sans_is_fine(tmp_path: Path) -> None:
    csr_path = openssl_csr(tmp_path, "/O=Example", "DNS:a.example.test,DNS:b.example.test")
    assert Csr.load(csr_path.read_bytes()).names == ["a.example.test", "b.example.test"]


def test_require_name_says_which_name_is_missing() -> None:
    csr = Csr.load(make_csr(["a.example.test", "b.example.test"])[0])
    csr.require_name("B.Example.TEST", "x")
    with pytest.raises(CsrError, match="CSR file c.csr does not name www.example.test "
                       r"\(it names a.example.test, b.example.test\)"):
        csr.require_name("www.example.test", "CSR file c.csr")
