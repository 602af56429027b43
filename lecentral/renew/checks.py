"""The renew job's decisions, pure: is a row due, is it fit to order, does what the CA returned
fit it. They read a row and the configuration and write nothing."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from lecentral.certificates import Certificate, Csr, load_chain, verify_chain, when
from lecentral.errors import LecentralError
from lecentral.window import renew_at, span

if TYPE_CHECKING:
    from lecentral.acme.client import RenewalWindow
    from lecentral.config import CentralConfig
    from lecentral.store.rows import CertRow

DAY = 86400

def ari_due_at(window_start: int, window_end: int, seed: str) -> int:
    """A point in the ARI window, fixed per certificate, so that many certificates spread out
    over the window (RFC 9773 §4.2) and a daily job decides the same way each day."""
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64
    return window_start + int((window_end - window_start) * fraction)


class WindowSource(Protocol):
    """What :func:`due_reason` asks for a certificate's ARI window: a
    :class:`~lecentral.acme.client.RenewalInfoReader`, or the renew job's windows known in
    advance (lecentral/renew/ari.py)."""

    def window(self, crt_pem: bytes) -> RenewalWindow | None:
        """The CA's suggested window for ``crt_pem``; None when there is none to go by."""


def due_reason(row: CertRow, now: int, config: CentralConfig, force: bool,
               ari: WindowSource | None, csr: Csr | None = None) -> tuple[bool, str]:
    """(due?, why) for an enabled, valid row (``csr``: its parsed CSR, parsed here if None).

    A stored certificate with problems (:func:`certificate_problems`) is due: a new one replaces
    it. The min_interval rate guard still applies; the reason then says what is waiting.
    Otherwise it is due from :func:`lecentral.window.renew_at` (a share of its own lifetime, or
    ``renew.before_days``), or earlier when the CA's ARI window opens: ARI never delays.
    """
    is_due, why, cert = _by_dates(row, now, config, force, csr)
    if cert is not None and ari is not None:
        suggested = ari.window(row.crt or b"")
        if suggested is not None:
            at = ari_due_at(int(suggested.start.timestamp()), int(suggested.end.timestamp()),
                            cert.fingerprint)
            if now >= at:
                return True, "the CA's renewal window (ARI) is open"
    return is_due, why


def asks_ari(row: CertRow, now: int, config: CentralConfig,
             csr: Csr | None) -> Certificate | None:
    """The stored certificate, parsed, when :func:`due_reason` (not forced) would ask for
    ``row``'s ARI window: a good certificate whose renewal window has not opened, the rate
    guard not holding; None otherwise."""
    try:
        return _by_dates(row, now, config, False, csr)[2]
    except LecentralError:  # due_reason says it is due (unreadable): no window asked
        return None


def _by_dates(row: CertRow, now: int, config: CentralConfig, force: bool,
              csr: Csr | None) -> tuple[bool, str, Certificate | None]:
    """(due?, why, the stored certificate when only its ARI window could still make it due)."""
    from lecentral.store.rows import certificate_problems

    renew = config.renew
    if force:
        return True, "forced", None
    bad = certificate_problems(row, csr.names if csr is not None else None)
    if bad and csr is None:
        try:
            csr = Csr.load(row.csr)
        except LecentralError:
            pass
    if row.ts_last_update and held_until(row, now, renew.min_interval, csr) is not None:
        waiting = (f"; the stored certificate is bad ({'; '.join(bad)}) and is reissued once "
                   "renew.min_interval has passed" if bad else "")
        return False, (f"last attempt {(now - row.ts_last_update) // 60} min ago "
                       f"(renew.min_interval {renew.min_interval} s){waiting}"), None
    if bad:
        return True, f"the stored certificate is bad: {'; '.join(bad)}", None
    if not row.crt:  # a certificate beside a NULL/0/1 ts_expire: the certificate says when
        return True, "no certificate yet", None
    cert = Certificate.load(row.crt, f"crt of {row.name}")  # parses: certificate_problems said so
    left = cert.not_after - now
    window = renew_at(cert.not_before, cert.not_after, renew)
    if now >= window.at:
        return True, f"expires in {span(left)}: due since {when(window.at)} ({window.reason})", None
    return False, f"expires in {span(left)}; renews at {when(window.at)} ({window.reason})", cert


def held_until(row: CertRow, now: int, min_interval: int, csr: Csr | None) -> int | None:
    """When the ``renew.min_interval`` rate guard lets the next attempt for ``row`` go, while it
    holds at ``now``; None when it does not hold (``csr``: the row's, parsed; None if it does
    not parse).

    It holds for ``min_interval`` after the last attempt (``ts_last_update``), except for the
    first attempt with a replaced CSR (:func:`csr_replaced`): a sysadmin who ran ``lecentral
    set-csr`` expects the next run to issue it, and the guard is against repeating attempts, not
    against a new request. If that attempt fails, its failure holds the next one as any other.
    """
    last = row.ts_last_update
    if not last or last <= 1 or now - last >= min_interval or csr_replaced(row, csr):
        return None
    return last + min_interval


def csr_replaced(row: CertRow, csr: Csr | None) -> bool:
    """True when the last attempt succeeded (``count_fail_update`` 0) and the stored certificate
    is nevertheless not for the row's CSR (another key, or a name missing): the CSR was
    replaced after that success, and no attempt was made with the new one yet (a saved
    certificate always fits the CSR it was ordered with: :func:`check_issued`)."""
    if (row.count_fail_update or 0) > 0 or not row.crt or csr is None:
        return False
    try:
        cert = Certificate.load(row.crt, f"crt of {row.name}")
    except LecentralError:
        return False
    return cert.md5_modulus != row.md5_modulus or any(not cert.covers(n) for n in csr.names)


def check_row(row: CertRow) -> Csr:
    """The row's CSR, parsed, naming the row and matching ``md5_modulus``; LecentralError
    describing any problem (the row is then ``invalid``, never ordered)."""
    from lecentral.store.rows import load_row_csr

    if row.problems:
        raise LecentralError(f"row {row.name!r} is invalid: {'; '.join(row.problems)}; fix it "
                             f"(lecentral show {row.name}) before it can be renewed")
    return load_row_csr(row)


def check_issued(row: CertRow, csr: Csr, crt: bytes, ca: bytes, now: int) -> Certificate:
    """The issued leaf if it fits the row; LecentralError naming the mismatch otherwise."""
    cert = Certificate.load(crt, f"certificate issued for {row.name}")
    if cert.md5_modulus != row.md5_modulus:
        raise LecentralError(
            f"the CA returned a certificate for another key (md5_modulus {cert.md5_modulus}, "
            f"expected {row.md5_modulus}); refused, the stored certificate is unchanged")
    if set(cert.names) != set(csr.names):
        raise LecentralError(
            f"the CA returned a certificate for {', '.join(sorted(cert.names))} but the CSR asks "
            f"for {', '.join(sorted(csr.names))}; refused, the stored certificate is unchanged")
    if cert.not_after <= now:
        raise LecentralError(f"the CA returned a certificate that expired at {when(cert.not_after)}; refused")
    verify_chain(cert, load_chain(ca, f"CA chain issued for {row.name}"), "the CA chain from the CA")
    return cert
