"""Bringing an existing ACME account (certbot's, acme.sh's, or a bare key) to lecentral.

Why: a host that already has an account keeps it (its rate-limit history, its EAB binding at a CA
such as ZeroSSL or a company CA: a new account there needs fresh EAB credentials). What is read:

* certbot: ``DIR/accounts/<host[:port]><path of the directory URL>/<account id>/`` holding
  ``private_key.json`` (the key as a JWK), ``regr.json`` (``uri``: the account URL) and
  ``meta.json``; ``DIR`` is certbot's config directory (``/etc/letsencrypt``);
* acme.sh: ``DIR/ca/<host>/<path>/account.key`` (PEM) and ``ca.conf`` (``ACCOUNT_URL='...'``);
  ``DIR`` is acme.sh's home (``~/.acme.sh``); acme.sh drops the port from the host;
* a PEM key file.

Whatever the source says, the CA decides: newAccount with ``onlyReturnExisting`` must return the
account (its URL is the one recorded) and the account must be ``valid``. Only then is anything
written: the key (PKCS#8 PEM, 0600, atomically) at ``[acme] account_key`` and its record
(``<account_key>.json``). A different key already there is replaced only with ``force``, after a
0600 copy of it (and of its record) is kept beside it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from lecentral.errors import ConfigError, IssueError

if TYPE_CHECKING:
    from lecentral.acme.account import AccountRecord
    from lecentral.config import AcmeConfig

log = logging.getLogger(__name__)

#: certbot looks for a Let's Encrypt v2 account under the v1 directory too (its LE_REUSE_SERVERS)
_CERTBOT_REUSE = {
    "acme-v02.api.letsencrypt.org/directory": "acme-v01.api.letsencrypt.org/directory",
    "acme-staging-v02.api.letsencrypt.org/directory": "acme-staging.api.letsencrypt.org/directory",
}


@dataclass(frozen=True)
class FoundAccount:
    """An account key read from another tool, and the account URL that tool recorded."""

    key: PrivateKeyTypes
    url: str | None
    source: str  # for messages: "certbot account 3f2a... in /etc/letsencrypt"


@dataclass(frozen=True)
class Imported:
    """What ``install`` did."""

    key_path: Path
    record: AccountRecord
    key_type: str
    status: str
    contact: list[str]
    source: str
    unchanged_key: bool   # the key was already there: only the record was (re)written
    backup: Path | None   # where the replaced key went (``force``)


def _directory(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give {what}")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory; give {what}")
    return path


def _url_or_none(value: object) -> str | None:
    if isinstance(value, str) and urlsplit(value).scheme in ("https", "http") \
            and urlsplit(value).netloc and not any(c.isspace() for c in value):
        return value
    return None


# -- certbot ---------------------------------------------------------------------------------------


def _certbot_accounts(base: Path, directory_url: str) -> tuple[Path, list[Path]]:
    parts = urlsplit(directory_url)
    server = parts.netloc + parts.path
    for candidate in (server, _CERTBOT_REUSE.get(server)):
        if candidate is None:
            continue
        where = base / candidate
        accounts = sorted(p.parent for p in where.glob("*/private_key.json")) if where.is_dir() \
            else []
        if accounts:
            return where, accounts
    others = sorted({str(p.parent.parent.relative_to(base))
                     for p in base.glob("**/private_key.json")})
    known = f"; it has accounts for {', '.join(others)}" if others else "; it has no account at all"
    raise ConfigError(f"certbot's {base} has no account for {directory_url} ([acme] directory: "
                      f"looked in {base / server}){known}")


def _jwk_private_key(path: Path) -> PrivateKeyTypes:
    from josepy.jwk import JWK

    corrupt = (f"{path} is not a JWK private key (corrupt or truncated); nothing was imported: "
               "check certbot's directory or give the key with --key FILE")
    try:
        jwk = JWK.json_loads(path.read_bytes())
        pem = jwk.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        key = serialization.load_pem_private_key(pem, password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except Exception:  # noqa: BLE001 - josepy's errors may quote the JSON: the key; never shown
        raise ConfigError(corrupt) from None
    return key


def from_certbot(config_dir: Path, directory_url: str, account_id: str | None) -> FoundAccount:
    """The certbot account for ``directory_url`` in certbot's config dir (one, or ``account_id``)."""
    what = "certbot's config directory (/etc/letsencrypt), which holds accounts/"
    config_dir = _directory(config_dir, what)
    base = config_dir / "accounts" if (config_dir / "accounts").is_dir() else config_dir
    if base.name != "accounts":
        raise ConfigError(f"{config_dir} has no accounts/ directory; give {what}")
    where, accounts = _certbot_accounts(base, directory_url)
    ids = [p.name for p in accounts]
    if account_id is None:
        if len(accounts) > 1:
            listed = "; ".join(f"{p.name} ({_certbot_url(p) or 'no URL recorded'})"
                               for p in accounts)
            raise ConfigError(f"certbot has {len(accounts)} accounts for {directory_url} in "
                              f"{where}: {listed}; choose one with --account-id")
        chosen = accounts[0]
    elif account_id in ids:
        chosen = accounts[ids.index(account_id)]
    else:
        raise ConfigError(f"certbot has no account {account_id} for {directory_url} in {where} "
                          f"(it has: {', '.join(ids)})")
    key = _jwk_private_key(chosen / "private_key.json")
    return FoundAccount(key=key, url=_certbot_url(chosen),
                        source=f"certbot account {chosen.name} in {config_dir}")


