"""Whether to install (the seed's compare, made exact), and the checks made before anything is touched.

Both are pure: they read the database row, the installed leaf and the local keys, and write nothing.

The rule: the database's certificate is installed when it is not the installed one (SHA-256
fingerprint) and it goes with the local key (or with the new key of a staged rotation, ``KEY.next``),
unless it is older than the installed one by an hour or more (the seed's clock-skew tolerance,
which only guards against going backwards). An installed certificate that does not match the local
key, is unreadable, or is not the database's is never "up to date"; nor is a set whose other files
(the CA chain) differ from what the database's certificate would write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lecentral.certificates import (
    Certificate,
    load_chain,
    load_private_key_public,
    md5_ca,
    md5_modulus,
    verify_chain,
    when,
)
from lecentral.errors import CsrError, InstallError
from lecentral.interfaces import Installer, IssuedCertificate
from lecentral.records import CertEntry
from lecentral.store.rows import CertRow, chain_problems

#: two timestamps less than this apart are the same (clocks drift; the seed's rule)
SAME_TIME = 3600


@dataclass(frozen=True)
class Decision:
    """``install`` True with the reason (first install, newer, missing files), or why not.

    ``skip_status`` when not installing: ``up-to-date``, ``skipped`` (disabled, nothing in the
    database, expired...) or ``failed``: what is installed is wrong and the database has nothing
    to repair it with (the engine alerts). ``key``: the private key the database's certificate
    goes with: the entry's ``key``, its ``KEY.next`` (a staged rotation), or "" (neither).
    """

    install: bool
    reason: str
    skip_status: str = "up-to-date"
    key: str = ""


def _parse_installed(data: bytes | None, path: str) -> Certificate | None:
    if data is None:
        return None
    try:
        return Certificate.load(data, path)
    except CsrError:
        return None


def key_digest(path: str) -> str | None:
    """md5_modulus of the private key at ``path``; None when missing or unreadable (precheck says why)."""
    if not os.path.lexists(path):
        return None
    try:
        return md5_modulus(load_private_key_public(Path(path)))
    except CsrError:
        return None


def key_for(entry: CertEntry, leaf: Certificate) -> str:
    """The local key ``leaf`` goes with: ``entry.key``, else a pending ``KEY.next``, else ""."""
    if key_digest(entry.key) == leaf.md5_modulus:
        return entry.key
    if key_digest(entry.next_key) == leaf.md5_modulus:
        return entry.next_key
    return ""


def database_set(row: CertRow) -> IssuedCertificate | None:
    """The row's leaf and chain as an install would write them (clean PEM); None if unparsable."""
    if not row.crt or not row.ca:
        return None
    try:
        leaf = Certificate.load(row.crt, f"crt column of {row.name}")
        chain = load_chain(row.ca, f"ca column of {row.name}")
    except CsrError:
        return None
    return IssuedCertificate(crt=leaf.pem, ca=b"".join(c.pem for c in chain))


def compare(entry: CertEntry, row: CertRow, installer: Installer, now: int) -> Decision:
    """:func:`decide` on what ``installer`` has in place now (the engine's and status's one compare)."""
    def stale() -> list[str]:
        new = database_set(row)
        return installer.stale(new) if new is not None else []

    return decide(entry, row, installer.installed(), installer.missing(), now, stale)


def _no_files() -> list[str]:
    return []


def decide(entry: CertEntry, row: CertRow, installed: bytes | None, missing: list[str],
           now: int, stale: Callable[[], list[str]] = _no_files) -> Decision:
    """Enabled, not expired, and not the installed certificate (see the module doc).

    ``stale`` lists the files of the set that differ from the database's (asked only when its
    leaf is the installed one). A row with problems is not decided on: :func:`precheck` refuses
    it with the reason.
    """
    if row.problems:
        return Decision(True, "database row to check")
    if not row.enable:
        flag = "enable is NULL" if row.enable_null else "enable = 'N'"
        return Decision(False, f"disabled in the database ({flag}); nothing done", "skipped")
    if not row.crt:
        return Decision(False, "no certificate in the database yet; nothing done", "skipped")
    try:
        new = Certificate.load(row.crt, f"crt column of {row.name}")
    except CsrError:
        return Decision(True, "database certificate to check")
    if new.not_after <= now:
        return Decision(False, f"the certificate in the database expired on {when(new.not_after)}; "
                        "nothing done (renew it on the central host)", "skipped")
    key = key_for(entry, new)
    current = _parse_installed(installed, entry.cert)
    if installed is None:
        return Decision(True, "first install", key=key)
    if current is None:
        return Decision(True, f"{entry.cert} holds no readable certificate", key=key)
    if current.fingerprint == new.fingerprint:
        return _same(entry, row, current, key, missing, stale)
    return _different(entry, new, current, key)


def _same(entry: CertEntry, row: CertRow, current: Certificate, key: str, missing: list[str],
          stale: Callable[[], list[str]]) -> Decision:
    """The database's leaf is the installed one: is the rest of the set right?"""
    if not key:
        return Decision(False, f"{_key_trouble(entry)}: the service fails when it next reads them. "
                        f"{_new_certificate_steps(entry)}, or put the previous key back", "failed")
    if key == entry.next_key:
        return Decision(True, f"the installed certificate is for the new key {key}: switching the key",
                        key=key)
    if missing:
        return Decision(True, f"missing {', '.join(missing)}", key=key)
    # the files here are fine, but the chain the database holds for them is not: never "up to
    # date". (A crt for another key than md5_modulus is normal after set-csr: it waits for renew.)
    damaged = chain_problems(row, current)
    if damaged:
        return Decision(False, f"the installed certificate is the database's, but the database "
                        f"row is damaged ({'; '.join(damaged)}); nothing was changed here. The "
                        f"next lecentral renew on the central host replaces it (lecentral show "
                        f"{row.name})", "failed")
    changed = stale()
    if changed:
        return Decision(True, f"{', '.join(changed)} not as in the database (new CA chain?)", key=key)
    pending = (f"; the new key {entry.next_key} waits for its certificate (lecentral set-csr and "
               "renew on the central host)" if os.path.lexists(entry.next_key) else "")
    return Decision(False, f"up to date (expires {when(current.not_after)}){pending}")


