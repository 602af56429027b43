"""What an earlier renew run left for this one: spooled certificates and challenge leftovers.

At the start of every run, under the renew lock and before any certificate is selected:

1. every certificate in the spool (issued, but not saved: the database write failed, or the run
   ended before it) is checked against its row and saved, without a new order; one whose CSR
   was replaced since, or whose row is gone, or that no longer passes the checks, is discarded
   loudly (moved to spool/discarded/);
2. every challenge record left behind (``lecentral_leftovers``) is removed, or counted as still
   there, with a ``leftover`` event and an alert;
3. every challenge record noted in the journal of a renew process that is gone
   (:mod:`lecentral.journal`: killed between adding and removing it) and not already a stored
   leftover is removed, or stored as a leftover (shown, alerted, retried); the journal is then
   deleted. A journal that is not lecentral's or does not parse is refused loudly: nothing it
   names is removed, the run fails saying so, and it stays for the admin to look at.

During the run, :func:`keep_leftovers` stores what a certificate's issuance left behind.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from lecentral import journal
from lecentral.certificates import now_ts, when
from lecentral.errors import LecentralError
from lecentral.host import this_host
from lecentral.leftovers import DNS_TXT, HTTP01_FILE, Leftover
from lecentral.records import Notification
from lecentral.renew.checks import check_issued, check_row
from lecentral.renew.cleanup import clean
from lecentral.renew.outcome import Outcome
from lecentral.renew.spool import csr_fingerprint

if TYPE_CHECKING:
    from lecentral.renew.context import RunContext
    from lecentral.renew.outcome import RenewReport
    from lecentral.renew.spool import Spooled

log = logging.getLogger(__name__)


def start_of_run(job: RunContext, report: RenewReport) -> None:
    """Save the spooled certificates, then retry removing every leftover (see the module doc)."""
    report.start.extend(save_all_spooled(job))
    report.cleaned, report.kept = clean_leftovers(job)
    cleaned, kept, refused = clean_journals(job, [*report.cleaned, *report.kept])
    report.cleaned.extend(cleaned)
    report.kept.extend(kept)
    report.start.extend(refused)


# --- the spool ----------------------------------------------------------------------------------


def save_all_spooled(job: RunContext) -> list[Outcome]:
    """One outcome per spool file that needed something done."""
    outcomes: list[Outcome] = []
    try:
        paths = job.spool.paths()
    except LecentralError as exc:
        log.error("%s", exc)
        return [Outcome("(spool)", "failed", str(exc), round=0)]
    for path in paths:
        try:
            spooled = job.spool.read(path)
        except LecentralError as exc:
            log.error("%s", exc)
            outcomes.append(Outcome(path.stem, "failed", str(exc), round=0))
            continue
        outcome = save_spooled(job, spooled, 0)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def save_spooled(job: RunContext, spooled: Spooled, number: int) -> Outcome | None:
    """Save ``spooled`` into its row; None when there was nothing to save (already saved or
    superseded). A failed save leaves it in the spool; a certificate that must not be saved is
    discarded with an ``error`` alert (status ``refused``)."""
    started = time.monotonic()
    name, now = spooled.name, now_ts()
    try:
        row = job.store.get(name)
    except LecentralError as exc:
        return _still_spooled(job, spooled, str(exc), number)
    if row is None:
        return _discard(job, spooled, "its row is no longer in the database", number)
    if row.crt == spooled.crt:
        job.spool.remove(spooled)  # saved by the run that spooled it (its removal failed)
        return None
    try:
        csr = check_row(row)
        if csr_fingerprint(csr.der) != spooled.csr_sha256:
            return _discard(job, spooled, "it was issued for a CSR that was replaced since "
                            "(lecentral set-csr): it does not match the key of the new CSR", number)
        if row.crt and row.ts_expire and row.ts_expire >= spooled.ts_expire:
            log.warning("%s: the database already holds a certificate valid as long as the spooled "
                        "one (saved by another run); %s removed", name, spooled.path)
            job.spool.remove(spooled)
            return None
        cert = check_issued(row, csr, spooled.crt, spooled.ca, now)
    except LecentralError as exc:
        return _discard(job, spooled, f"it no longer passes the checks: {exc}", number)
    try:
        with job.write_lock:
            job.store.save_issued(name, spooled.crt, spooled.ca, cert.not_after, now,
                                  issuer_ca=spooled.issuer_ca)
    except LecentralError as exc:
        return _still_spooled(job, spooled, str(exc), number)
    job.spool.remove(spooled)
    job.registry.emit("lecentral_cert_issued", name=name, crt=spooled.crt, ca=spooled.ca,
                      ts_expire=cert.not_after,
                      issuer_ca=spooled.issuer_ca[0] if spooled.issuer_ca else None)
    message = (f"saved from the spool: issued by {spooled.issuer} at "
               f"{when(spooled.issued_at)} in a run {_why_unsaved(spooled)}; no new order; "
               f"valid until {when(cert.not_after)}")
    log.warning("%s: %s", name, message)
    return Outcome(name, "issued", message, spooled.issuer, time.monotonic() - started,
                   cert.not_after, 0, number,
                   issuer_ca=spooled.issuer_ca[0] if spooled.issuer_ca else None)


def _why_unsaved(spooled: Spooled) -> str:
    """What became of the run that spooled it: its save failed (noted in the file), or nothing
    was noted: it ended before any save (killed with SIGKILL, crashed, the machine stopped), or
    its save failed and the note could not be written either (the spool's file system full:
    that run logged it). From here the two cannot be told apart: the message says both."""
    if spooled.unsaved is not None:
        return f"whose database write failed ({spooled.unsaved})"
    return ("that noted no database error: it ended before the database write (killed, "
            "crashed, the machine stopped), or could not note the error in the spool (see its "
            "log)")


def note_unsaved(job: RunContext, spooled: Spooled, error: str) -> None:
    """Note in ``spooled``'s file why its save failed (:meth:`CertSpool.note_unsaved`); a note
    that cannot be written is logged (the certificate stays spooled)."""
    try:
        job.spool.note_unsaved(spooled, job.redact(error))
    except LecentralError as exc:
        log.error("%s: the failed save could not be noted in the spool: %s", spooled.name, exc)


def _still_spooled(job: RunContext, spooled: Spooled, error: str, number: int) -> Outcome:
    note_unsaved(job, spooled, error)
    message = job.redact(f"issued earlier but still not saved: {error}; it stays in "
                         f"{spooled.path} and the next run saves it (no new order)")
    log.error("%s: %s", spooled.name, message)
    return Outcome(spooled.name, "failed", message, spooled.issuer, round=number)


def _discard(job: RunContext, spooled: Spooled, why: str, number: int) -> Outcome:
    try:
        where = f"moved to {job.spool.discard(spooled)}"
    except LecentralError as exc:
        where = str(exc)
    message = job.redact(f"spooled certificate (issued at {when(spooled.issued_at)}) discarded, not "
                         f"saved: {why}; {where}")
    log.error("%s: %s", spooled.name, message)
    try:
        job.store.record_event(spooled.name, "discarded", message, now_ts())
    except LecentralError as exc:
        log.error("%s: the discard could not be logged: %s", spooled.name, exc)
    alert(job, Notification("error", f"{spooled.name}: spooled certificate discarded", message
                            + "\n", spooled.name))
    return Outcome(spooled.name, "refused", message, spooled.issuer, round=number)


# --- challenge records left behind ----------------------------------------------------------------


def keep_leftovers(job: RunContext, found: list[Leftover]) -> list[Leftover]:
    """Store what one certificate's issuance left behind and alert; return them (with ids)."""
    kept = []
    for leftover in found:
        leftover = dataclasses.replace(leftover, error=job.redact(leftover.error))
        try:
            with job.write_lock:
                leftover = job.store.add_leftover(leftover, now_ts())
        except LecentralError as exc:
            # the challenge journal that noted it is kept: the next run reads it again
            log.error("%s: %s could not be recorded (%s): the next run tries again from the "
                      "challenge journal that noted it; or remove it by hand: %s",
                      leftover.name, leftover.describe(), exc, leftover.manual_fix())
        kept.append(leftover)
        alert(job, Notification(
            "warning", f"{leftover.name}: challenge record left behind",
            f"{leftover.describe()} could not be removed after the challenge:\n{leftover.error}\n\n"
            "lecentral renew retries removing it at the start of every run until it is gone.\n"
            f"By hand: {leftover.manual_fix()}\n", leftover.name))
    return kept