def _certbot_url(account_dir: Path) -> str | None:
    try:
        return _url_or_none(json.loads((account_dir / "regr.json").read_bytes()).get("uri"))
    except (OSError, ValueError, AttributeError):
        return None  # the CA is asked anyway


# -- acme.sh ---------------------------------------------------------------------------------------


def from_acme_sh(home: Path, directory_url: str) -> FoundAccount:
    """acme.sh's account for ``directory_url`` in its home directory (``~/.acme.sh``)."""
    what = "acme.sh's home directory (~/.acme.sh), which holds ca/"
    home = _directory(home, what)
    base = home / "ca" if (home / "ca").is_dir() else home
    if base.name != "ca":
        raise ConfigError(f"{home} has no ca/ directory; give {what}")
    parts = urlsplit(directory_url)
    path = parts.path.strip("/")
    # acme.sh: CA_DIR = ca/<host without port>/<path>; older versions: ca/<host>
    candidates = [base / (parts.hostname or "") / path, base / parts.netloc / path,
                  base / (parts.hostname or "")]
    found = next((c for c in candidates if (c / "account.key").is_file()), None)
    if found is None:
        others = sorted({str(p.parent.relative_to(base)) for p in base.glob("**/account.key")})
        known = f"; it has accounts for {', '.join(others)}" if others else \
            "; it has no account at all"
        raise ConfigError(f"acme.sh's {base} has no account for {directory_url} ([acme] "
                          f"directory: looked in {candidates[0]}){known}")
    key = _pem_private_key(found / "account.key")
    return FoundAccount(key=key, url=_acme_sh_url(found / "ca.conf"),
                        source=f"acme.sh account in {found}")


def _acme_sh_url(conf: Path) -> str | None:
    try:
        lines = conf.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == "ACCOUNT_URL":
            return _url_or_none(value.strip().strip("'\""))
    return None


# -- a PEM key -------------------------------------------------------------------------------------


def _pem_private_key(path: Path) -> PrivateKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # cryptography's text never quotes key material
        raise ConfigError(f"{path} is not an unencrypted PEM private key ({exc}); nothing was "
                          "imported") from None


