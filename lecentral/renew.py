"""The renew job (the seed's download_cert.pl): pick what is due, issue it, check it, store it.

Each pass runs under the database's renew lock (so two central hosts never order the same
certificate):

1. **Due**: an enabled, valid row is due when it has no certificate yet, or its ``ts_expire`` is
   within ``renew.before_days``, or the CA's ARI window (RFC 9773) for its certificate has opened;
   and its last attempt (``ts_last_update``) is older than ``renew.min_interval``. ``--force``
   skips both tests. ARI can only make a renewal earlier (a CA announcing a mass revocation),
   never later than ``before_days``.
2. **Issue**: each due row goes to its issuer (``renew.dns01_issuer``, or ``renew.http01_issuer``
   for certbot='Y' rows), ``renew.workers`` at a time, all sharing one ACME account.
3. **Check, then save**: the certificate's key must match ``md5_modulus``, its names the CSR's, its
   chain must verify; only then one transaction saves it (old_crt/old_ca keep the previous one).
   A mismatch is refused and counted as a failure; ``crt`` stays as it was.
4. **Failures**: ``count_fail_update`` + 1, the error in the event log, the
   ``lecentral_renew_failed`` event, and a notification (an error once the count passes 2).
5. **Rounds**: unless ``once``, failed rows are retried after ``renew.retry_pause`` until they
   succeed or their count exceeds ``renew.max_failures``. Retries skip the min_interval test:
   the pause is their rate guard. The lock is held per pass, not while sleeping between rounds.
   (The library's default is rounds; the ``lecentral renew`` command does one pass unless
   ``--rounds``, so that a human's ``renew NAME`` never sleeps an hour in the foreground.)

Nothing is lost between runs (:mod:`lecentral.recovery`): an issued certificate is spooled
(:mod:`lecentral.spool`) before it is saved, and the next run saves it without a new order; a
challenge record an issuer could not remove (:mod:`lecentral.leftovers`) is stored, shown and
alerted, makes the run exit non-zero, and is removed at the start of every later run until gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lecentral.certificates import (
    Certificate,
    Csr,
    check_name,
    load_chain,
    now_ts,
    verify_chain,
    when,
)
from lecentral.errors import CsrError, LecentralError
from lecentral.leftovers import Leftover, collecting
from lecentral.spool import CertSpool, Spooled
from lecentral.types import Notification

if TYPE_CHECKING:
    from lecentral.acme.client import RenewalInfoReader
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Issuer, Store
    from lecentral.registry import Registry
    from lecentral.store.rows import CertRow, LockHolder

log = logging.getLogger(__name__)

DAY = 86400
#: outcomes that make ``lecentral renew`` exit non-zero
FAILED = ("failed", "refused", "invalid")

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class RenewRequest:
    """What to renew: ``names`` (empty: every row), and how.

    ``once``: one pass, no retry rounds. ``lock_timeout``: seconds to wait for the renew lock
    before the first pass (later rounds wait at least ``renew.retry_pause``)."""

    names: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    once: bool = False
    lock_timeout: float = 0.0


@dataclass
class Outcome:
    """What happened to one certificate in one pass."""

    name: str
    status: str  # issued | failed | refused | invalid | skipped | not-due | would-issue
    message: str
    issuer: str | None = None
    seconds: float = 0.0
    ts_expire: int | None = None
    count_fail_update: int | None = None
    round: int = 1
    leftovers: list[Leftover] = field(default_factory=list)  # challenge records left behind


@dataclass
class RenewReport:
    """Every outcome of a run (the last one per name first in ``final``)."""

    outcomes: list[Outcome] = field(default_factory=list)
    #: another run held the renew lock: nothing done (round 1), or the retries stopped
    locked_out: bool = False
    locked_out_round: int = 0
    lock_holder: LockHolder | None = None
    rounds: int = 0
    start: list[Outcome] = field(default_factory=list)  # spooled certificates, before round 1
    cleaned: list[Leftover] = field(default_factory=list)  # earlier leftovers removed now
    kept: list[Leftover] = field(default_factory=list)  # earlier leftovers still there

    @property
    def leftovers(self) -> list[Leftover]:
        """Challenge records still left behind at the end of the run (earlier ones, then new)."""
        return [*self.kept, *(left for o in self.outcomes for left in o.leftovers)]

    @property
    def ok(self) -> bool:
        """Nothing failed, nothing is left behind, no pass locked out: ``lecentral renew`` exits 0."""
        return not (self.failed or self.leftovers or self.locked_out
                    or any(o.status in FAILED for o in self.start))

    @property
    def final(self) -> list[Outcome]:
        """The latest outcome of each name, in name order."""
        last: dict[str, Outcome] = {}
        for outcome in self.outcomes:
            last[outcome.name] = outcome
        return [last[n] for n in sorted(last)]

    @property
    def failed(self) -> list[Outcome]:
        """Names whose latest outcome is a failure."""
        return [o for o in self.final if o.status in FAILED]


# --- due selection --------------------------------------------------------------------------


def ari_due_at(window_start: int, window_end: int, seed: str) -> int:
    """A point in the ARI window, fixed per certificate, so that many certificates spread out
    over the window (RFC 9773 §4.2) and a daily job decides the same way each day."""
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64
    return window_start + int((window_end - window_start) * fraction)


def due_reason(row: CertRow, now: int, config: CentralConfig, force: bool,
               ari: RenewalInfoReader | None, csr: Csr | None = None) -> tuple[bool, str]:
    """(due?, why) for an enabled, valid row (``csr``: its parsed CSR, parsed here if None).

    A stored certificate with problems (:func:`certificate_problems`) is due: a new one replaces
    it. The min_interval rate guard still applies; the reason then says what is waiting.
    """
    from lecentral.store.rows import certificate_problems

    renew = config.renew
    if force:
        return True, "forced"
    bad = certificate_problems(row, csr.names if csr is not None else None)
    if row.ts_last_update and row.ts_last_update > 1 and now - row.ts_last_update < renew.min_interval:
        waiting = (f"; the stored certificate is bad ({'; '.join(bad)}) and is reissued once "
                   "renew.min_interval has passed" if bad else "")
        return False, (f"last attempt {(now - row.ts_last_update) // 60} min ago "
                       f"(renew.min_interval {renew.min_interval} s){waiting}")
    if bad:
        return True, f"the stored certificate is bad: {'; '.join(bad)}"
    if not row.crt or not row.ts_expire or row.ts_expire <= 1:
        return True, "no certificate yet"
    left = row.ts_expire - now
    if left <= renew.before_days * DAY:
        return True, f"expires in {max(left, 0) // DAY} days (renew.before_days {renew.before_days})"
    if ari is not None:
        window = ari.window(row.crt)
        if window is not None:
            at = ari_due_at(int(window.start.timestamp()), int(window.end.timestamp()),
                            Certificate.load(row.crt, f"crt of {row.name}").fingerprint)
            if now >= at:
                return True, "the CA's renewal window (ARI) is open"
    return False, f"expires in {left // DAY} days"


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
        raise LecentralError(f"the CA returned a certificate that expired at {cert.not_after}; refused")
    verify_chain(cert, load_chain(ca, f"CA chain issued for {row.name}"), "the CA chain from the CA")
    return cert


# --- the job --------------------------------------------------------------------------------


class Redactor:
    """Removes every configured secret from a text (defence in depth: messages are built from
    names, but a server's or library's error text is quoted as it is)."""

    def __init__(self, config: CentralConfig) -> None:
        from sqlalchemy.engine import make_url

        secrets: set[str] = {config.acme.eab_hmac_key}
        try:
            secrets.add(make_url(config.database.url).password or "")
        except Exception:  # noqa: BLE001, S110 - an unparsable URL has no password to hide
            pass
        try:
            from lecentral.dns.tsig import read_key_file

            files = {config.dns.tsig_key_file, *(z.tsig_key_file for z in config.dns.zones.values())}
            for path in filter(None, files):
                secrets.update(k.secret for k in read_key_file(path).values())
        except LecentralError:
            pass  # an unreadable key file is reported where it is used
        self.secrets = sorted((s for s in secrets if s and len(s) >= 6), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text


class RenewJob:
    """One ``lecentral renew`` run against a store, with the registry's issuers and notifiers."""

    def __init__(self, config: CentralConfig, store: Store, registry: Registry,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.progress = progress or (lambda name, step: None)
        self.redact = Redactor(config)
        self._write_lock = threading.Lock()  # SQLite allows one writer: workers take turns
        self._issuers: dict[str, Issuer | LecentralError] = {}
        self.spool = CertSpool(config.renew.state_dir)

    @property
    def write_lock(self) -> threading.Lock:
        """Held around each database write (SQLite allows one writer at a time)."""
        return self._write_lock

    # -- public ----------------------------------------------------------------------------------

    def run(self, request: RenewRequest) -> RenewReport:
        """Select, issue and save; return every outcome. Never raises for one certificate's failure.

        The renew lock is held for each pass only, never while sleeping between rounds, so an
        operator's ``lecentral renew NAME`` or another host's run can go ahead meanwhile."""
        report = RenewReport()
        names = [check_name(n) for n in request.names]
        if request.dry_run:
            report.outcomes = self._select(names, request, 1, retry=False)[1]
            report.rounds = 1
            return report
        try:
            self._rounds(names, request, report)
        finally:
            self._close_issuers()
        return report

    # -- rounds and passes -------------------------------------------------------------------

    def _rounds(self, names: list[str], request: RenewRequest, report: RenewReport) -> None:
        number = 1
        wait = request.lock_timeout
        failed_counts: dict[str, int] = {}
        pause = self.config.renew.retry_pause
        while True:
            with self.store.renew_lock(wait) as got:
                if not got:
                    self._locked_out(report, number, names)
                    return
                if number == 1:
                    self._start_of_run(report)  # what earlier runs left, under the lock
                again = self._round(names, request, report, number, failed_counts)
            if request.once or not again:
                return
            log.warning("%d certificate(s) failed: retrying in %d s (renew.retry_pause), the renew "
                        "lock released meanwhile: %s", len(again), pause, ", ".join(again))
            time.sleep(pause)
            # the run is already waiting in the background: waiting for another run's pass to
            # end is better than giving up the retries
            names, number = again, number + 1
            wait = max(request.lock_timeout, float(pause))

    def _round(self, names: list[str], request: RenewRequest, report: RenewReport, number: int,
               failed_counts: dict[str, int]) -> list[str]:
        """One pass under the lock; the names to retry."""
        retry = number > 1
        due, others = self._select(names, request, number, retry)
        report.outcomes.extend(others)
        if retry:
            due = self._still_failing(due, failed_counts, number, report)
        if not due:
            return []
        report.rounds = number
        results = self._pass(due, number)
        report.outcomes.extend(results)
        again = [o.name for o in results if o.status in ("failed", "refused")
                 and (o.count_fail_update or 0) <= self.config.renew.max_failures]
        failed_counts.clear()
        failed_counts.update({o.name: o.count_fail_update or 0 for o in results})
        return again

    def _still_failing(self, due: list[tuple[CertRow, Csr, str]], failed_counts: dict[str, int],
                       number: int, report: RenewReport) -> list[tuple[CertRow, Csr, str]]:
        """The rows to retry: not those another run renewed while this one slept (their failure
        count went back to 0), which would otherwise be ordered a second time."""
        keep = []
        for row, csr, issuer in due:
            if failed_counts.get(row.name) and not row.count_fail_update:
                report.outcomes.append(Outcome(
                    row.name, "not-due", "renewed by another run while waiting to retry",
                    issuer, ts_expire=row.ts_expire, count_fail_update=row.count_fail_update,
                    round=number))
            else:
                keep.append((row, csr, issuer))
        return keep

    def _locked_out(self, report: RenewReport, number: int, names: list[str]) -> None:
        """Another run holds the lock: record who, so the caller can say it (and exit non-zero)."""
        report.locked_out = True
        report.locked_out_round = number
        try:
            report.lock_holder = self.store.renew_lock_holder()
        except LecentralError as exc:
            log.warning("%s", exc)
        holder = report.lock_holder or "its holder is not recorded"
        # info only: the report carries it, and the command says it (once) with its exit status
        if number == 1:
            log.info("another lecentral renew holds the renew lock (%s); nothing done", holder)
        else:
            log.info("round %d not run: another lecentral renew holds the renew lock (%s); not "
                     "retried: %s", number, holder, ", ".join(names))

    def _select(self, names: list[str], request: RenewRequest, number: int,
                retry: bool) -> tuple[list[tuple[CertRow, Csr, str]], list[Outcome]]:
        """(due rows with their CSR and issuer name, outcomes of the rows not issued)."""
        rows = self.store.list()
        by_name = {r.name: r for r in rows}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise LecentralError(f"no certificate named {', '.join(unknown)} in the database "
                                 "(see lecentral list)")
        if names:
            rows = [by_name[n] for n in names]
        now = now_ts()
        ari = self._ari_reader(rows, request, retry)
        due: list[tuple[CertRow, Csr, str]] = []
        others: list[Outcome] = []
        try:
            for row in rows:
                outcome = self._consider(row, now, request, retry, ari, number, due)
                if outcome is not None:
                    others.append(outcome)
        finally:
            if ari is not None:
                ari.close()
        return due, others

    def _consider(self, row: CertRow, now: int, request: RenewRequest, retry: bool,
                  ari: RenewalInfoReader | None, number: int,
                  due: list[tuple[CertRow, Csr, str]]) -> Outcome | None:
        def outcome(status: str, message: str, issuer: str | None = None) -> Outcome:
            return Outcome(row.name, status, self.redact(message), issuer, round=number,
                           ts_expire=row.ts_expire, count_fail_update=row.count_fail_update)

        if not row.enable:
            flag = "enable is NULL" if row.enable_null else "enable = 'N'"
            # asked for by name (in any case, as DNS compares names): say why nothing is done
            asked = {check_name(n) for n in request.names}
            return outcome("skipped", f"disabled ({flag})") if row.name in asked else None
        try:
            csr = check_row(row)
        except LecentralError as exc:
            log.error("%s", exc)
            return outcome("invalid", str(exc))
        issuer = self.config.renew.http01_issuer if row.certbot else self.config.renew.dns01_issuer
        if retry:
            is_due, why = True, "retry"
        else:
            try:
                is_due, why = due_reason(row, now, self.config, request.force, ari, csr)
            except LecentralError as exc:  # e.g. a crt column that does not parse
                is_due, why = True, f"stored certificate unreadable ({exc})"
        if not is_due:
            return outcome("not-due", why, issuer)
        if request.dry_run:
            return outcome("would-issue", f"due: {why}; would order {', '.join(csr.names)}", issuer)
        due.append((row, csr, issuer))
        self.progress(row.name, f"due ({why})")
        return None

    def _ari_reader(self, rows: list[CertRow], request: RenewRequest,
                    retry: bool) -> RenewalInfoReader | None:
        if retry or request.force or not self.config.renew.ari:
            return None
        if not any(r.enable and r.crt for r in rows):
            return None
        from lecentral.acme.client import RenewalInfoReader

        reader = RenewalInfoReader(self.config.acme)
        if not reader.offered:
            reader.close()
            return None
        return reader

    def _pass(self, due: list[tuple[CertRow, Csr, str]], number: int) -> list[Outcome]:
        for issuer in {name for _, _, name in due}:
            self._issuer(issuer)
        for built in self._issuers.values():
            if not isinstance(built, LecentralError):
                built.begin_pass()
        workers = max(1, min(self.config.renew.workers, len(due)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="renew") as pool:
            futures = [pool.submit(self._renew_one, row, csr, issuer, number)
                       for row, csr, issuer in due]
            return [f.result() for f in futures]

    # -- one certificate -------------------------------------------------------------------

    def _start_of_run(self, report: RenewReport) -> None:
        """What earlier runs left: spooled certificates saved, leftovers removed."""
        from lecentral.recovery import start_of_run

        start_of_run(self, report)

    def _renew_one(self, row: CertRow, csr: Csr, issuer_name: str, number: int) -> Outcome:
        saved = self._save_spooled(row.name, number)
        if saved is not None:
            return saved
        with collecting(row.name) as found:
            outcome = self._issue_and_save(row, csr, issuer_name, number)
        if found:
            from lecentral.recovery import keep_leftovers

            outcome.leftovers = keep_leftovers(self, found)
            outcome.message += (f"; {len(found)} challenge record(s) left behind, removed at the "
                                "start of the next run")
        return outcome

    def _save_spooled(self, name: str, number: int) -> Outcome | None:
        """A certificate issued in an earlier round but not saved is saved now, never reordered.

        A spool file that cannot be read is overwritten by this issuance (the start of the run
        reported it); one that was discarded lets the row be ordered again.
        """
        try:
            spooled = self.spool.get(name)
        except LecentralError:
            return None
        if spooled is None:
            return None
        from lecentral.recovery import save_spooled

        outcome = save_spooled(self, spooled, number)
        return outcome if outcome is not None and outcome.status != "refused" else None

    def _issue_and_save(self, row: CertRow, csr: Csr, issuer_name: str, number: int) -> Outcome:
        started = time.monotonic()
        self.progress(row.name, f"issuing with {issuer_name}")
        try:
            issuer = self._issuer(issuer_name)
            if isinstance(issuer, LecentralError):
                raise issuer
            issued = issuer.issue(row, csr)
        except LecentralError as exc:
            return self._failed(row, issuer_name, str(exc), "failed", started, number)
        except Exception as exc:  # a plugin's bug fails this certificate, never the run
            log.exception("issuer %s crashed on %s", issuer_name, row.name)
            return self._failed(row, issuer_name, f"issuer {issuer_name} crashed: "
                                f"{type(exc).__name__}: {exc}", "failed", started, number)
        now = now_ts()
        try:
            cert = check_issued(row, csr, issued.crt, issued.ca, now)
        except LecentralError as exc:
            return self._failed(row, issuer_name, str(exc), "refused", started, number)
        spooled = self._spool(row, csr, issued.crt, issued.ca, cert.not_after, issuer_name, now)
        with self._write_lock:
            try:
                self.store.save_issued(row.name, issued.crt, issued.ca, cert.not_after, now)
            except CsrError as exc:  # the row changed under us: this certificate is of no use
                if spooled is not None:
                    self.spool.remove(spooled)
                return self._failed(row, issuer_name, f"refused: {exc}", "refused", started,
                                    number, record=False)
            except LecentralError as exc:
                kept = (f"it is kept in {spooled.path} and the next run saves it without a new "
                        "order"
                        if spooled else "it could not be spooled either: it is lost, the next "
                        "run orders it again")
                return self._failed(row, issuer_name, f"issued but not saved: {exc}; {kept}",
                                    "failed", started, number, record=False)
        if spooled is not None:
            self.spool.remove(spooled)
        self.registry.emit("lecentral_cert_issued", name=row.name, crt=issued.crt, ca=issued.ca,
                           ts_expire=cert.not_after)
        seconds = time.monotonic() - started
        self.progress(row.name, f"issued in {seconds:.2f} s")
        log.info("%s: issued by %s, expires %s", row.name, cert.issuer, cert.not_after)
        return Outcome(row.name, "issued", f"issued, valid until {when(cert.not_after)}",
                       issuer_name, seconds, cert.not_after, 0, number)

    def _spool(self, row: CertRow, csr: Csr, crt: bytes, ca: bytes, ts_expire: int,
               issuer: str, now: int) -> Spooled | None:
        """Write the certificate to the spool before the database; None (logged) if impossible."""
        try:
            return self.spool.put(row.name, crt, ca, csr.der, ts_expire, issuer, now)
        except LecentralError as exc:
            log.error("%s: %s; saving it to the database without a safety copy", row.name, exc)
            return None

    def _failed(self, row: CertRow, issuer: str, error: str, status: str, started: float,
                number: int, *, record: bool = True) -> Outcome:
        error = self.redact(error)
        log.error("%s: %s", row.name, error)
        count = row.count_fail_update
        if record:
            with self._write_lock:
                try:
                    count = self.store.record_failure(row.name, error, now_ts())
                except LecentralError as exc:
                    log.error("%s: the failure could not be recorded: %s", row.name, exc)
        # event hooks hear of every failure, also one the database could not record
        self.registry.emit("lecentral_renew_failed", name=row.name, error=error,
                           count_fail_update=count or 0)
        self._notify(row.name, error, count or 0, status)
        self.progress(row.name, f"{status}: {error}")
        return Outcome(row.name, status, error, issuer, time.monotonic() - started,
                       row.ts_expire, count, number)

    def _notify(self, name: str, error: str, count: int, status: str) -> None:
        if count > 2:
            severity = "error"
            subject = f"{name}: renewal failed {count} times in a row"
        else:
            severity = "warning"
            subject = f"{name}: renewal {status}"
        body = (f"Renewing the certificate {name} {status}.\n\n{error}\n\n"
                f"count_fail_update is now {count} (renew.max_failures "
                f"{self.config.renew.max_failures}).\nSee: lecentral show {name}\n")
        errors = self.registry.notify(Notification(severity, subject, body, name),
                                      dataclasses.asdict(self.config.notify))
        for err in errors:  # an error, not a warning: nobody else will hear of this failure
            log.error("notification about %s not sent: %s", name, self.redact(err))

    # -- issuers ---------------------------------------------------------------------------------

    def _issuer(self, name: str) -> Issuer | LecentralError:
        """The issuer ``name``, built once per run (an error building it is kept and raised for
        each of its rows, so the other issuers' rows still go ahead)."""
        with self._write_lock:
            if name not in self._issuers:
                try:
                    self._issuers[name] = self.registry.issuer(name).factory(self.config)
                except LecentralError as exc:
                    self._issuers[name] = exc
            return self._issuers[name]

    def _close_issuers(self) -> None:
        for issuer in self._issuers.values():
            if not isinstance(issuer, LecentralError):
                try:
                    issuer.close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort, the run is over
                    log.warning("closing an issuer failed: %s", exc)
        self._issuers.clear()
        acme_client = sys.modules.get("lecentral.acme.client")  # only if an issuer used ACME
        if acme_client is not None:
            acme_client.forget_shared()