def clean_leftovers(job: RunContext) -> tuple[list[Leftover], list[Leftover]]:
    """Try to remove every stored leftover: (removed now, still there)."""
    try:
        pending = job.store.leftovers()
    except LecentralError as exc:
        log.error("the challenge records left behind by earlier runs cannot be read: %s", exc)
        return [], []
    cleaned: list[Leftover] = []
    kept: list[Leftover] = []
    for leftover in pending:
        try:
            absent = clean(leftover, job.config, job.redact.add)
        except LecentralError as exc:
            kept.append(_still_there(job, leftover, job.redact(str(exc))))
            continue
        if absent is not None:  # gone already (by hand?): not claimed as removed
            log.warning("%s: %s was not there any more%s", leftover.name, leftover.describe(),
                        _others(absent))
        else:
            log.info("%s: removed %s (left behind by an earlier run)", leftover.name,
                     leftover.describe())
        try:
            with job.write_lock:
                job.store.leftover_removed(leftover, now_ts())
        except LecentralError as exc:
            log.error("%s: removed %s, but the database still lists it (%s); the next run finds "
                      "it gone", leftover.name, leftover.describe(), exc)
        if absent is None:
            cleaned.append(leftover)
    return cleaned, kept


def _others(values: list[str]) -> str:
    return (f"; the server serves other TXT values there: {', '.join(map(repr, values))} "
            "(check them; remove any stale one by hand)" if values else "")


