"""CSRs and certificates: parsing (PEM or DER), names, key checks and the seed's fingerprints.

``md5_modulus`` is computed exactly as the seed's tooling does, so values match existing rows:
for RSA, the MD5 hex of ``Modulus=<UPPERCASE HEX>\\n`` (what ``openssl req -noout -modulus -in X.csr |
openssl md5`` prints); for ECDSA keys, which have no modulus, the SHA-256 hex of the DER
SubjectPublicKeyInfo (64 characters, which the column holds).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from lecentral.errors import CsrError

# re-exported: certificates and names were one module
from lecentral.names import MAX_NAME_LENGTH as MAX_NAME_LENGTH  # noqa: PLC0414
from lecentral.names import check_name as check_name  # noqa: PLC0414
from lecentral.names import ip_name as ip_name  # noqa: PLC0414
from lecentral.names import is_ip as is_ip  # noqa: PLC0414
from lecentral.names import md5_ca as md5_ca  # noqa: PLC0414
from lecentral.names import normalise_digest as normalise_digest  # noqa: PLC0414
from lecentral.names import now_ts as now_ts  # noqa: PLC0414
from lecentral.names import when as when  # noqa: PLC0414

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
             | ed448.Ed448PublicKey)

MIN_RSA_BITS = 2048
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")


def unparsable(data: bytes, source: str, what: str, labels: tuple[str, ...]) -> str:
    """Why ``data`` is not ``what`` (labels: its PEM labels), in words: the parser's own message
    (``Valid PEM but no BEGIN CERTIFICATE REQUEST/END delimiters``, ASN.1 errors) means nothing
    to whoever pasted the wrong file."""
    if not data.strip():
        return f"{source} is empty: expected {what} in PEM (-----BEGIN {labels[0]}-----) or DER"
    found = [m.decode("ascii") for m in _PEM_LABEL.findall(data)]
    if found and not set(found) & set(labels):
        hint = ""
        if any("PRIVATE KEY" in f for f in found):
            hint = ("; a private key never leaves its server: give the CSR that "
                    "lecentral-install csr made next to it")
        elif "CERTIFICATE REQUEST" in labels and "CERTIFICATE" in found:
            hint = "; give the CSR, not a certificate"
        return f"{source} holds a PEM {' and '.join(dict.fromkeys(found))}, not {what}{hint}"
    if found:
        return (f"{source} has a -----BEGIN {labels[0]}----- block that is damaged (cut short, "
                "edited, or its END line missing); copy the whole file again")
    text = data.decode("utf-8", "replace")
    if all(c.isprintable() or c.isspace() for c in text) and "\ufffd" not in text:
        return (f"{source} is text, but not {what}: there is no -----BEGIN {labels[0]}----- "
                "line")
    return f"{source} is binary data that is not {what} in DER either"


def md5_modulus(public_key: object) -> str:
    """The seed's ``md5_modulus`` for a public key (see the module docstring)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        modulus = format(public_key.public_numbers().n, "X")
        return hashlib.md5(f"Modulus={modulus}\n".encode("ascii")).hexdigest()
    if isinstance(public_key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey,
                               ed448.Ed448PublicKey)):
        der = public_key.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()
    raise CsrError(f"unsupported public key type {type(public_key).__name__}; use RSA or ECDSA")