def _different(entry: CertEntry, new: Certificate, current: Certificate, key: str) -> Decision:
    """The database holds another certificate than the installed one."""
    gap = new.not_after - current.not_after
    if gap <= -SAME_TIME:
        if current.md5_modulus != key_digest(entry.key):
            return Decision(False, f"the installed certificate {entry.cert} does not match the private "
                            f"key {entry.key}, and the database's is older (expires {when(new.not_after)}, "
                            f"installed one {when(current.not_after)}). {_new_certificate_steps(entry)}",
                            "failed")
        return Decision(False, f"the installed certificate (expires {when(current.not_after)}) is "
                        f"newer than the database's ({when(new.not_after)}); nothing done", "skipped")
    if gap >= SAME_TIME:
        what = f"newer certificate (expires {when(new.not_after)}, installed one {when(current.not_after)})"
    elif new.names != current.names:
        what = f"reissued certificate for {', '.join(new.names)} (installed one: {', '.join(current.names)})"
    elif new.md5_modulus != current.md5_modulus:
        what = "reissued certificate for another key"
    else:
        what = (f"reissued certificate (sha256 {new.fingerprint[:16]}..., expires {when(new.not_after)}; "
                f"installed one sha256 {current.fingerprint[:16]}...)")
    if key and key == entry.next_key:
        return Decision(True, f"{what}, for the new key {key}: key and certificate switched together", key=key)
    return Decision(True, what, key=key)  # no key: precheck refuses it, loudly


def _key_trouble(entry: CertEntry) -> str:
    try:
        load_private_key_public(Path(entry.key))
    except CsrError as exc:
        return f"{exc}, and the installed certificate {entry.cert} is the database's"
    return (f"the installed certificate {entry.cert} (the database's too) does not match the "
            f"private key {entry.key}")


def _new_certificate_steps(entry: CertEntry) -> str:
    return (f"Make a CSR from the key (lecentral-install csr {entry.name} --key {entry.key}), then on the "
            f"central host: lecentral set-csr {entry.name} FILE and lecentral renew --force {entry.name}")


def precheck(entry: CertEntry, row: CertRow, now: int, key: str = "") -> IssuedCertificate:
    """Every check made before touching a file; return the leaf and chain as clean PEM.

    ``key``: the private key the certificate must match (the decision's; default the entry's).
    Raise :class:`InstallError` naming what is wrong; nothing has been written at that point.
    """
    where = f"the database row {row.name}"
    if row.problems:
        raise InstallError(f"{where} is invalid: {'; '.join(row.problems)}; fix it on the central "
                           f"host (lecentral show {row.name}); nothing was installed")
    if not row.crt or not row.ca:
        raise InstallError(f"{where} has no {'crt' if not row.crt else 'ca'}; nothing was installed")
    try:
        leaf = Certificate.load(row.crt, f"crt column of {row.name}")
        chain = load_chain(row.ca, f"ca column of {row.name}")
        verify_chain(leaf, chain, f"ca column of {row.name}")
    except CsrError as exc:
        raise InstallError(f"{exc}; nothing was installed") from None
    if row.md5_ca and md5_ca(row.ca) != row.md5_ca:
        raise InstallError(f"{where}: md5_ca {row.md5_ca} does not match its ca column; the row "
                           "was altered or half-written; nothing was installed")
    if row.md5_modulus and leaf.md5_modulus != row.md5_modulus:
        raise InstallError(f"{where}: the certificate's key does not match the row's md5_modulus "
                           "(the CSR was replaced after issuance?); nothing was installed")
    if leaf.not_after <= now:
        raise InstallError(f"the certificate of {row.name} expired on {when(leaf.not_after)}; "
                           "nothing was installed")
    if leaf.not_before > now + SAME_TIME:
        raise InstallError(f"the certificate of {row.name} is not valid before "
                           f"{when(leaf.not_before)}; check this host's clock; nothing was installed")
    if not leaf.covers(entry.name):
        raise InstallError(f"the certificate in {where} is for {', '.join(leaf.names)}, not "
                           f"{entry.name}; nothing was installed")
    check_key_matches(leaf, key or entry.key, entry.next_key)
    return IssuedCertificate(crt=leaf.pem, ca=b"".join(c.pem for c in chain))


def check_key_matches(leaf: Certificate, key_path: str, next_key: str = "") -> None:
    """Raise InstallError unless the private key at ``key_path`` belongs to ``leaf`` (RSA or ECDSA).

    ``next_key``: a staged rotation's new key, named in the message when it exists (and does not match).
    """
    try:
        public = load_private_key_public(Path(key_path))
        local = md5_modulus(public)
    except CsrError as exc:
        raise InstallError(f"{exc}; nothing was installed") from None
    if local != leaf.md5_modulus:
        nor = (f" nor the new key {next_key}" if next_key and next_key != key_path
               and os.path.lexists(next_key) else "")
        raise InstallError(
            f"the new certificate's public key ({leaf.key_type}) does not match the private key "
            f"{key_path}{nor}: the CSR in the database was not made from this key. Make a CSR from it "
            f"(lecentral-install csr {leaf.names[0]} --key {key_path}) and give it to the central "
            "host (lecentral set-csr), or point key at the right file; nothing was installed"
        )