def _still_there(job: RunContext, leftover: Leftover, error: str) -> Leftover:
    log.error("%s: %s is still left behind: %s", leftover.name, leftover.describe(), error)
    if leftover.kind == HTTP01_FILE and leftover.host != this_host():
        return leftover  # only its own host can remove it: nothing was tried here
    try:
        with job.write_lock:
            leftover = job.store.leftover_still_there(leftover, error, now_ts())
    except LecentralError as exc:
        log.error("%s: the failed removal could not be recorded: %s", leftover.name, exc)
    alert(job, Notification(
        "error", f"{leftover.name}: challenge record still left behind",
        f"{leftover.describe()} is still there after {leftover.attempts} removals:\n{error}\n\n"
        "lecentral renew retries at the start of every run.\n"
        f"By hand: {leftover.manual_fix()}\n", leftover.name))
    return leftover


def alert(job: RunContext, notification: Notification) -> None:
    """Send through [notify]; a notifier that fails is an error in the log, never the run's end."""
    from dataclasses import asdict

    for err in job.registry.notify(notification, asdict(job.config.notify)):
        log.error("alert %r not sent: %s", notification.subject, job.redact(err))


# --- the journals of renew processes that are gone ----------------------------------------------


def clean_journals(job: RunContext, stored: list[Leftover]
                   ) -> tuple[list[Leftover], list[Leftover], list[Outcome]]:
    """Remove what the journals of gone processes still note (see the module doc): (removed
    now, stored as leftovers, one failed outcome per journal refused)."""
    covered = journal.covered_by(stored)
    cleaned: list[Leftover] = []
    kept: list[Leftover] = []
    refused: list[Outcome] = []
    try:
        paths = journal.journal_paths(job.config.renew.state_dir)
    except LecentralError as exc:
        return [], [], [_refused(job, str(exc))]
    for path in paths:
        if journal.is_live(path):
            log.info("%s belongs to a renew process that still runs: left to it", path)
            continue
        try:
            left = journal.read_left(path)
        except LecentralError as exc:
            refused.append(_refused(job, str(exc)))
            continue
        dealt = True
        for record in left.records:
            why = (f"noted in {path} by renew process {left.pid}, which ended (killed?) before "
                   "removing it")
            kind = record["kind"]
            leftover = Leftover(kind, record["cert"],
                                record["fqdn"] if kind == DNS_TXT else record["path"],
                                {k: record[k] for k in journal.ADD_FIELDS[kind]}, why,
                                ts=left.written)
            if journal.leftover_key(leftover) in covered:
                continue  # its removal failed in that run, which stored it: retried above
            try:
                absent = clean(leftover, job.config, job.redact.add)
            except LecentralError as exc:
                leftover = dataclasses.replace(
                    leftover, error=job.redact(f"{why}; removing it now failed: {exc}"))
                stored_now = keep_leftovers(job, [leftover])[0]
                dealt = dealt and stored_now.id is not None
                kept.append(stored_now)
                continue
            if absent is None:
                log.warning("%s: removed %s, %s", leftover.name, leftover.describe(), why)
                cleaned.append(leftover)
            elif absent:  # the journal does not match what the zone holds: edited? loud, kept
                dealt = False
                refused.append(_refused(job, (
                    f"{path} (renew process {left.pid}) notes {leftover.describe()}, which the "
                    f"server does not serve{_others(absent)}: the journal does not match what "
                    "was published (edited?); nothing was removed, the journal is kept: "
                    "check the zone, then delete the journal")))
            else:
                log.info("%s: %s, %s, was not there any more (removed by hand?)", leftover.name,
                         leftover.describe(), why)
        if dealt:
            try:
                journal.remove_left(path)
            except LecentralError as exc:
                log.error("%s", exc)
    return cleaned, kept, refused


def _refused(job: RunContext, message: str) -> Outcome:
    log.error("%s", message)
    alert(job, Notification("error", "renew: a challenge journal is not trusted",
                            f"{message}\n"))
    return Outcome("(journal)", "failed", message, round=0)
