"""The ACME account key: created on first use, mode 0600, atomically, never logged.

The key is an ECDSA P-256 key (ES256: small, fast to sign, accepted by every ACME CA); an existing
RSA or P-384 key (from an earlier tool) is used as it is. Creation is atomic and race-free: the key
is written to a private temp file in the same directory and hard-linked into place, so a second
process creating it at the same moment loses the link and loads the winner's key instead of
overwriting it (which would orphan the account registered with the first key).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from lecentral.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountKey:
    """The account's JWK and the JWS algorithm that goes with it."""

    jwk: JWK
    alg: JWASignature
    path: Path
    created: bool


def _alg_for(key: object, path: Path) -> tuple[JWK, JWASignature]:
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
        if key.curve.name in algs:
            return JWKEC(key=key), algs[key.curve.name]
    raise ConfigError(f"account key {path} is a {type(key).__name__} ({getattr(key, 'curve', '')});"
                      " use RSA or ECDSA P-256/P-384, or move it aside to get a new one")


def _create(path: Path) -> bool:
    """Write a new key at ``path`` unless one appears first; True if ours was installed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(prefix=".account-key-", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        os.unlink(tmp)


def load_or_create(path_text: str) -> AccountKey:
    """The account key at ``[acme] account_key``, created (0600, atomically) if it does not exist."""
    if not path_text:
        raise ConfigError("[acme] account_key is empty; set it to a path such as "
                          "/var/lib/lecentral/account.key")
    path = Path(path_text)
    created = False
    if not path.exists():
        try:
            created = _create(path)
        except OSError as exc:
            raise ConfigError(f"cannot create the ACME account key {path}: {exc.strerror}; "
                              "check that the directory is writable by this user") from None
        if created:
            log.info("created a new ACME account key at %s (mode 0600)", path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the ACME account key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and mode & stat.S_IROTH:
        log.warning("ACME account key %s is readable by other users; chmod 600 %s", path, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # the error text of cryptography never quotes key material
        raise ConfigError(f"ACME account key {path} is not an unencrypted PEM private key "
                          f"({exc}); move it aside to have a new one created") from None
    jwk, alg = _alg_for(key, path)
    return AccountKey(jwk=jwk, alg=alg, path=path, created=created)
