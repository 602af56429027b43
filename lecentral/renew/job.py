"""One renew run: the passes under the renew lock, the retry rounds, one certificate's issue and
save (see the package's docstring for the whole story)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gc
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from lecentral import idle, journal
from lecentral.certificates import (
    Csr,
    check_name,
    now_ts,
    when,
)
from lecentral.config import DEFAULT_CA_NAME, PROFILE_RE, PROFILE_RULE
from lecentral.errors import (
    ConfigError,
    CsrError,
    IssueError,
    LecentralError,
    UnknownNameError,
)
from lecentral.interfaces import IssuedSave
from lecentral.phases import describe, phase, recording
from lecentral.records import Notification
from lecentral.renew import forked, recovery
from lecentral.renew.alerts import FailureAlerts, Held
from lecentral.renew.ari import AriReaders
from lecentral.renew.attempt import SAVERS, Issued, Relayed, issue_and_spool
from lecentral.renew.checks import WindowSource, asks_ari, check_row, due_reason
from lecentral.renew.context import Redactor
from lecentral.renew.outcome import (
    BLOCKED,
    CAUSES,
    CONFIGURATION_PROBLEM,
    LEASE_LOST,
    PLUGIN_PROBLEM,
    WORKER_DIED,
    Outcome,
    Progress,
    RenewReport,
    RenewRequest,
    RunProblem,
)
from lecentral.renew.saving import GroupSaver
from lecentral.renew.spool import CertSpool, Spooled
from lecentral.renew.stopping import StopFlag
from lecentral.types import IssuerContext

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lecentral.acme.client import AcmeClient, RenewalInfoReader
    from lecentral.acme.orders import OrderOptions
    from lecentral.certificates import Certificate
    from lecentral.config import AcmeConfig, CentralConfig
    from lecentral.interfaces import IssuedCertificate, Issuer, Store
    from lecentral.leftovers import Leftover
    from lecentral.registry import Registry
    from lecentral.store.rows import CertRow, Swept

log = logging.getLogger(__name__)

#: the ``[[acme.ca]]`` name whose client ``IssuerContext.acme()`` gives in this worker thread: the
#: job sets it around each attempt of ``Issuer.issue`` (issuers know nothing of the fallback list)
_current_ca: contextvars.ContextVar[str | None] = contextvars.ContextVar("lecentral_ca",
                                                                         default=None)

# --- the job --------------------------------------------------------------------------------


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
        #: the first failures alerted one by one, the rest of a pass in one alert
        self._alerts = FailureAlerts(config.renew.alert_digest_after)
        #: the workers' saves, committed together (lecentral/renew/saving.py)
        self._saver = GroupSaver(store, self._write_lock)
        self._issuers: dict[str, Issuer | LecentralError] = {}
        self._issuers_lock = threading.Lock()
        self._acme_lock = threading.Lock()
        #: the run's ACME clients by CA name; a CA's failure to make one (unreachable...) is kept,
        #: so the certificates after the first do not wait for the same timeout again, and so is
        #: a configuration error (an account key that cannot be made or read)
        self._acme_clients: dict[str, AcmeClient | LecentralError] = {}
        #: the run's own problems (configuration, plugins), by message: reported once, never
        #: charged to the rows they stopped (see RunProblem)
        self._problems: dict[str, RunProblem] = {}
        #: the disabled rows of the first selection that were not asked for by name
        self._disabled: list[str] = []
        self._authorities = config.acme.authorities()
        self.spool = CertSpool(config.renew.state_dir)
        #: set when the run is asked to stop (SIGTERM, SIGINT: lecentral/renew/stopping.py)
        self.stop = StopFlag()
        #: per-certificate ACME profiles (lecentral set --profile), read once per pass
        self._profiles: dict[str, str] | LecentralError = {}
        #: per-certificate issuing CA (lecentral_cert_settings.issuer_ca), read once per pass
        self._issuing_cas: dict[str, tuple[str, str]] = {}
        #: enabled rows the last selection left unread: unchanged since checked, not due
        self.unchanged = 0
        #: the report of the latest run, as far as it got: also when it stopped on an error
        #: (``renew --json`` still says what was done before)
        self.report: RenewReport | None = None
        #: renewal-information readers made to decide whether a sweep may skip rows, by CA name
        self._ari_probed: dict[str, RenewalInfoReader] = {}
        #: a worker process of this pass ended otherwise than by exiting 0 (lecentral/renew/forked.py)
        self.children_died = False

    @property
    def write_lock(self) -> threading.Lock:
        """Held around each database write (SQLite allows one writer at a time)."""
        return self._write_lock

    # -- public ----------------------------------------------------------------------------------

    def run(self, request: RenewRequest) -> RenewReport:
        """Select, issue and save; return every outcome. Never raises for one certificate's failure.

        The renew lock is held for each pass only, never while sleeping between rounds, so an
        operator's ``lecentral renew NAME`` or another host's run can go ahead meanwhile."""
        report = self.report = RenewReport()
        names = [check_name(n) for n in request.names]
        if request.dry_run:
            report.outcomes = self._select(names, request, 1, retry=False)[1]
            report.unchanged = self.unchanged
            report.rounds = 1
            report.disabled = self._disabled
            return report
        try:
            self._rounds(names, request, report)
        finally:
            self._close_issuers()
            report.problems = list(self._problems.values())
            for problem in report.problems:  # met by parallel workers: in name order
                problem.names.sort()
            report.disabled = self._disabled
            if self.stop.is_set():
                report.stopped, report.stopped_exit = self.stop.message, self.stop.exit_code
        if report.problems:
            self._notify_problems(report.problems)
        return report

    # -- rounds and passes -------------------------------------------------------------------

    def _rounds(self, names: list[str], request: RenewRequest, report: RenewReport) -> None:
        number = 1
        wait = request.lock_timeout
        failed_counts: dict[str, int] = {}
        pause = self.config.renew.retry_pause
        while True:
            with self.store.renew_lock(wait, self.config.renew.lease) as got:
                if not got:
                    self._locked_out(report, number, names)
                    return
                if number == 1:
                    with recording() as report.phases, phase("start_of_run"):
                        self._start_of_run(report)  # what earlier runs left, under the lock
                with recording() as timed:
                    again = self._round(names, request, report, number, failed_counts)
                for key, seconds in timed.items():
                    report.phases[key] = report.phases.get(key, 0.0) + seconds
            if request.once or not again or self.stop.is_set():
                return
            log.warning("%d certificate(s) failed: retrying in %d s (renew.retry_pause), the renew "
                        "lock released meanwhile: %s", len(again), pause, ", ".join(again))
            # SIGTERM while sleeping: the rounds end here; the end of the sleep is measured
            # for renew.processes auto, as the command's start is for round 1
            if self._sleep(pause):
                return
            # the run is already waiting in the background: waiting for another run's pass to
            # end is better than giving up the retries
            names, number = again, number + 1
            wait = max(request.lock_timeout, float(pause))

    def _sleep(self, pause: int) -> bool:
        """Sleep ``pause`` seconds before a retry round; True if asked to stop meanwhile. Its
        last :data:`idle.SAMPLE` seconds are measured for renew.processes auto, as the command's
        start is for round 1 (a library's use, never marked, measures nothing)."""
        if not idle.marked():
            return self.stop.wait(pause)
        if self.stop.wait(max(0.0, pause - idle.SAMPLE)):
            return True
        idle.mark(asleep=True)
        return self.stop.wait(min(float(pause), idle.SAMPLE))

    def _round(self, names: list[str], request: RenewRequest, report: RenewReport, number: int,
               failed_counts: dict[str, int]) -> list[str]:
        """One pass under the lock; the names to retry."""
        retry = number > 1
        self.unchanged = 0
        with phase("select"):
            due, others = self._select(names, request, number, retry)
        report.outcomes.extend(others)
        if number == 1:
            report.unchanged = self.unchanged
        if retry:
            due = self._still_failing(due, failed_counts, number, report)
        if not due:
            return []
        report.rounds = number
        try:
            with phase("issue"):
                results = self._pass(due, number)
        finally:
            self._send_digest()
        if self.children_died:
            self.children_died = False
            self._clean_after_dead_children(report)
        report.outcomes.extend(results)
        again = [o.name for o in results if o.status in ("failed", "refused")
                 and (o.count_fail_update or 0) <= self.config.renew.max_failures]
        failed_counts.clear()
        failed_counts.update({o.name: o.count_fail_update or 0 for o in results})
        return again

    def _clean_after_dead_children(self, report: RenewReport) -> None:
        """A worker process died during the pass (killed alone, crashed): the challenge records
        its journal still notes are removed now, under the lock, as the next run would."""
        try:
            stored = self.store.leftovers()
        except LecentralError as exc:  # the next run's start does it
            log.error("the challenge journals of dead worker processes are left for the next "
                      "run: %s", exc)
            return
        cleaned, kept, refused = recovery.clean_journals(self, stored)
        report.cleaned.extend(cleaned)
        report.kept.extend(kept)
        report.start.extend(refused)

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
        now = now_ts()
        swept = self._sweep(names, request, retry, now)
        if swept is not None:
            rows = [s.row for s in swept.rows]
            self.unchanged = swept.unchanged
            if number == 1:
                self._disabled = swept.disabled
        else:
            rows = self.store.list()
            by_name = {r.name: r for r in rows}
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise UnknownNameError(f"no certificate named {', '.join(unknown)} in the "
                                       "database (see lecentral list)")
            if names:
                rows = [by_name[n] for n in names]
            elif number == 1:
                self._disabled = [r.name for r in rows if not r.enable]
        ari = self._ari_readers(rows, request, retry)
        due: list[tuple[CertRow, Csr, str]] = []
        others: list[Outcome] = []
        try:
            if ari is not None:
                self._settle_ari(ari, rows, now)
            for row in rows:
                outcome = self._consider(row, now, request, retry,
                                         ari.for_row(row) if ari is not None else None,
                                         number, due)
                if outcome is not None:
                    others.append(outcome)
        finally:
            if ari is not None:
                ari.close()
            for reader in self._ari_probed.values():  # made, then not needed
                reader.close()
            self._ari_probed = {}
        if swept is not None:
            try:
                self.store.record_facts(swept.rows)
            except LecentralError as exc:  # a cache: the next sweep reads these rows again
                log.warning("%s; the next renew reads these certificates again", exc)
        return due, others

    def _sweep(self, names: list[str], request: RenewRequest, retry: bool,
               now: int) -> Swept | None:
        """The rows of a whole sweep as SQL selects them (lecentral/store/facts.py), or None when
        every row must be read: NAMEs, --force, a retry. While a configured CA offers renewal
        information (ARI), SQL skips a row of that CA only while the window cached for its
        certificate is fresh and its ARI due time has not come (lecentral/renew/ari.py)."""
        if names or retry or request.force:
            return None
        from lecentral.store.rows import AriSweep

        offering = (self._ari_offering() if not request.dry_run and self.config.renew.ari
                    else ())
        if not offering:  # no window to ask: the dates decide
            return self.store.sweep(self.config.renew, now)
        if not _takes_ari(self.store.sweep):
            # a store written before Store.sweep took ``ari``: its SQL would skip rows whose
            # window may have opened (ARI makes a renewal earlier), so every row is read
            return None
        return self.store.sweep(self.config.renew, now, AriSweep(offering, self._authorities[0][0]))

    def _ari_offering(self) -> tuple[str, ...]:
        """The names of the configured CAs that offer renewal information (each directory read
        once: the readers are kept for this selection's ARI questions)."""
        from lecentral.acme.client import RenewalInfoReader

        for name, acme in self._authorities:
            if name not in self._ari_probed:
                self._ari_probed[name] = RenewalInfoReader(acme)
        return tuple(name for name, _ in self._authorities if self._ari_probed[name].offered)

    def _settle_ari(self, ari: AriReaders, rows: list[CertRow], now: int) -> None:
        """Find, before the decisions, the ARI windows they will ask for: cached or asked of
        the CAs concurrently (lecentral/renew/ari.py)."""
        wanted = []
        for row in rows:
            if not (row.enable and row.crt):
                continue
            try:
                csr = check_row(row)
            except LecentralError:
                continue
            cert = asks_ari(row, now, self.config, csr)
            if cert is not None:
                wanted.append((row, cert))
        ari.settle(wanted, now)

    def _consider(self, row: CertRow, now: int, request: RenewRequest, retry: bool,
                  ari: WindowSource | None, number: int,
                  due: list[tuple[CertRow, Csr, str]]) -> Outcome | None:
        def outcome(status: str, message: str, issuer: str | None = None) -> Outcome:
            return Outcome(row.name, status, self.redact(message), issuer, round=number,
                           ts_expire=row.ts_expire, count_fail_update=row.count_fail_update)

        if not row.enable:
            flag = "enable is NULL" if row.enable_null else "enable = 'N'"
            # asked for by name (in any case, as DNS compares names): say why nothing is done
            asked = {check_name(n) for n in request.names}
            if row.name not in asked:
                return None
            return outcome("skipped", f"disabled ({flag}): not renewed; enable it with lecentral "
                                      f"enable {row.name}")
        try:
            csr = check_row(row)
        except LecentralError as exc:
            # the outcome carries it to the table (or JSON) and the alert: logged at ERROR it
            # was printed twice on the terminal
            log.info("%s", exc)
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
            try:  # the issuer the real run would need (a typo in [renew], a disabled plugin)
                self.registry.issuer(issuer)
            except LecentralError as exc:
                return outcome("failed", f"due: {why}; but {exc}", issuer)
            return outcome("would-issue", f"due: {why}; would order {', '.join(csr.names)}", issuer)
        due.append((row, csr, issuer))
        self.progress(row.name, f"due ({why})")
        return None

    def _ari_readers(self, rows: list[CertRow], request: RenewRequest,
                     retry: bool) -> AriReaders | None:
        # a dry run contacts no CA (not even for renewal information): it decides on dates alone
        if retry or request.force or request.dry_run or not self.config.renew.ari:
            return None
        if not any(r.enable and r.crt for r in rows):
            return None
        try:
            issuing = self.store.issuing_cas()
        except LecentralError as exc:  # then each certificate's window is asked of the first CA
            log.warning("%s; asking the first CA for renewal information", exc)
            issuing = {}
        readers, self._ari_probed = self._ari_probed, {}
        return AriReaders(self._authorities, issuing, readers, self.store, self.stop.is_set)

    def _pass(self, due: list[tuple[CertRow, Csr, str]], number: int) -> list[Outcome]:
        try:
            self._profiles = self.store.profiles()
        except LecentralError as exc:  # each certificate then fails saying so, none is misordered
            self._profiles = exc
        try:
            self._issuing_cas = self.store.issuing_cas()
        except LecentralError as exc:  # an optimisation lost (ARI replaces): never a failure
            log.warning("%s; ordering without replaces where the issuing CA is unknown", exc)
            self._issuing_cas = {}
        for issuer in {name for _, _, name in due}:
            self._issuer(issuer)
        for built in self._issuers.values():
            if not isinstance(built, LecentralError):
                built.begin_pass()
        # every challenge record is noted before it is added (lecentral/journal.py)
        journal.begin_pass(self.config.renew.state_dir)
        try:
            with _gc_frozen():
                count = forked.processes(self, len(due))
                if count > 1:  # [renew] processes: more than one core
                    return forked.run_pass(self, due, number, count)
                return self._threads_pass(due, number)
        finally:
            journal.end_pass()

    def _threads_pass(self, due: list[tuple[CertRow, Csr, str]], number: int) -> list[Outcome]:
        """The pass in this process: ``workers`` threads issue, two savers save."""
        workers = max(1, min(self.config.renew.workers, len(due)))
        # the workers talk to the CA and the nameservers; the savers save what they issued (a
        # worker takes its next certificate once this one is spooled)
        # (the savers outlive the workers: a worker's last certificate always finds them)
        with ThreadPoolExecutor(max_workers=SAVERS, thread_name_prefix="renew-save") as savers, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="renew") as pool:
            futures = [pool.submit(self.renew_one, row, csr, issuer, number, savers)
                       for row, csr, issuer in due]
            started = [f.result() for f in futures]
            return [o.result() if isinstance(o, Future) else o for o in started]

    # -- one certificate -------------------------------------------------------------------

    def _start_of_run(self, report: RenewReport) -> None:
        """What earlier runs left: spooled certificates saved, leftovers removed."""
        recovery.start_of_run(self, report)

    def renew_one(self, row: CertRow, csr: Csr, issuer_name: str, number: int,
                  savers: ThreadPoolExecutor) -> Outcome | Future[Outcome]:
        """One certificate's attempt in a worker: issued and spooled here, then handed to
        ``savers`` (:meth:`finish_issued`), whose future is returned."""
        saved = self._save_spooled(row.name, number)
        if saved is not None:
            return saved
        if self.stop.is_set():
            return self.not_started(row, issuer_name, time.monotonic(), number)
        try:  # a run that lost its lease (Galera) orders nothing more: another run has the lock
            self.store.renew_lock_check()
        except LecentralError as exc:  # the run's problem, said and alerted once, not per row
            return self._blocked(row, issuer_name, exc, time.monotonic(), number,
                                 cause=LEASE_LOST)
        result = issue_and_spool(self, row, csr, issuer_name)
        if getattr(self.store, "leased", False):
            # Galera: a save may find the lease lost, and then nothing more may be ordered: this
            # worker waits for its save before its next certificate, as without savers
            return self.finish_issued(row, csr, issuer_name, number, result)
        return savers.submit(self.finish_issued, row, csr, issuer_name, number, result)

    def _finish(self, row: CertRow, outcome: Outcome, timed: dict[str, float],
                cpu: dict[str, float], cpu_seconds: float, found: list[Leftover]) -> Outcome:
        """The attempt's phases, its log line, and what it left behind."""
        outcome.phases, outcome.phases_cpu, outcome.cpu_seconds = timed, cpu, cpu_seconds
        if timed:  # lecentral -v renew: where this certificate's time went
            log.info("%s: %s in %.3f s: %s", row.name, outcome.status, outcome.seconds,
                     describe(timed))
        if found:
            outcome.leftovers = recovery.keep_leftovers(self, found)
            outcome.message += (f"; {len(found)} challenge record(s) left behind, removed at the "
                                "start of the next run")
        return outcome

    def finish_issued(self, row: CertRow, csr: Csr, issuer_name: str, number: int,
                      result: Issued) -> Outcome:
        """The saver's part of an attempt (lecentral/renew/attempt.py), made by a worker thread
        or a worker process: saved, or its failure recorded, with the events and alerts."""
        from lecentral.certificates import Certificate

        cpu: dict[str, float] = {}
        cpu_started = time.thread_time()
        with recording(cpu) as timed:
            if result.status == "blocked":
                outcome = self._blocked(row, issuer_name,
                                        Relayed(result.message, result.exit_code),
                                        result.started, number)
            elif result.status != "issued" or result.issued is None:
                outcome = self._failed(row, issuer_name, result.message, result.status,
                                       result.started, number)
            else:
                with phase("save"):
                    cert = Certificate.load(result.issued.crt,
                                            f"the certificate issued for {row.name}")
                    outcome = self._store(row, csr, result.issued, result.issuer_ca,
                                          result.tried, cert, issuer_name, result.now,
                                          result.started, number, result.spooled)
        return self._finish(row, outcome, _added(result.phases, timed),
                            _added(result.phases_cpu, cpu),
                            result.cpu_seconds + time.thread_time() - cpu_started,
                            result.leftovers)

    def prepare_acme(self) -> None:
        """Make the first CA's ACME client now (account key, registration): before worker
        processes are forked, so that they find the key made and the account registered."""
        try:
            self._acme()
        except LecentralError as exc:  # each certificate meets it again, and says it
            log.debug("the ACME client could not be made before the pass: %s", exc)

    def forget_acme_clients(self) -> None:
        """In a worker process: drop the clients made before the fork (their connections are
        the parent's), keeping what failed; each makes its own when first needed."""
        self._acme_lock = threading.Lock()
        self._acme_clients = {name: client for name, client in self._acme_clients.items()
                              if isinstance(client, LecentralError)}

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
        outcome = recovery.save_spooled(self, spooled, number)
        return outcome if outcome is not None and outcome.status != "refused" else None

    def _store(self, row: CertRow, csr: Csr, issued: IssuedCertificate,
               issuer_ca: tuple[str, str], tried: list[str], cert: Certificate,
               issuer_name: str, now: int, started: float, number: int,
               spooled: Spooled | None) -> Outcome:
        """Save a spooled certificate (group commit), unspool it; its outcome."""
        # with the certificates other workers spooled meanwhile, in one transaction
        error = self._saver.save(IssuedSave(row.name, issued.crt, issued.ca, cert.not_after, now,
                                            issuer_ca))
        if isinstance(error, CsrError):  # the row changed under us: this certificate is of no use
            if spooled is not None:
                self.spool.remove(spooled)
            return self._failed(row, issuer_name, f"refused: {error}", "refused", started,
                                number, record=False)
        if isinstance(error, UnknownNameError):  # the row was removed during the run
            if spooled is not None:  # the next run could only discard it
                self.spool.remove(spooled)
            return self._failed(row, issuer_name, f"issued but not saved: {error}; the row was "
                                "removed during the run: the certificate is discarded",
                                "failed", started, number, record=False)
        if error is not None:
            kept = (f"it is kept in {spooled.path} and the next run saves it without a new "
                    "order"
                    if spooled else "it could not be spooled either: it is lost, the next "
                    "run orders it again")
            if spooled is not None:  # for the run that saves it: what happened here
                recovery.note_unsaved(self, spooled, str(error))
            return self._failed(row, issuer_name, f"issued but not saved: {error}; {kept}",
                                "failed", started, number, record=False)
        if spooled is not None:
            self.spool.remove(spooled)
        self.registry.emit("lecentral_cert_issued", name=row.name, crt=issued.crt, ca=issued.ca,
                           ts_expire=cert.not_after, issuer_ca=issuer_ca[0])
        seconds = time.monotonic() - started
        self.progress(row.name, f"issued in {seconds:.2f} s")
        log.info("%s: issued by %s (CA %s), expires %s", row.name, cert.issuer, issuer_ca[0],
                 cert.not_after)
        message = f"issued, valid until {when(cert.not_after)}"
        if len(self._authorities) > 1:
            message = f"issued by CA {issuer_ca[0]}, valid until {when(cert.not_after)}"
        if tried:
            message += " (after the CA's failure: " + "; ".join(tried) + ")"
        return Outcome(row.name, "issued", self.redact(message), issuer_name, seconds,
                       cert.not_after, 0, number, issuer_ca=issuer_ca[0])

    def _issue_with_fallback(self, row: CertRow, csr: Csr, issuer_name: str
                             ) -> tuple[IssuedCertificate, tuple[str, str], list[str]]:
        """``Issuer.issue`` at each CA of ``[[acme.ca]]`` in turn until one issues.

        The next CA is tried, in the same run, only when the failure is the CA's
        (:func:`~lecentral.acme.problems.is_ca_fault`: unreachable, 5xx, ``serverInternal``,
        ``rateLimited``, ``badNonce`` after retries); a failure that is ours (DNS, validation, CSR,
        policy, configuration) would be the same at any CA and ends the attempt. Returns the
        certificate, (name, directory) of the CA that issued it, and why the earlier ones did not.
        """
        from lecentral.acme.orders import ordering_with
        from lecentral.acme.problems import is_ca_fault

        issuer = self._issuer(issuer_name)
        if isinstance(issuer, LecentralError):
            raise issuer
        tried: list[str] = []
        for index, (ca_name, acme) in enumerate(self._authorities):
            token = _current_ca.set(ca_name)
            try:
                with ordering_with(self._order_options(row, ca_name, acme, index)):
                    issued = issuer.issue(row, csr)
                return issued, (ca_name, acme.directory), tried
            except LecentralError as exc:
                why = f"CA {ca_name} ({acme.directory}): {exc}" if len(self._authorities) > 1 \
                    else str(exc)
                last = index + 1 == len(self._authorities)
                if last or not is_ca_fault(exc):
                    if not last:
                        why += " (not the CA's failure: not tried at the next CA)"
                    raise _with_earlier(exc, tried, why) from None
                following = self._authorities[index + 1][0]
                log.warning("%s: %s; the CA's failure: trying CA %s next", row.name,
                            self.redact(why), following)
                self.progress(row.name, f"CA {ca_name} failed, trying CA {following}")
                tried.append(why)
            finally:
                _current_ca.reset(token)
        raise AssertionError("unreachable: the last CA's failure is raised")  # pragma: no cover

    def _order_options(self, row: CertRow, ca_name: str, acme: AcmeConfig,
                       index: int) -> OrderOptions:
        """The profile (``lecentral set --profile``, else the CA's ``profile``, else ``[acme]
        profile``) and the ARI certID of the stored certificate this order replaces: only for the
        CA that issued it (recorded, or the first CA when not recorded): another CA could not
        match it. None for a first issuance or a stored certificate that does not parse."""
        from lecentral.acme.client import ari_cert_id
        from lecentral.acme.orders import OrderOptions

        if isinstance(self._profiles, LecentralError):
            raise self._profiles
        key = row.name.strip().lower().rstrip(".")
        source = "[acme] profile" if ca_name == DEFAULT_CA_NAME or \
            acme.profile == self.config.acme.profile else f"[[acme.ca]] {ca_name} profile"
        profile = acme.profile or None
        stored = self._profiles.get(key)
        if stored is not None:
            if not PROFILE_RE.match(stored):
                raise IssueError(f"lecentral_cert_settings holds an invalid ACME profile for "
                                 f"{row.name} ({PROFILE_RULE}); fix it with lecentral set "
                                 f"{row.name} --profile NAME (or --profile '' to clear it)")
            profile, source = stored, f"lecentral set {row.name} --profile"
        recorded = self._issuing_cas.get(key)
        same_ca = recorded[0] == ca_name if recorded is not None else index == 0
        replaces = None
        if same_ca and row.crt and (row.ts_expire or 0) > 1:
            try:
                replaces = ari_cert_id(row.crt)
            except Exception as exc:  # noqa: BLE001 - no AKI, unparsable: an optimisation lost
                log.info("%s: the stored certificate has no ARI certID (%s); ordering without "
                         "replaces", row.name, exc)
        return OrderOptions(profile=profile, replaces=replaces, profile_source=source)

    def _spool(self, row: CertRow, csr: Csr, crt: bytes, ca: bytes, ts_expire: int,
               issuer: str, now: int, issuer_ca: tuple[str, str]) -> Spooled | None:
        """Write the certificate to the spool before the database; None (logged) if impossible."""
        try:
            return self.spool.put(row.name, crt, ca, csr.der, ts_expire, issuer, now, issuer_ca)
        except LecentralError as exc:
            log.error("%s: %s; saving it to the database without a safety copy", row.name, exc)
            return None

    def _failed(self, row: CertRow, issuer: str, error: str, status: str, started: float,
                number: int, *, record: bool = True) -> Outcome:
        error = self.redact(error)
        log.info("%s: %s", row.name, error)  # the outcome shows it (table, JSON, alert): once
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

    def _blocked(self, row: CertRow, issuer: str, exc: LecentralError, started: float,
                 number: int, *, cause: str | None = None) -> Outcome:
        """``row`` was stopped by a problem of the run (its configuration, its plugins, a worker
        process that died, a lost lease: ``cause``, else told by the error's exit status), not
        of the row: kept once for the run (one message, one alert, the error's exit status), and
        the row's count_fail_update, event log and alerts left alone, so that one mistake in
        lecentral.toml is not N failing certificates. A TSIG key file of one zone
        (``[dns.zones."ZONE"]``) that cannot be read stops only that zone's rows, the same way."""
        message = self.redact(str(exc))
        log.info("%s: not tried: %s", row.name, message)  # said once, by the run
        if cause is None:  # raised, or relayed by a worker, as a ConfigError or a PluginError
            cause = PLUGIN_PROBLEM if exc.exit_code == 3 else CONFIGURATION_PROBLEM
        with self._write_lock:
            problem = self._problems.get(message)
            if problem is None:
                problem = self._problems[message] = RunProblem(message, exc.exit_code,
                                                               cause=cause)
            problem.names.append(row.name)
        self.progress(row.name, f"{BLOCKED}: {message}")
        return Outcome(row.name, BLOCKED, f"not tried: {message}", issuer,
                       time.monotonic() - started, row.ts_expire, row.count_fail_update, number)

    def not_started(self, row: CertRow, issuer: str, started: float, number: int) -> Outcome:
        """``row`` was not started because the run was asked to stop (SIGTERM, SIGINT): blocked,
        its failure count and event log unchanged, so that the next run tries it; no alert (the
        operator stopped it), the CLI says it once."""
        message = f"not tried: {self.stop.message}"
        log.debug("%s: %s", row.name, message)
        self.progress(row.name, f"{BLOCKED}: {message}")
        return Outcome(row.name, BLOCKED, message, issuer, time.monotonic() - started,
                       row.ts_expire, row.count_fail_update, number)

    def _notify_problems(self, problems: list[RunProblem]) -> None:
        """One alert for the run's problems, however many rows they stopped; its subject says
        what they are (a dead worker process is not a configuration problem)."""
        stopped = sorted({name for p in problems for name in p.names})
        causes = [c for c in CAUSES if any(p.cause == c for p in problems)]
        named = len(causes) > 1  # else the subject says it
        parts = [f"{p.cause + ': ' if named else ''}{p.message}\n(stops {len(p.names)} "
                 f"certificate(s): {_some(p.names)})" for p in problems]
        body = ("lecentral renew did not try some certificates because of a problem of its own "
                "(its configuration, its plugins, a worker process that died), not of the "
                "certificates (their failure counts are "
                "unchanged):\n\n" + "\n\n".join(parts) + "\n\n" + _next_steps(causes))
        subject = f"renew: {' and '.join(causes)}, {len(stopped)} certificate(s) not tried"
        errors = self.registry.notify(Notification("error", subject, body),
                                      dataclasses.asdict(self.config.notify))
        for err in errors:
            log.error("notification about the run's problem not sent: %s", self.redact(err))

    def _send_digest(self) -> None:
        """The pass's held failure alerts, as one (lecentral/renew/alerts.py)."""
        digest = self._alerts.digest(self.config.renew.max_failures)
        if digest is None:
            return
        errors = self.registry.notify(digest, dataclasses.asdict(self.config.notify))
        for err in errors:
            log.error("notification about %s not sent: %s", digest.subject, self.redact(err))

    def _notify(self, name: str, error: str, count: int, status: str) -> None:
        if not self._alerts.admit(Held(name, status, error, count)):
            return  # in the pass's digest
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
        each of its rows, so the other issuers' rows still go ahead). Its own lock, not the write
        lock: a worker starting a certificate does not wait for another one's database save."""
        with self._issuers_lock:
            if name not in self._issuers:
                try:
                    context = IssuerContext(self.config, self._acme, self.redact.add)
                    self._issuers[name] = self.registry.issuer(name).factory(context)
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
        for client in self._acme_clients.values():
            if not isinstance(client, LecentralError):
                client.close()
        self._acme_clients.clear()

    def _acme(self) -> AcmeClient:
        """The ACME client of the CA this worker is trying (``_current_ca``; the first CA outside
        an attempt), made when an issuer first needs it: a dry run or a pass with nothing due
        never creates an account key nor talks to a CA, and a CA later in ``[[acme.ca]]`` is
        contacted only when an earlier one failed. A CA's failure to make its client is kept for
        the run when it is the CA's (unreachable...): the next certificates go to the next CA at
        once."""
        from lecentral.acme.problems import is_ca_fault

        name = _current_ca.get() or self._authorities[0][0]
        acme = dict(self._authorities)[name]
        # the first certificates of a run wait here while the directory is read and the account
        # registered (once per CA and run; in the first process before a forked pass, and
        # again in each worker process, which reads the directory and finds the account)
        with phase("account"), self._acme_lock:
            client = self._acme_clients.get(name)
            if client is None:
                from lecentral.acme.client import AcmeClient

                try:
                    client = AcmeClient(acme, workers=self.config.renew.workers)
                except ConfigError as exc:  # the account key: the same for every certificate
                    self._acme_clients[name] = exc
                    raise
                except IssueError as exc:
                    if is_ca_fault(exc):
                        self._acme_clients[name] = exc
                    raise
                self._acme_clients[name] = client
        if isinstance(client, LecentralError):
            raise client
        return client


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """The objects of the start (modules, configuration, plugins, the store: a few hundred
    thousand) left out of the cyclic garbage collector's scans for the pass: each certificate
    makes enough short-lived objects to trigger collections, and every full one walked the whole
    heap (about 0.1 s of a 50-certificate pass, 7 % of its CPU). Nothing is lost: those objects
    are scanned again after the pass (gc.unfreeze), and what the pass makes is collected as
    usual; forked worker processes also copy fewer pages."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _added(first: dict[str, float], second: dict[str, float]) -> dict[str, float]:
    """Phase times of two parts of one attempt, added up by name."""
    total = dict(first)
    for name, seconds in second.items():
        total[name] = total.get(name, 0.0) + seconds
    return total


def _next_steps(causes: list[str]) -> str:
    """The end of the run-problem alert: what to do about each cause."""
    steps = []
    if CONFIGURATION_PROBLEM in causes or PLUGIN_PROBLEM in causes:
        steps.append("Fix it, then run lecentral renew again.\n")
    if WORKER_DIED in causes:
        steps.append("The next lecentral renew tries them (any the CA issued are saved from the "
                     "spool, without a new order). If worker processes keep dying, look for why "
                     "(the kernel log: the OOM killer?) or lower [renew] processes.\n")
    if LEASE_LOST in causes:
        steps.append("The next lecentral renew tries them, once the database is reachable "
                     "again.\n")
    return "".join(steps)


def _some(names: list[str], shown: int = 10) -> str:
    """The first ``shown`` names, and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _with_earlier(exc: LecentralError, tried: list[str], why: str) -> LecentralError:
    """``exc`` itself when its message says it all (one CA); else an error of its class (an
    IssueError for a class that takes other arguments) whose message names the CA and says why
    the earlier CAs did not issue."""
    text = "; ".join([*tried, why])
    if text == str(exc):
        return exc
    try:
        return type(exc)(text)
    except TypeError:
        return IssueError(text)


def _takes_ari(sweep: Callable[..., object]) -> bool:
    """True if a store's ``sweep`` takes the ``ari`` argument (lecentral.api.Store's since the
    windows are cached: a third party's store may predate it)."""
    import inspect

    try:
        return "ari" in inspect.signature(sweep).parameters
    except (TypeError, ValueError):
        return False
