"""The install engine behind ``lecentral-install run``: the seed's install_cert.pl, made safe.

For each configured certificate: finish what a killed run left, read the row, decide (enabled, not
expired, not the installed certificate: :mod:`lecentral.install.decide`), check everything before
touching a file, switch the files as a set, test the daemon's config, activate, verify the served fingerprint, and on any failure put
the previous files back, activate them and verify they are served. Every outcome is one
:class:`Result`, a notification and an event; one certificate's failure never stops the others.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from lecentral.errors import (
    InstallError,
    LecentralError,
    StoreError,
    UnknownNameError,
    VerifyError,
)
from lecentral.install.config import (
    BrokenEntry,
    InstallConfig,
    notify_settings,
)
from lecentral.install.fileset import LocalFiles
from lecentral.install.request import OperatorRequests
from lecentral.install.result import Result
from lecentral.install.uptodate import UpToDateCache
from lecentral.interfaces import Installer, IssuedCertificate, Service
from lecentral.names import now_ts, when
from lecentral.records import CertEntry, Notification

if TYPE_CHECKING:
    from lecentral.certificates import Certificate
    from lecentral.interfaces import Store
    from lecentral.registry import Registry
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

VERIFY_PAUSE = 0.25
VERIFY_MATCHES = 2


class Agent:
    """One ``lecentral-install run`` (or ``--dry-run``) over the configured certificates."""

    def __init__(self, config: InstallConfig, registry: Registry, *, dry_run: bool = False,
                 keep: int | None = None, clock: Callable[[], int] = now_ts) -> None:
        self.config = config
        self.registry = registry
        self.dry_run = dry_run
        self.keep = keep if keep is not None else config.agent.keep
        self.clock = clock
        self.settings = notify_settings(config)
        self.state_dir = Path(config.agent.state_dir)
        self._store: Store | None = None
        self._host: str | None = None
        self.unlogged: list[str] = []  # events the central event log refused in this run
        self.requests = OperatorRequests(registry, self.settings, self.state_dir, self._report)
        self._uptodate: UpToDateCache | None = None

    @property
    def host(self) -> str:
        if self._host is None:
            self._host = (self.config.agent.host or socket.getfqdn()).lower().rstrip(".")
        return self._host

    # -- the run ---------------------------------------------------------------------------------

    def select(self, names: Sequence[str]) -> tuple[list[CertEntry], list[BrokenEntry]]:
        """The entries named on the command line (all when none); an unknown name is an error."""
        entries, broken = list(self.config.certs), list(self.config.broken)
        if not names:
            return entries, broken
        known = {e.name for e in entries} | {b.name for b in broken}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UnknownNameError(f"{', '.join(unknown)} not configured in {self.config.path} "
                              f"(configured: {', '.join(sorted(known)) or 'none'})")
        return [e for e in entries if e.name in names], [b for b in broken if b.name in names]

    def run(self, names: Sequence[str] = ()) -> list[Result]:
        """Process the selected entries; raise StoreError (after alerting) if the database is down."""
        entries, broken = self.select(names)
        results = [self._broken(b) for b in broken]
        if not entries:
            return results
        started = self.clock()
        with self._lock():
            try:
                rows = self._read_rows(entries)
                for entry in entries:
                    results.append(self.requests.resend(entry, self._one(entry, rows.get(entry.name)),
                                                        self.dry_run))
                if self.config.agent.report and not self.dry_run:
                    # before a reboot, so that the report is delivered
                    undelivered = self._send_report(entries, results[len(broken):], results, started)
                    if undelivered is not None:
                        results.append(undelivered)
                self._reboot_if_asked(entries, results)
                if self._uptodate is not None and not self.dry_run:
                    self._uptodate.save({e.id for e in self.config.certs})
            finally:
                if self._store is not None:
                    self._store.close()
        return results

    def _send_report(self, entries: list[CertEntry], mine: list[Result], results: list[Result],
                     started: int) -> Result | None:
        """Deployments and the run to the central database (``[agent] report``)."""
        from lecentral.install import report

        items = []
        for entry, result in zip(entries, mine, strict=True):
            try:
                service = self.config.service(entry)
                installer = self._installer(entry, service)
                items.append(report.observe(self.registry, entry, service, installer, result,
                                            self.clock()))
            except Exception as exc:  # noqa: BLE001 - a plugin failing here must not stop the report
                log.warning("%s: cannot tell what is installed (%s); reported without it",
                            entry.label, exc)
        return report.send(self._store, self.host, items, results, started, self.clock,
                           self.unlogged)

    def _lock(self) -> AbstractContextManager[None]:
        return nullcontext() if self.dry_run else self._exclusive()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One run at a time on this host (cron and a manual run may overlap)."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.state_dir / "lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise InstallError(f"cannot use the state directory {self.state_dir} ([agent] "
                               f"state_dir): {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InstallError(f"another lecentral-install run holds {self.state_dir}/lock; "
                                   "try again when it has finished") from None
            yield
        finally:
            os.close(fd)

    def _read_rows(self, entries: list[CertEntry]) -> dict[str, CertRow | None]:
        """Every row needed, read before any file is touched; the database down is an alert."""
        from lecentral.store import open_store

        try:
            rows = self._read_directly(entries)
            if rows is not None:
                return rows
            self._store = open_store(self.config.database.url, self.registry, self.config.database)
            rows = self._store.get_many([e.name for e in entries])  # (one read, not one each)
            # give the connection back now, not after the installs (reloads, verification: seconds):
            # a thousand agents holding idle connections fill the server's max_connections. A
            # report or an event written later connects again.
            self._store.close()
            return rows
        except LecentralError as exc:  # StoreError; PluginError for a URL no store handles
            self._alert("error", f"cannot read the certificate database on {self.host}",
                        f"{exc}\n\nNo certificate was checked and no file was touched.")
            raise

    def _read_directly(self, entries: list[CertEntry]) -> dict[str, CertRow | None] | None:
        """The rows through the driver alone (no SQLAlchemy: most of a no-op run's time), when
        nothing but reading is needed and the built-in SQL store handles the URL; else None."""
        url = self.config.database.url
        if self.config.agent.report or self.registry.store_for_url(url).factory.__module__ != \
                "lecentral.store.plugin":
            return None
        from lecentral.store.direct import read_rows
        from lecentral.store.retry import RetryPolicy

        return read_rows(url, [e.name for e in entries], RetryPolicy.of(self.config.database))

    def _installer(self, entry: CertEntry, service: Service) -> Installer:
        workdir = self.state_dir / "entries" / entry.id
        if not self.dry_run:
            workdir.parent.mkdir(mode=0o700, exist_ok=True)
            workdir.mkdir(mode=0o700, exist_ok=True)
        return service.installer(entry, workdir, self.keep) or LocalFiles(entry, workdir, self.keep)

    def _one(self, entry: CertEntry, row: CertRow | None) -> Result:
        try:
            service = self.config.service(entry)
            installer = self._installer(entry, service)
            if self.dry_run:
                pending = installer.pending()
                if pending:
                    return Result(entry.name, entry.service, "would-install",
                                  f"would finish an interrupted run (journal state {pending})")
            else:
                state = installer.recover()
                if state == "switched":
                    return self._finish(entry, service, installer, "finishing an interrupted install")
                if state == "restored":
                    return self._after_restore(entry, service, installer)
            remembered, fingerprint = self._remembered(entry, row, installer)
            if remembered is not None:
                return remembered
            return self._compare_and_install(entry, row, service, installer, fingerprint)
        except LecentralError as exc:
            return self._failed(entry, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug (ours or a plugin's) must not stop the others
            return self._failed(entry, _unexpected(entry, exc))

    def _remembered(self, entry: CertEntry, row: CertRow | None,
                    installer: Installer) -> tuple[Result | None, str | None]:
        """An up-to-date answer from :mod:`~lecentral.install.uptodate` when nothing it read has
        changed, else None (the entry is forgotten until the compare finds it up to date) and the
        fingerprint to remember it under; taken before the compare reads anything."""
        if row is None or type(installer) is not LocalFiles:
            return None, None
        if self._uptodate is None:
            self._uptodate = UpToDateCache(self.state_dir)
        fingerprint = self._uptodate.fingerprint(entry, row, installer)
        reason = self._uptodate.lookup(entry.id, fingerprint, self.clock()) if fingerprint else None
        if reason is not None:
            return Result(entry.name, entry.service, "up-to-date", reason), fingerprint
        self._uptodate.forget(entry.id)
        return None, fingerprint

    def _compare_and_install(self, entry: CertEntry, row: CertRow | None, service: Service,
                             installer: Installer, fingerprint: str | None = None) -> Result:
        if row is None:
            raise InstallError(f"no certificate named {entry.name} in the database; add it on the "
                               f"central host (lecentral add) or fix the name in {self.config.path}")
        from lecentral.certificates import Certificate
        from lecentral.install.decide import compare

        now = self.clock()
        decision = compare(entry, row, installer, now)
        if not decision.install:
            if decision.skip_status == "failed":  # wrong now, nothing to repair it with: alert
                raise InstallError(decision.reason)
            if decision.skip_status == "up-to-date" and fingerprint and self._uptodate is not None:
                self._uptodate.remember(entry.id, fingerprint,
                                        Certificate.load(row.crt or b"").not_after, decision.reason)
            return Result(entry.name, entry.service, decision.skip_status, decision.reason)
        new = precheck(entry, row, now, decision.key)
        if decision.key == entry.next_key and not installer.stage_key(entry.next_key):
            raise InstallError(
                f"the certificate in the database is for the new key {entry.next_key}, and the "
                f"{entry.service} service cannot switch keys itself: move {entry.next_key} over "
                f"{entry.key} by hand (mv), then run again; nothing was installed")
        leaf = Certificate.load(new.crt)
        if self.dry_run:
            plan = installer.plan(new) + self._action_plan(entry, service)
            return Result(entry.name, entry.service, "would-install", decision.reason,
                          leaf.fingerprint, leaf.not_after, plan=plan)
        paths = installer.install(new)
        return self._finish(entry, service, installer, decision.reason, paths)

    def _action_plan(self, entry: CertEntry, service: Service) -> list[str]:
        if entry.action != "reload":
            return [f"then: action {entry.action} (no reload, no verification)"]
        lines = [f"then: config test: {entry.check}"] if entry.check else []
        lines.append(f"then: reload: {entry.reload}" if entry.reload else "then: reload (service "
                     f"{entry.service})")
        lines += [f"then: verify {url}" for url in service.verify_urls(entry)]
        return lines

    # -- after the switch ------------------------------------------------------------------------

    def _finish(self, entry: CertEntry, service: Service, installer: Installer, reason: str,
                paths: list[str] | None = None) -> Result:
        """Config test, activate, verify; roll back on any failure.

        Anything raised here, even a plugin's bug, rolls back: the new files are in place, and
        a journal left "switched" would be finished (not undone) by every later run.
        """
        from lecentral.certificates import Certificate

        activated, verified = False, 0
        try:
            leaf = Certificate.load(installer.installed() or b"", f"{entry.cert} just written")
            if entry.action in ("reload", "reboot"):
                service.check_config(entry)
            if entry.action == "reload":
                activated = True
                service.activate(entry)
                verified = self._verify(entry, service, leaf.fingerprint)
        except LecentralError as exc:
            return self._rollback(entry, service, installer, activated, str(exc))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return self._rollback(entry, service, installer, activated, _unexpected(entry, exc))
        try:
            installer.commit()
        except (OSError, LecentralError) as exc:  # the set is done; only the bookkeeping is not
            log.warning("%s: installed, but its journal could not be cleared (%s); the next run "
                        "runs the config test, activation and verification again", entry.label,
                        exc)
        paths = paths if paths is not None else list(entry.files.values())
        unsent = self._installed(entry, leaf, paths, reason)
        if unsent is not None:
            return self.requests.unsent(entry, Result(entry.name, entry.service, "failed", reason,
                                                      leaf.fingerprint, leaf.not_after, paths), unsent)
        return Result(entry.name, entry.service, "installed", f"{reason}; {self._after_text(entry, verified)}",
                      leaf.fingerprint, leaf.not_after, paths)

    @staticmethod
    def _after_text(entry: CertEntry, verified: int) -> str:
        return {
            # the service's URLs, which a plugin may read from the daemon when the entry has none
            "reload": "service activated and verified" if verified else "service activated",
            "mail": "an operator was asked to restart the service",
            "syslog": "logged; the service was not restarted",
            "reboot": "the host will reboot",
        }[entry.action]

    def _verify(self, entry: CertEntry, service: Service, expected: str) -> int:
        """Poll each verify URL until it presents ``expected`` twice in a row; return how many.

        Reloads finish asynchronously: old workers keep accepting for a moment, so one match
        could be followed by the old certificate; the second look makes "verified" mean it.
        """
        from lecentral.verify import presented_fingerprint

        urls = service.verify_urls(entry)
        for url in urls:
            deadline = time.monotonic() + entry.verify_timeout
            matches = 0
            while matches < VERIFY_MATCHES:
                remaining = max(deadline - time.monotonic(), 0.5)
                try:
                    got = presented_fingerprint(self.registry, url, min(remaining, 10.0))
                    matches = matches + 1 if got == expected else 0
                    last = (f"{url} presents certificate sha256 {got[:16]}..., not the expected "
                            f"{expected[:16]}...")
                except VerifyError as exc:
                    matches, last = 0, str(exc)
                if matches < VERIFY_MATCHES and time.monotonic() >= deadline:
                    raise VerifyError(f"verification failed after {entry.verify_timeout:.0f}s: {last}")
                if matches < VERIFY_MATCHES:
                    time.sleep(VERIFY_PAUSE)
        return len(urls)

    def _rollback(self, entry: CertEntry, service: Service, installer: Installer, activated: bool,
                  failure: str) -> Result:
        """Restore the previous files, activate them again, verify they are served, alert."""
        log.error("%s: %s; rolling back", entry.label, failure)
        try:
            installer.restore()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the alert must say ROLLBACK FAILED
            error = str(exc) if isinstance(exc, LecentralError) else _unexpected(entry, exc)
            return self._failed(entry, f"{failure}\n{error}", "rollback-failed")
        from lecentral.certificates import Certificate

        notes = ["the previous files were put back"]
        try:
            old = installer.installed()
            if activated:
                service.activate(entry)
                notes.append("the service was activated again")
                if old is not None and service.verify_urls(entry):
                    self._verify(entry, service, Certificate.load(old).fingerprint)
                    notes.append("it serves the previous certificate again")
        except Exception as exc:  # noqa: BLE001 - whatever it is, the alert must say ROLLBACK FAILED
            error = str(exc) if isinstance(exc, LecentralError) else _unexpected(entry, exc)
            installer.commit()
            return self._failed(entry, f"{failure}\n{'; '.join(notes)}, but: {error}",
                                "rollback-failed")
        installer.commit()
        return self._failed(entry, f"{failure}\nRolled back: {'; '.join(notes)}.", "rolled-back")

    def _after_restore(self, entry: CertEntry, service: Service, installer: Installer) -> Result:
        """A previous run was killed while rolling back: the files are back; activate them."""
        failure = "a previous run was interrupted while rolling back"
        try:
            if entry.action == "reload":
                service.activate(entry)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the alert must say ROLLBACK FAILED
            error = str(exc) if isinstance(exc, LecentralError) else _unexpected(entry, exc)
            installer.commit()
            return self._failed(entry, f"{failure}; the previous files are back but: {error}",
                                "rollback-failed")
        installer.commit()
        return self._failed(entry, f"{failure}; the previous files are back and activated",
                            "rolled-back")

    # -- reporting -------------------------------------------------------------------------------

    def _alert(self, severity: str, subject: str, body: str, name: str | None = None) -> None:
        if self.dry_run:
            return
        errors = self.registry.notify(Notification(severity, subject, body, name), self.settings)
        for error in errors:
            log.warning("could not send the alert %r: %s", subject, error)

    def _installed(self, entry: CertEntry, leaf: Certificate, paths: list[str], reason: str) -> str | None:
        """Alert, event, report; with ``action`` mail or syslog, why the request was not sent."""
        body = (f"{entry.label} on {self.host}: {reason}.\n\nExpires: {when(leaf.not_after)}\n"
                f"SHA-256: {leaf.fingerprint}\nFiles: {', '.join(paths)}\n")
        severity, subject = "info", f"{entry.name}: new certificate installed on {self.host}"
        unsent = None
        if entry.action == "mail":
            severity, subject = "warning", f"{entry.name}: restart {entry.service} on {self.host} by hand"
            body += f"\nThe new files are in place; restart {entry.service} on {self.host} to use them.\n"
        if entry.action in ("mail", "syslog"):  # an operator restarts: the request must arrive
            unsent = self.requests.send(entry, Notification(severity, subject, body, entry.name))
        else:
            if entry.action == "reboot":
                body += "\nThe host reboots at the end of this run.\n"
            self._alert(severity, subject, body, entry.name)
        self.registry.emit("lecentral_cert_installed", name=entry.name, host=self.host, paths=paths,
                           fingerprint=leaf.fingerprint)
        self._report(entry.name, "installed", f"installed on {self.host}, sha256 {leaf.fingerprint}")
        return unsent

    def _failed(self, entry: CertEntry, error: str, status: str = "failed") -> Result:
        rolled_back = status == "rolled-back"
        what = {"failed": "NOT installed", "rolled-back": "install failed, rolled back",
                "rollback-failed": "install failed and ROLLBACK FAILED"}[status]
        log.error("%s: %s: %s", entry.label, what, error)
        body = f"{entry.label} on {self.host}: {what}.\n\n{error}\n"
        if status == "failed":
            body += "\nNo file was changed and nothing was restarted.\n"
        self._alert("error", f"{entry.name}: {what} on {self.host}", body, entry.name)
        if not self.dry_run:
            self.registry.emit("lecentral_install_failed", name=entry.name, host=self.host,
                               error=error, rolled_back=rolled_back)
            self._report(entry.name, "install-failed", f"{what} on {self.host}: {error}")
        return Result(entry.name, entry.service, status, " ".join(error.split()))

    def _broken(self, broken: BrokenEntry) -> Result:
        log.error("%s: %s", broken.label, broken.error)
        self._alert("error", f"{broken.label}: configuration error on {self.host}",
                    f"{broken.error}\n\nThis entry was skipped; no file was changed.\n", broken.name)
        return Result(broken.label, "?", "failed", broken.error)

    def _report(self, name: str, kind: str, message: str) -> None:
        """With ``[agent] report``, log to the central event log under this host's name; a
        refusal is kept for the run's ``(report)`` result (the install itself stands)."""
        if not self.config.agent.report or self._store is None:
            return
        try:
            self._store.record_event(name, kind, message, self.clock(), host=self.host)
        except StoreError as exc:
            log.warning("could not report to the central event log (agent.report): %s", exc)
            self.unlogged.append(str(exc))

    def _reboot_if_asked(self, entries: list[CertEntry], results: list[Result]) -> None:
        from lecentral.install.service import run_command

        wanted = {e.id for e in entries if e.action == "reboot"}
        if self.dry_run or not any(r.status == "installed" and f"{r.service}-{r.name}" in wanted
                                   for r in results):
            return
        try:
            run_command(self.config.agent.reboot_command, what="reboot", timeout=120)
        except InstallError as exc:
            self._alert("error", f"reboot of {self.host} failed", f"{exc}\n\nReboot by hand to "
                        "use the new certificates.\n")
            # the files are in place but not in use: not "installed" (and not exit 0)
            for r in results:
                if r.status == "installed" and f"{r.service}-{r.name}" in wanted:
                    r.status = "failed"
                    r.message = " ".join(
                        f"{r.message.replace('the host will reboot', 'the files are in place')}, "
                        f"but {exc}; reboot by hand to use the new certificate".split())


def precheck(entry: CertEntry, row: CertRow, now: int, key: str = "") -> IssuedCertificate:
    """:func:`lecentral.install.decide.precheck`, imported on first use (with cryptography's
    X.509 parsing, which a run answered from the up-to-date cache never needs)."""
    from lecentral.install.decide import precheck as check

    return check(entry, row, now, key)


def _unexpected(entry: CertEntry, exc: Exception) -> str:
    """The message for an exception that is not a LecentralError (a plugin's bug, or ours)."""
    if isinstance(exc, OSError):  # the state directory, a plugin's own I/O...
        return f"{exc.filename or 'I/O'}: {exc.strerror or exc}"
    log.error("%s: unexpected error", entry.label, exc_info=exc)
    return (f"unexpected error {type(exc).__name__}: {exc} (service {entry.service}); please "
            "report it with the log above")
