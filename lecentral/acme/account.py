"""The ACME account key: created on first use (in an existing directory, said once as a warning),
mode 0600, atomically, never logged.

The key is an ECDSA P-256 key (ES256: small, fast to sign, accepted by every ACME CA); an existing
RSA or P-384 key (from an earlier tool) is used as it is. Creation is atomic and race-free: the key
is written to a private temp file in the same directory and hard-linked into place, so a second
process creating it at the same moment loses the link and loads the winner's key instead of
overwriting it (which would orphan the account registered with the first key).

Beside the key, ``<account_key>.json`` (:class:`AccountRecord`) may say which account URL the key
is registered as; ``lecentral account import`` writes it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from lecentral.errors import ConfigError
from lecentral.files_io import owner_for, this_user, user_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountKey:
    """The account's JWK and the JWS algorithm that goes with it."""

    jwk: JWK
    alg: JWASignature
    path: Path
    created: bool


def jwk_for(key: object, path: Path) -> tuple[JWK, JWASignature]:
    """The JWK and the JWS algorithm of an account key (RSA, or ECDSA P-256/384/521); ConfigError
    naming ``path`` for any other key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
        if key.curve.name in algs:
            return JWKEC(key=key), algs[key.curve.name]
    raise ConfigError(f"account key {path} is a {type(key).__name__} ({getattr(key, 'curve', '')});"
                      " use RSA or ECDSA P-256/P-384, or move it aside to get a new one")


def _create(path: Path) -> bool:
    """Write a new key at ``path`` unless one appears first; True if ours was installed.

    Its directory is never made: a missing one is a typo or a missing mount in lecentral.toml
    (OSError, said as a configuration error), not a reason to register a new account that
    silently abandons the one in use (an imported one, say). The default's directory,
    /var/lib/lecentral, is made by the package and the units (StateDirectory=)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(prefix=".account-key-", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fchown(fh.fileno(), *owner_for(str(path)))
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
    path = _path(path_text)
    created = False
    if not path.exists():
        try:
            created = _create(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the ACME account key {path} ([acme] account_key): "
                f"{exc.strerror}; lecentral runs as {this_user()}: create {path.parent} "
                f"writable by that user (install -d -o {user_name()} -m 700 {path.parent}), or set "
                "[acme] account_key to a path in its state directory") from None
        if created:  # a new account at the CA: the operator should see it, once
            log.warning("created a new ACME account key at %s (mode 0600): a new account is "
                        "registered with it; if this host should use an existing account, "
                        "check [acme] account_key (lecentral account import)", path)
    return _load(path, created)


def load_existing(path_text: str) -> AccountKey:
    """The account key at ``[acme] account_key``; ConfigError if there is none (never creates one:
    ``lecentral account show`` must not register a new account as a side effect)."""
    path = _path(path_text)
    if not path.exists():
        raise ConfigError(f"there is no ACME account key at {path} ([acme] account_key): "
                          "lecentral renew creates one, or lecentral account import brings an "
                          "existing account")
    return _load(path, False)


def _path(path_text: str) -> Path:
    if not path_text:
        raise ConfigError("[acme] account_key is empty; set it to a path such as "
                          "/var/lib/lecentral/account.key")
    return Path(path_text)


def _load(path: Path, created: bool) -> AccountKey:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the ACME account key {path} ([acme] account_key): "
                          f"{exc.strerror}; lecentral runs as {this_user()}: the key must be a "
                          f"file that user owns (chown {user_name()} {path} && chmod 600 {path})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and mode & stat.S_IROTH:
        log.warning("ACME account key %s is readable by other users; chmod 600 %s", path, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # the error text of cryptography never quotes key material
        raise ConfigError(f"ACME account key {path} is not an unencrypted PEM private key "
                          f"({exc}); move it aside to have a new one created") from None
    jwk, alg = jwk_for(key, path)
    return AccountKey(jwk=jwk, alg=alg, path=path, created=created)


def thumbprint(jwk: JWK) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url without padding): the account key's
    public fingerprint, safe to show and compare."""
    return base64.urlsafe_b64encode(jwk.thumbprint()).decode("ascii").rstrip("=")


def key_type(jwk: JWK) -> str:
    """``RSA 2048``, ``EC P-256``...: what the key is, never what it holds."""
    key = getattr(jwk.key, "_wrapped", jwk.key)  # josepy wraps keys in ComparableKey
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384",
                "secp521r1": "EC P-521"}.get(key.curve.name, f"EC {key.curve.name}")
    return type(key).__name__


# -- the account record: which account of which CA the key belongs to ----------------------------


@dataclass(frozen=True)
class AccountRecord:
    """``<account_key>.json``: the account URL the key is registered as, at which directory.

    With it, lecentral uses the account as it is instead of sending newAccount: an account made
    elsewhere (certbot, acme.sh; bound to the CA by External Account Binding) is reused without
    the EAB credentials, and the JWS ``kid`` is the account the operator imported.
    ``thumbprint`` ties the record to the key: a record beside another key is ignored.
    """

    url: str
    directory: str
    thumbprint: str

    def to_json(self) -> bytes:
        return (json.dumps({"url": self.url, "directory": self.directory,
                            "thumbprint": self.thumbprint}, indent=2) + "\n").encode()


def record_path(key_path: Path) -> Path:
    """Where the record of the key at ``key_path`` lives: beside it, ``<key>.json``."""
    return key_path.with_name(key_path.name + ".json")


def read_record(key_path: Path) -> AccountRecord | None:
    """The record beside ``key_path``; None if there is none. A file that is not a valid record
    is a ConfigError naming it (validated before use: it decides which account signs)."""
    path = record_path(key_path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the ACME account record {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"ACME account record {path} is not JSON; remove it (lecentral account "
                          "import writes it again)") from None
    fields = ("url", "directory", "thumbprint")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) and data[f]
                                             for f in fields):
        raise ConfigError(f"ACME account record {path} lacks url, directory or thumbprint; remove "
                          "it (lecentral account import writes it again)")
    url = data["url"]
    if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).netloc \
            or any(c.isspace() for c in url):
        raise ConfigError(f"ACME account record {path}: url is not an http(s) URL; remove it "
                          "(lecentral account import writes it again)")
    return AccountRecord(url=url, directory=data["directory"], thumbprint=data["thumbprint"])


def record_for(key: AccountKey, directory: str) -> AccountRecord | None:
    """The record of ``key`` if it belongs to this key and this ``[acme] directory``; a record of
    another key or CA is ignored (logged): the account is then found or registered anew."""
    record = read_record(key.path)
    if record is None:
        return None
    if record.thumbprint != thumbprint(key.jwk):
        log.warning("ACME account record %s belongs to another key (thumbprint %s); ignored",
                    record_path(key.path), record.thumbprint)
        return None
    if record.directory != directory:
        log.info("ACME account record %s is for %s, not [acme] directory %s; ignored",
                 record_path(key.path), record.directory, directory)
        return None
    return record
