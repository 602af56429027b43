"""``lecentral-install csr``: make the private key on this server and a CSR for the central host.

The key never leaves the server: it is written 0600 (atomically, and never over an existing key),
and only the CSR is handed to ``lecentral add`` / ``lecentral set-csr``. An existing key is reused,
so a new CSR (more names) keeps the key the daemon already has.

A new key for a name in use is staged (``--rotate``, and ``--force`` on an existing key): it is
written to ``KEY.next`` and the live key stays until the agent installs a certificate for the new
key, then switches both together (:mod:`lecentral.install.fileset`). Replacing the live key at
once would leave the installed certificate without its key until then: the daemon would fail at
its next restart.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lecentral.certificates import Csr, check_name, is_ip, key_description
from lecentral.errors import CsrError
from lecentral.files_io import fsync_dir, temp_name, write_new
from lecentral.records import next_key_path

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_SIZES = (2048, 3072, 4096)
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}


@dataclass(frozen=True)
class KeySpec:
    """``rsa`` with ``bits``, or ``ec`` with ``curve`` (p256, p384)."""

    kind: str = "rsa"
    bits: int = 2048
    curve: str = "p256"

    def describe(self) -> str:
        return f"RSA {self.bits}" if self.kind == "rsa" else f"EC {CURVES[self.curve]().name}"

    def generate(self) -> PrivateKey:
        if self.kind == "rsa":
            if self.bits not in RSA_SIZES:
                raise CsrError(f"RSA keys of {self.bits} bits are not offered; use 2048, 3072 or 4096")
            return rsa.generate_private_key(public_exponent=65537, key_size=self.bits)
        if self.curve not in CURVES:
            raise CsrError(f"curve {self.curve!r} is not offered; use p256 or p384")
        return ec.generate_private_key(CURVES[self.curve]())

    def matches(self, key: object) -> bool:
        if isinstance(key, rsa.RSAPrivateKey):
            return self.kind == "rsa" and key.key_size == self.bits
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return self.kind == "ec" and key.curve.name == CURVES[self.curve]().name
        return False


def load_key(path: Path) -> PrivateKey:
    """An existing unencrypted PEM key (RSA or ECDSA)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise CsrError(f"cannot read private key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise CsrError(f"private key {path} cannot be loaded (unencrypted PEM expected): {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CsrError(f"private key {path} is neither RSA nor ECDSA")
    return key


def write_key(path: Path, key: PrivateKey, *, force: bool) -> None:
    """Write ``key`` 0600 to ``path`` atomically; without ``force`` an existing file is never replaced."""
    if not path.parent.is_dir():
        raise CsrError(f"directory {path.parent} does not exist; create it (mode 0700 or 0710)")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    temp = temp_name(str(path))
    try:
        write_new(temp, pem, os.geteuid(), os.getegid(), 0o600)
        if force:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path exists, even if it appeared a moment ago
    except FileExistsError:
        raise CsrError(f"private key {path} already exists; pass --force to replace it") from None
    except OSError as exc:
        raise CsrError(f"cannot write private key {path}: {exc.strerror}") from None
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    fsync_dir(str(path.parent))


def spec_of(key: PrivateKey) -> KeySpec:
    """The spec of an existing key (a rotation keeps the type and size unless told otherwise)."""
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size in RSA_SIZES:
        return KeySpec("rsa", key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for curve, cls in CURVES.items():
            if key.curve.name == cls().name:
                return KeySpec("ec", curve=curve)
    return KeySpec()


def build_csr(names: list[str], key: PrivateKey) -> Csr:
    """A CSR with CN = names[0] and every name as a DNS subjectAltName, signed with SHA-256.

    IP addresses (RFC 8738) become iPAddress subjectAltNames; an IP is never the CN (CAs read
    a CN as a DNS name), so a CSR whose first name is an IP has an empty subject."""
    subject = x509.Name([] if is_ip(names[0])
                        else [x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n)
            for n in names]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, hashes.SHA256()))
    return Csr.load(csr.public_bytes(serialization.Encoding.PEM), "the new CSR")


def make_csr(name: str, sans: list[str], key_path: Path, spec: KeySpec | None,
             *, force: bool, rotate: bool = False) -> tuple[Csr, str]:
    """Make (or reuse) the key at ``key_path`` and a CSR for ``name`` + ``sans``.

    ``spec`` None means "the default for a new key, any type for an existing one". ``rotate``, or
    ``force`` when the key exists, stages a new key in ``KEY.next`` (:func:`rotate_key`). Returns
    the CSR and a sentence saying what happened to the key.
    """
    names = list(dict.fromkeys(check_name(n) for n in [name, *sans]))
    if key_path.exists() and (rotate or force):
        return rotate_key(names, key_path, spec, fresh=force)
    if rotate:
        raise CsrError(f"private key {key_path} does not exist, so there is nothing to rotate; "
                       "leave out --rotate to make the first key")
    if key_path.exists():
        key = load_key(key_path)
        if spec is not None and not spec.matches(key):
            raise CsrError(f"private key {key_path} is {key_description(key.public_key())}, not "
                           f"{spec.describe()}; pass --rotate to change to a new key")
        pending = next_key_path(str(key_path))
        note = (f"; note: the new key {pending} is pending (csr --rotate), this CSR is for the live "
                "key, add --rotate for one for the new key" if os.path.lexists(pending) else "")
        return build_csr(names, key), (f"reused the existing key {key_path} "
                                       f"({key_description(key.public_key())}){note}")
    spec = spec or KeySpec()
    key = spec.generate()
    write_key(key_path, key, force=False)
    return build_csr(names, key), f"made a new {spec.describe()} key {key_path} (mode 0600)"


def rotate_key(names: list[str], key_path: Path, spec: KeySpec | None,
               *, fresh: bool) -> tuple[Csr, str]:
    """A CSR for a new key in ``KEY.next``; the live key at ``key_path`` is left as it is.

    A pending ``KEY.next`` is reused (its CSR may already be on the central host) unless
    ``fresh``. The new key has the live key's type unless ``spec`` says otherwise.
    """
    pending = Path(next_key_path(str(key_path)))
    after = (f"{key_path} stays in use until `lecentral-install run` installs a certificate for the "
             "new key, then both are switched together (the old key is kept in the agent's backups)")
    if pending.exists() and not fresh:
        key = load_key(pending)
        if spec is not None and not spec.matches(key):
            raise CsrError(f"the pending new key {pending} is {key_description(key.public_key())}, "
                           f"not {spec.describe()}; pass --force to replace it with a fresh one")
        return build_csr(names, key), (f"reused the pending new key {pending} "
                                       f"({key_description(key.public_key())}); {after}")
    if spec is None:
        try:
            spec = spec_of(load_key(key_path))
        except CsrError:  # the live key is unreadable: that may be why it is rotated
            spec = KeySpec()
    key = spec.generate()
    write_key(pending, key, force=True)
    return build_csr(names, key), f"made a new {spec.describe()} key {pending} (mode 0600); {after}"
