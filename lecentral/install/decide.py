"""Whether to install (the seed's compare), and the checks made before anything is touched.

Both are pure: they read the database row, the installed leaf and the local key, and write nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lecentral.certificates import (
    Certificate,
    load_chain,
    load_private_key_public,
    md5_ca,
    md5_modulus,
    verify_chain,
)
from lecentral.errors import CsrError, InstallError
from lecentral.install.config import CertEntry
from lecentral.interfaces import IssuedCertificate
from lecentral.store.rows import CertRow

#: two timestamps less than this apart are the same (clocks drift; the seed's rule)
SAME_TIME = 3600


def when(ts: int) -> str:
    """A Unix time as ``2025-01-31 12:00 UTC``, for messages."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Decision:
    """``install`` True with the reason (first install, newer, missing files), or why not."""

    install: bool
    reason: str
    skip_status: str = "up-to-date"  # or "skipped" (disabled, nothing in the database, expired...)


def _parse_installed(data: bytes | None, path: str) -> Certificate | None:
    if data is None:
        return None
    try:
        return Certificate.load(data, path)
    except CsrError:
        return None


def decide(entry: CertEntry, row: CertRow, installed: bytes | None, missing: list[str],
           now: int) -> Decision:
    """The seed's rule: enabled, not expired, newer than the installed one (by an hour or more).

    A row with problems is not decided on: :func:`precheck` refuses it with the reason.
    """
    if row.problems:
        return Decision(True, "database row to check")
    if not row.enable:
        return Decision(False, "disabled in the database (enable = 'N'); nothing done", "skipped")
    if not row.crt:
        return Decision(False, "no certificate in the database yet; nothing done", "skipped")
    try:
        new = Certificate.load(row.crt, f"crt column of {row.name}")
    except CsrError:
        return Decision(True, "database certificate to check")
    if new.not_after <= now:
        return Decision(False, f"the certificate in the database expired on {when(new.not_after)}; "
                        "nothing done (renew it on the central host)", "skipped")
    current = _parse_installed(installed, entry.cert)
    if installed is None:
        return Decision(True, "first install")
    if current is None:
        return Decision(True, f"{entry.cert} holds no readable certificate")
    gap = new.not_after - current.not_after
    if gap >= SAME_TIME:
        return Decision(True, f"newer certificate (expires {when(new.not_after)}, installed one "
                        f"{when(current.not_after)})")
    if gap <= -SAME_TIME:
        return Decision(False, f"the installed certificate (expires {when(current.not_after)}) is "
                        f"newer than the database's ({when(new.not_after)}); nothing done", "skipped")
    if missing:
        return Decision(True, f"missing {', '.join(missing)}")
    return Decision(False, f"up to date (expires {when(current.not_after)})")


def precheck(entry: CertEntry, row: CertRow, now: int) -> IssuedCertificate:
    """Every check made before touching a file; return the leaf and chain as clean PEM.

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
    check_key_matches(leaf, entry.key)
    return IssuedCertificate(crt=leaf.pem, ca=b"".join(c.pem for c in chain))


def check_key_matches(leaf: Certificate, key_path: str) -> None:
    """Raise InstallError unless the private key at ``key_path`` belongs to ``leaf`` (RSA or ECDSA)."""
    try:
        public = load_private_key_public(Path(key_path))
        local = md5_modulus(public)
    except CsrError as exc:
        raise InstallError(f"{exc}; nothing was installed") from None
    if local != leaf.md5_modulus:
        raise InstallError(
            f"the new certificate's public key ({leaf.key_type}) does not match the private key "
            f"{key_path}: the CSR in the database was not made from this key. Make a CSR from it "
            f"(lecentral-install csr {leaf.names[0]} --key {key_path}) and give it to the central "
            "host (lecentral set-csr), or point key at the right file; nothing was installed"
        )