def from_key_file(path: Path) -> FoundAccount:
    """A PEM account key; its account URL comes from the CA."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; give the account's PEM private key")
    return FoundAccount(key=_pem_private_key(path), url=None, source=f"key {path}")


# -- install ---------------------------------------------------------------------------------------


def install(config: AcmeConfig, found: FoundAccount, *, force: bool = False) -> Imported:
    """Check ``found`` at the CA, then write it as lecentral's account (see the module's text)."""
    from lecentral.acme.account import AccountRecord, jwk_for, key_type, thumbprint
    from lecentral.acme.lookup import AccountLookup, AccountUnknown

    if not config.account_key:
        raise ConfigError("[acme] account_key is empty; set it to a path such as "
                          "/var/lib/lecentral/account.key")
    target = Path(config.account_key)
    try:
        jwk, alg = jwk_for(found.key, target)
    except ConfigError:
        raise ConfigError(f"{found.source}: the key is a {type(found.key).__name__}; lecentral "
                          "signs with RSA or ECDSA P-256/P-384/P-521 keys only; nothing was "
                          "imported") from None
    try:
        lookup = AccountLookup(config, jwk, alg)
    except IssueError as exc:
        raise IssueError(f"{exc}; nothing was imported") from None
    try:
        url = lookup.find()
        body = lookup.fetch(url)
    except AccountUnknown as exc:
        raise IssueError(f"{exc}: {found.source} is not an account of this CA (another [acme] "
                         "directory?); nothing was imported") from None
    except IssueError as exc:  # deactivated (unauthorized), unreachable...
        raise IssueError(f"{exc}; nothing was imported") from None
    finally:
        lookup.close()
    status = str(body.get("status", ""))
    if status != "valid":
        raise IssueError(f"the account {url} of {found.source} is {status or 'of no status'} at "
                         f"the CA, not valid; nothing was imported")
    if found.url is not None and found.url != url:
        log.warning("%s records the account URL %s, the CA answers %s; the CA's is kept",
                    found.source, found.url, url)
    record = AccountRecord(url=url, directory=config.directory, thumbprint=thumbprint(jwk))
    pem = found.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    unchanged, backup = _make_room(target, record.thumbprint, force)
    _write(target, pem, record, unchanged)
    contact = [str(c) for c in body.get("contact") or [] if isinstance(c, str)]
    return Imported(key_path=target, record=record, key_type=key_type(jwk), status=status,
                    contact=contact, source=found.source, unchanged_key=unchanged, backup=backup)


def _make_room(target: Path, new_thumbprint: str, force: bool) -> tuple[bool, Path | None]:
    """(the same key is already there, the backup made of a different one)."""
    from lecentral.acme.account import load_existing, record_path, thumbprint

    if not os.path.lexists(target):
        return False, None
    try:
        current = thumbprint(load_existing(str(target)).jwk)
    except ConfigError:
        current = None  # unreadable or not a key: still an account key someone may need
    if current == new_thumbprint:
        return True, None
    if not force:
        what = f"another key (thumbprint {current})" if current else "a key lecentral cannot read"
        raise ConfigError(f"{target} ([acme] account_key) already holds {what}; nothing was "
                          "imported. --force replaces it and keeps a copy beside it (the account "
                          "of that key stays at the CA)")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = target.with_name(f"{target.name}.{stamp}.bak")
    _copy_private(target, backup)
    if record_path(target).exists():
        _copy_private(record_path(target), record_path(backup))
    log.warning("kept the replaced account key as %s", backup)
    return False, backup


def _copy_private(source: Path, dest: Path) -> None:
    from lecentral.files_io import fsync_dir, owner_for, write_new

    try:
        write_new(str(dest), source.read_bytes(), *owner_for(str(dest)), 0o600)
        fsync_dir(str(dest.parent))
    except OSError as exc:
        raise ConfigError(f"cannot keep a copy of {source} as {dest}: {exc.strerror}; nothing "
                          "was imported") from None


def _write(target: Path, pem: bytes, record: AccountRecord, unchanged_key: bool) -> None:
    """The record first, then the key: a record beside a key it does not describe is ignored
    (its thumbprint differs), so a failure between the two leaves the old account working; the
    old record is put back if the key cannot be written."""
    from lecentral.acme.account import record_path
    from lecentral.files_io import owner_for, replace_atomically, unlink_quietly

    uid, gid = owner_for(str(target))
    rec_path = record_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        old_record = rec_path.read_bytes() if rec_path.exists() else None
        replace_atomically(str(rec_path), record.to_json(), uid, gid, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {rec_path}: {exc.strerror}; check that its directory is "
                          "writable by this user; nothing was imported") from None
    if unchanged_key:
        return
    try:
        replace_atomically(str(target), pem, uid, gid, 0o600)
    except OSError as exc:
        try:
            if old_record is None:
                unlink_quietly(str(rec_path))
            else:
                replace_atomically(str(rec_path), old_record, uid, gid, 0o600)
        except OSError:
            pass  # the record names the new key's thumbprint: ignored beside the old key
        raise ConfigError(f"cannot write {target}: {exc.strerror}; check that its directory is "
                          "writable by this user; nothing was imported") from None
