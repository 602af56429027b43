"""Keys, CSRs and self-signed certificates for tests, made with ``cryptography``.

Servers make their own keys in real life (``lecentral-install csr``); tests need the same objects
quickly and in many shapes: RSA or ECDSA, one name or several, weak keys for error paths.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_key(kind: str = "rsa2048") -> PrivateKey:
    """``rsa1024``/``rsa2048``/``rsa3072``/``rsa4096`` or ``ec256``/``ec384``."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    curve = {"ec256": ec.SECP256R1(), "ec384": ec.SECP384R1()}[kind]
    return ec.generate_private_key(curve)


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(name: str) -> x509.GeneralName:
    """An IP address as an iPAddress subjectAltName (RFC 8738), anything else as a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_csr(names: list[str], key: PrivateKey | None = None) -> tuple[bytes, PrivateKey]:
    """A PEM CSR with CN = names[0] and every name as a SAN (IP addresses as iPAddress SANs, and
    never as the CN: an IP first name gives an empty subject); returns (csr_pem, key)."""
    key = key or make_key()
    first = _san(names[0])
    subject = ([] if isinstance(first, x509.IPAddress)
               else [x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(subject)
    ).add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key


def make_self_signed(names: list[str], key: PrivateKey | None = None, *, days: int = 30,
                     not_before: dt.datetime | None = None) -> tuple[bytes, PrivateKey]:
    """A PEM self-signed certificate for ``names`` (a CA of itself); returns (cert_pem, key)."""
    key = key or make_key()
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key


def write_private(path: Path, data: bytes) -> Path:
    """Write key material with mode 0600 from the start (never readable by others, even briefly)."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