def key_description(public_key: object) -> str:
    """``RSA 2048``, ``EC secp256r1``...: for listings and errors."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    return type(public_key).__name__.replace("PublicKey", "")


def _check_key(public_key: object, what: str) -> None:
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        raise CsrError(
            f"{what} has an RSA key of {public_key.key_size} bits; at least {MIN_RSA_BITS} "
            "are required: make a new key and CSR (lecentral-install csr NAME --key PATH)"
        )
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise CsrError(f"{what} has a {key_description(public_key)} key; use RSA or ECDSA")


def _names(subject: x509.Name, extensions: x509.Extensions) -> list[str]:
    """The names as certbot and Let's Encrypt read them: the CN first, then the DNS
    subjectAltNames, then the IP ones (canonical text), lower-cased, no duplicates; a CN absent
    from the subjectAltNames (the seed's documented CSRs) or a CSR with no subjectAltName at all
    (CN-only) still names its CN (certbot's get_identifiers_from_x509, Boulder's NamesFromCSR)."""
    names: list[str] = []
    for attr in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        names.append(ip_name(value) or value.lower())
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(n.lower() for n in san.get_values_for_type(x509.DNSName))
        names.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    return list(dict.fromkeys(names))  # CN first, no duplicates


def _check_csr_names(csr: x509.CertificateSigningRequest, source: str) -> None:
    """Refuse what no CA issues from: subjectAltNames other than DNS names and IP addresses
    (RFC 8738), IP networks, more than one CN, a CN that is no DNS name nor IP address (the CN is
    one of the certificate's names: certbot and Let's Encrypt order it with the SANs)."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    networks = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)
                if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))]
    if networks:
        raise CsrError(f"{source} has the IP network {', '.join(networks)} as a subjectAltName: a "
                       "certificate names single IP addresses only; make a CSR with the address")
    others = [n for n in san if not isinstance(n, (x509.DNSName, x509.IPAddress))]
    if others:
        kinds = ", ".join(sorted({type(n).__name__ for n in others}))
        raise CsrError(f"{source} has subjectAltNames of type {kinds}, which CAs refuse; make a CSR "
                       "with DNS names and IP addresses only (lecentral-install csr NAME --key PATH)")
    cns = [a.value if isinstance(a.value, str) else a.value.decode()
           for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(cns) > 1:
        raise CsrError(
            f"{source} has {len(cns)} CNs ({', '.join(cns)}): CAs read one only (certbot the "
            "first, Let's Encrypt the last), so which names the certificate gets is unclear; make "
            "a CSR with one CN (lecentral-install csr NAME --key PATH)")
    for cn in cns:
        try:
            check_name(cn)
        except CsrError:
            raise CsrError(
                f"{source}: its CN {cn!r} is not a DNS name nor an IP address, but the CN is one "
                "of the certificate's names (certbot and Let's Encrypt order it with the "
                "subjectAltNames), so the CA would refuse the order; make a CSR whose CN is one "
                "of its names (lecentral-install csr NAME --key PATH)") from None


def check_methods(row_name: str, names: list[str], http01: bool) -> None:
    """CsrError unless one challenge type can prove every name of a row: IP addresses only by
    HTTP-01 (RFC 8738 §7: no DNS-01 for IPs), wildcards only by DNS-01 (RFC 8555 §8.3); so IPs
    need a certbot='Y' (HTTP-01) row, and never share a certificate with a wildcard."""
    ips = [n for n in names if is_ip(n)]
    if not ips:
        return
    wild = [n for n in names if n.startswith("*.")]
    if wild:
        raise CsrError(
            f"{row_name}: the CSR asks for the IP address {', '.join(ips)}, which only HTTP-01 "
            f"proves, and the wildcard {', '.join(wild)}, which only DNS-01 proves: no one "
            f"challenge type proves both; make two CSRs, one with the IP addresses (added with "
            f"--certbot --webroot PATH) and one with the wildcard names")
    if not http01:
        raise CsrError(
            f"{row_name}: the CSR asks for the IP address {', '.join(ips)}: IP addresses are "
            f"proved by HTTP-01 only (RFC 8738), never by DNS-01: add it with --certbot "
            f"--webroot PATH (the DocumentRoot the web server serves at http://{ips[0]}/ and for "
            f"every other name of the certificate)")


@dataclass(frozen=True)
class Csr:
    """A parsed, checked certificate signing request."""

    csr: x509.CertificateSigningRequest

    @classmethod
    def load(cls, data: bytes, source: str = "CSR") -> Csr:
        """Parse PEM or DER; check the signature and the key. ``source`` names it in errors."""
        try:
            if b"-----BEGIN" in data:
                csr = x509.load_pem_x509_csr(data)
            else:
                csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise CsrError(unparsable(data, source, "a certificate request (CSR)",
                                      _CSR_LABELS)) from None
        if not csr.is_signature_valid:
            raise CsrError(f"{source} has an invalid signature: it was altered or corrupted")
        _check_key(csr.public_key(), source)
        _check_csr_names(csr, source)
        names = _names(csr.subject, csr.extensions)
        if not names:
            raise CsrError(f"{source} names no domain (no CN and no DNS or IP subjectAltName)")
        for name in names:
            check_name(name)
        return cls(csr)

    @property
    def names(self) -> list[str]:
        """Every name: the CN first, then the SANs, without duplicates."""
        return _names(self.csr.subject, self.csr.extensions)

    def require_name(self, name: str, source: str) -> None:
        """Raise CsrError unless ``name`` (a row's name) is one of this CSR's names."""
        if (ip_name(name) or name.lower()) not in self.names:
            raise CsrError(f"{source} does not name {name} (it names {', '.join(self.names)}): the "
                           f"row's name must be its CN or one of its subjectAltNames; make a CSR "
                           f"that includes {name}")

    @property
    def cn(self) -> str | None:
        """The CN as a name (lower case, an IP address canonical), None if the subject has none."""
        if not self.csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            return None
        return self.names[0]  # the CN comes first

    @property
    def cn_outside_sans(self) -> str | None:
        """The CN (canonical) when it is not among the subjectAltNames (a CN-only CSR included),
        else None: certbot and Let's Encrypt certify it with them; CAs taking the names from the
        subjectAltName extension only (Pebble) refuse such a CSR at finalization."""
        cn = self.cn
        if cn is None:
            return None
        try:
            san = self.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cn
        sans = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        sans |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        return None if cn in sans else cn

    def sans_only_hint(self) -> str:
        """What to tell when a CA refused this CSR at finalization: empty unless its CN is
        outside its subjectAltNames (:attr:`cn_outside_sans`)."""
        cn = self.cn_outside_sans
        if cn is None:
            return ""
        return (f"the CSR's CN {cn} is not among its subjectAltNames: lecentral orders it with "
                "them, as certbot does and Let's Encrypt certifies, but this CA takes a CSR's "
                "names from its subjectAltName extension only (Pebble does) and refuses the "
                "CSR; make a CSR with every name in subjectAltName (lecentral-install csr NAME "
                "--key PATH) and store it with lecentral set-csr")

    @property
    def ips(self) -> list[str]:
        """The IP addresses among :attr:`names` (RFC 8738 identifiers)."""
        return [n for n in self.names if is_ip(n)]

    @property
    def pem(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.DER)

    @property
    def md5_modulus(self) -> str:
        return md5_modulus(self.csr.public_key())

    @property
    def key_type(self) -> str:
        return key_description(self.csr.public_key())


@dataclass(frozen=True)
class Certificate:
    """A parsed X.509 certificate."""

    cert: x509.Certificate

    @classmethod
    def load(cls, data: bytes, source: str = "certificate") -> Certificate:
        """Parse the first certificate of PEM or DER ``data``."""
        try:
            if b"-----BEGIN" in data:
                return cls(x509.load_pem_x509_certificates(data)[0])
            return cls(x509.load_der_x509_certificate(data))
        except (ValueError, IndexError):
            raise CsrError(unparsable(data, source, "a certificate", ("CERTIFICATE",))) from None

    @property
    def names(self) -> list[str]:
        return _names(self.cert.subject, self.cert.extensions)

    @property
    def not_after(self) -> int:
        """notAfter as a Unix timestamp (the seed's ``ts_expire``)."""
        return int(self.cert.not_valid_after_utc.timestamp())

    @property
    def not_before(self) -> int:
        return int(self.cert.not_valid_before_utc.timestamp())

    @property
    def md5_modulus(self) -> str:
        return md5_modulus(self.cert.public_key())

    @property
    def key_type(self) -> str:
        return key_description(self.cert.public_key())

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, lower-case hex, as verifiers compare it."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.cert.issuer.rfc4514_string()

    def covers(self, name: str) -> bool:
        """True if ``name`` is one of the certificate's names or matched by one of its wildcards;
        an IP address only by the same address in an iPAddress subjectAltName (any spelling:
        ``::1`` and ``0:0::1`` are one address; a wildcard never covers an IP)."""
        ip = ip_name(name)
        if ip is not None:
            return ip in self.names
        name = name.lower()
        for have in self.names:
            if have == name or (have.startswith("*.") and name.split(".", 1)[-1] == have[2:]
                                and name.count(".") == have.count(".")):
                return True
        return False


def load_chain(data: bytes, source: str = "chain") -> list[Certificate]:
    """Every certificate of a PEM bundle, in order."""
    try:
        return [Certificate(c) for c in x509.load_pem_x509_certificates(data)]
    except ValueError:
        raise CsrError(unparsable(data, source, "a PEM certificate bundle", ("CERTIFICATE",))) \
            from None


def split_fullchain(data: bytes) -> tuple[bytes, bytes]:
    """Split a PEM full chain into (leaf PEM, CA chain PEM), as stored in ``crt`` and ``ca``."""
    certs = load_chain(data, "certificate chain from the CA")
    return certs[0].pem, b"".join(c.pem for c in certs[1:])


def verify_chain(leaf: Certificate, ca: list[Certificate], source: str = "ca") -> None:
    """Check that ``leaf`` is signed by the first certificate of ``ca`` and each CA by the next."""
    if not ca:
        raise CsrError(f"{source} holds no CA certificate to verify {leaf.subject} against")
    chain = [leaf, *ca]
    for child, parent in itertools.pairwise(chain):
        try:
            child.cert.verify_directly_issued_by(parent.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CsrError(
                f"{child.subject} is not issued by {parent.subject} in {source}: {exc or 'bad signature'}"
            ) from None


def load_private_key_public(path: Path) -> object:
    """The public half of the private key at ``path`` (read locally, never sent anywhere)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise CsrError(f"private key {path} does not exist") from None
    except PermissionError:
        raise CsrError(f"private key {path} is not readable by this user") from None
    except (ValueError, TypeError) as exc:
        raise CsrError(f"private key {path} cannot be loaded (PEM, unencrypted expected): {exc}") from None
    return key.public_key()
