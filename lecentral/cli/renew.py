"""``lecentral renew``: issue or renew every certificate that is due (the seed's download_cert.pl)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import click

from lecentral.certificates import now_ts
from lecentral.cli.central import App
from lecentral.cli.common import EXIT_FAILURES, guarded, known_name, print_json, table

pass_app = click.make_pass_decorator(App)

_STATUS_ORDER = {"failed": 0, "refused": 1, "invalid": 2, "blocked": 3, "issued": 4,
                 "would-issue": 5, "skipped": 6, "not-due": 7}


class TerminalProgress:
    """One line per step of each certificate on stderr, with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, name: str, step: str) -> None:
        with self.lock:
            click.echo(f"{time.monotonic() - self.started:7.2f}s  {name}: {step}", err=True)


def _as_dict(outcome: Any) -> dict[str, Any]:
    return {"name": outcome.name, "status": outcome.status, "message": outcome.message,
            "issuer": outcome.issuer, "seconds": round(outcome.seconds, 3),
            "ts_expire": outcome.ts_expire, "count_fail_update": outcome.count_fail_update,
            "round": outcome.round, "issuer_ca": outcome.issuer_ca,
            "phases": {name: round(seconds, 4) for name, seconds in outcome.phases.items()},
            "phases_cpu": {name: round(seconds, 4) for name, seconds in outcome.phases_cpu.items()},
            "cpu_seconds": round(outcome.cpu_seconds, 4)}


def _leftover_dict(leftover: Any) -> dict[str, Any]:
    return {"name": leftover.name, "kind": leftover.kind, "target": leftover.target,
            "where": leftover.describe(), "host": leftover.host, "since": leftover.ts,
            "attempts": leftover.attempts, "error": leftover.error,
            "by_hand": leftover.manual_fix()}


def _counts(final: list[Any], unchanged: int = 0) -> dict[str, int]:
    """Outcomes per status; the rows a sweep left unread (unchanged, not due) are not-due."""
    counts: dict[str, int] = {"not-due": unchanged} if unchanged else {}
    for outcome in final:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts


def _counted(report: Any) -> list[Any]:
    """One outcome per certificate for the count line and lecentral_runs: the final one, but a
    certificate saved from the spool at the start (then not due any more) counts as what the
    start did with it (issued), not as not-due as well (it was counted twice)."""
    start = {o.name: o for o in report.start}
    counted = [start.pop(o.name) if o.status == "not-due" and o.name in start else o
               for o in report.final]
    return counted + list(start.values())  # saved, but no longer enabled or selected


def _summary_line(final: list[Any], disabled: list[str], unchanged: int = 0) -> str:
    """``2 issued, 5 not-due``; disabled rows (never renewed) said with the command enabling one."""
    counts = _counts(final, unchanged)
    order = sorted(counts, key=lambda s: _STATUS_ORDER.get(s, 9))
    text = ", ".join(f"{counts[s]} {s}" for s in order)
    if disabled:
        example = disabled[0] if len(disabled) == 1 else "NAME"
        hint = f"{len(disabled)} disabled, not renewed: lecentral enable {example}"
        return f"{text}; {hint}" if text else f"0 enabled ({hint})"
    return text or "no certificates: lecentral add NAME"


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--rounds", is_flag=True,
              help="Retry failures every renew.retry_pause seconds until renew.max_failures "
                   "(for the timer; the lock is free between rounds).")
@click.option("--once", is_flag=True,
              help="One pass, no retry rounds (the default; kept for old cron lines).")
@click.option("--force", is_flag=True,
              help="Issue even if not due (ignores the renewal time, ARI and renew.min_interval).")
@click.option("--dry-run", is_flag=True,
              help="Show what is due and which issuer would get it; change nothing, contact no CA.")
@click.option("--wait", "lock_wait", default=0.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="How long to wait for another running renew to finish.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@pass_app
@guarded
def renew(app: App, names: tuple[str, ...], rounds: bool, once: bool, force: bool,
          dry_run: bool, lock_wait: float, as_json: bool) -> None:
    """Issue or renew the certificates that are due, or only NAME....

    \b
    A certificate is due when it has none yet, when a third of its lifetime is left (half for
    lifetimes under 10 days; renew.before or renew.before_days change it), or when its CA's
    renewal window (ARI) has opened, and its last attempt is older than renew.min_interval.
    `lecentral list` shows when each one renews.
    Each is ordered from its stored CSR (DNS-01 into its sub-zone, or HTTP-01 for certbot rows),
    checked against md5_modulus and its CSR's names, and saved in one transaction.

    \b
    Failures raise count_fail_update and alert through [notify]. One pass is made; with --rounds
    (the timer) the failed ones are retried every renew.retry_pause seconds until
    renew.max_failures. Only one renew pass runs at a time per database, across all central
    hosts sharing it.

    \b
    Certificates are issued renew.workers at a time (default 8: what the CA sees at once),
    threads of one process. With renew.processes above 1 (the default, "auto", is 2 where this
    process may use 2 cores or more, by its CPU affinity and its cgroups' CPU quota, and one was
    idle during the start; -vv logs the choice), a pass of more than renew.workers
    certificates is shared with that many processes forked after start-up (the workers shared
    out among them); the first process saves and records everything. docs/renew.md,
    "Concurrency and the lock".

    \b
    With `lecentral -q renew` (cron, which mails any output) nothing is printed on stdout unless
    a certificate failed, was blocked or was issued, a challenge record was left behind or
    removed, or rows exist but none is enabled.

    \b
    Exit status: 0 if nothing failed, 1 if any certificate failed or a challenge record (TXT,
    webroot file) was left behind or a NAME is not in the database or is disabled, 8 if another renew holds
    the renew lock (its host, pid and start are printed; nothing done), 2-6 for configuration,
    plugin, database or CSR errors. A problem of the configuration met while issuing (an
    account key or TSIG key file that cannot be made or read, an issuer that cannot be built)
    is said once, alerted once, and exits 2 (3 for a plugin); the certificates it stopped are
    BLOCKED, their failure counts unchanged. SIGTERM (systemctl stop) or Ctrl-C starts no more
    certificates, finishes those in flight, prints the summary and exits 143 (130 for Ctrl-C);
    the ones not started are BLOCKED, their failure counts unchanged.
    """
    from lecentral.errors import LecentralError, RenewLockedError
    from lecentral.renew import RenewJob, RenewRequest
    from lecentral.renew.stopping import stop_on_signals

    if rounds and once:
        raise click.UsageError("--rounds and --once contradict each other; give one")
    names = tuple(known_name(n) for n in names)
    progress = (TerminalProgress() if sys.stderr is not None and sys.stderr.isatty() and not as_json
                else None)
    started = now_ts()
    # SIGTERM, Ctrl-C: what is in flight finished, then said, recorded (not cut short by it)
    with contextlib.ExitStack() as stopping:
        job = None
        try:
            job = RenewJob(app.config, app.store(), app.registry, progress)
            stopping.enter_context(stop_on_signals(job.stop))
            report = job.run(RenewRequest(names=names, force=force, dry_run=dry_run,
                                          once=not rounds, lock_timeout=lock_wait))
        except LecentralError as exc:  # not started, or stopped on its own error: JSON still
            if as_json:
                print_json(_stopped_dict(exc, dry_run, job.report if job is not None else None))
            raise  # said on stderr, with its exit code, by @guarded
        final = report.final
        recorded = True
        if not (dry_run or names or (report.locked_out and report.locked_out_round == 1)):
            recorded = _record_run(app, report, started)
        if as_json:
            print_json(_report_dict(report, dry_run))
        elif not (report.locked_out and report.locked_out_round == 1) and \
                not (app.quiet and _uneventful(report)):
            _print_table(report.start + final, report.disabled, dry_run, named=bool(names),
                         unchanged=report.unchanged, counted=_counted(report))
            _print_leftovers(report)
        if report.locked_out:
            message = _locked_message(report, app.store().location)
            if report.locked_out_round == 1:
                if as_json:
                    click.echo(f"lecentral: error: {message}", err=True)
                    raise click.exceptions.Exit(RenewLockedError.exit_code)
                raise RenewLockedError(message)
            click.echo(f"lecentral: error: {message}", err=True)
        for outcome in report.final:
            if outcome.status == "skipped":  # asked for by name
                click.echo(f"lecentral: error: {outcome.name}: {outcome.message}", err=True)
        for problem in report.problems:
            click.echo(f"lecentral: error: {problem.message} ({len(problem.names)} "
                       "certificate(s) not tried, their failure counts unchanged: "
                       f"{_some(problem.names)})", err=True)
        if report.stopped:
            stopped = sorted(o.name for o in report.final
                             if o.status == "blocked" and o.message.endswith(report.stopped))
            click.echo(f"lecentral: error: {report.stopped}: " + (
                f"{len(stopped)} certificate(s) not tried, their failure counts unchanged (the "
                f"next run tries them): {_some(stopped)}" if stopped else
                "no retry round is made"), err=True)
        code = _exit_code(report)
        if code or not recorded:
            raise click.exceptions.Exit(code or EXIT_FAILURES)


def _exit_code(report: Any) -> int:
    """0 if the run is ok; the first run-level problem's code (2 configuration, 3 plugin: the
    operator's to fix first); else 1."""
    if report.problems:
        return int(report.problems[0].exit_code)
    if report.stopped:  # 143 for SIGTERM, 130 for SIGINT, as a shell says it
        return int(report.stopped_exit)
    return 0 if report.ok else EXIT_FAILURES


def _some(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _uneventful(report: Any) -> bool:
    """Nothing failed, nothing was issued or saved, no challenge record left or removed: what
    ``lecentral -q renew`` (cron, which mails any output) keeps quiet about."""
    changed = {"failed", "refused", "invalid", "blocked", "skipped", "issued"}
    return not (any(o.status in changed for o in [*report.start, *report.final])
                or report.leftovers or report.cleaned or report.problems
                # rows, all disabled: the timer renews nothing at all, worth a mail
                or (report.disabled and not report.final))


def _record_run(app: App, report: Any, started: int) -> bool:
    """A complete (no NAME) renew run goes to lecentral_runs, which shows the timer is alive;
    then the fleet's state changes go to the notifiers. False (said on stderr) if not recorded."""
    from lecentral import __version__
    from lecentral.errors import LecentralError
    from lecentral.fleet.store import FleetStore, Run
    from lecentral.fleet.watch import load_for_changes, notify_changes
    from lecentral.host import this_host

    run = Run(kind="renew", host=this_host(), ts_start=started, ts_end=now_ts(),
              exit_code=_exit_code(report), counts=_counts(_counted(report), report.unchanged),
              message="; ".join([_summary_line(_counted(report), report.disabled,
                                               report.unchanged),
                                 *(p.message for p in report.problems),
                                 *([report.stopped] if report.stopped else [])]))
    try:
        FleetStore(app.store()).record_run(run, __version__, keep=app.config.fleet.keep_runs)
        fleet, view = load_for_changes(app.store(), app.config, now_ts())  # the timer is alive now
        notify_changes(fleet, view, app.registry, app.config)
    except LecentralError as exc:
        click.echo(f"lecentral: error: this renew run could not be recorded in lecentral_runs "
                   f"({exc}); lecentral fleet and lecentral check will call the renew timer dead",
                   err=True)
        return False
    return True


def _report_dict(report: Any, dry_run: bool) -> dict[str, Any]:
    holder = report.lock_holder
    return {"dry_run": dry_run, "locked_out": report.locked_out, "rounds": report.rounds,
            "lock_holder": None if holder is None else
            {"host": holder.host, "pid": holder.pid, "since": holder.since},
            "ok": report.ok,
            "phases": {name: round(seconds, 4) for name, seconds in report.phases.items()},
            "certificates": [_as_dict(o) for o in report.final],
            # enabled rows not read: unchanged since checked, not in their renewal window
            "unchanged_not_due": report.unchanged,
            "attempts": [_as_dict(o) for o in report.outcomes
                         if o.status not in ("not-due", "skipped")],
            "spooled": [_as_dict(o) for o in report.start],
            "leftovers": [_leftover_dict(left) for left in report.leftovers],
            "cleaned": [_leftover_dict(left) for left in report.cleaned],
            "problems": [{"message": p.message, "exit_code": p.exit_code, "names": p.names}
                         for p in report.problems],
            # SIGTERM, SIGINT: "the run was stopped by SIGTERM" (its BLOCKED ones not tried)
            "stopped": report.stopped or None,
            "disabled": report.disabled}


def _stopped_dict(exc: Exception, dry_run: bool, report: Any) -> dict[str, Any]:
    """``--json`` of a run stopped by an error of its own (database unreachable, configuration):
    what ``report`` (None: the run did not start) says was done before, ``ok`` false, and the
    error last in ``problems`` (its message as said on stderr: the database password masked)."""
    code = int(getattr(exc, "exit_code", EXIT_FAILURES))
    if report is None:
        from lecentral.renew import RenewReport

        report = RenewReport()
    data = _report_dict(report, dry_run)
    data["ok"] = False
    data["problems"].append({"message": str(exc), "exit_code": code, "names": []})
    return data


def _locked_message(report: Any, database: str) -> str:
    holder = report.lock_holder or "its holder is not recorded"
    if report.locked_out_round == 1:
        return (f"another lecentral renew holds the renew lock of {database} ({holder}); "
                "nothing done. Wait for it (--wait SECONDS), or check that process")
    retried = sorted(o.name for o in report.failed)
    return (f"round {report.locked_out_round} not run: another lecentral renew holds the renew "
            f"lock of {database} ({holder}); not retried: {', '.join(retried) or 'none'}")


def _print_table(final: list[Any], disabled: list[str], dry_run: bool, named: bool = False,
                 unchanged: int = 0, counted: list[Any] | None = None) -> None:
    # NAMEs the operator typed are all shown, not-due ones with why nothing was done
    shown = final if named else [o for o in final if o.status != "not-due"]
    shown.sort(key=lambda o: (_STATUS_ORDER.get(o.status, 9), o.name))
    if shown:
        rows = [[o.name, o.status.upper(), o.issuer or "-",
                 f"{o.seconds:.2f}s" if o.seconds else "-",
                 str(o.count_fail_update if o.count_fail_update is not None else "-"),
                 # the problem itself is said once, after the table
                 "not tried: the run's error on stderr" if o.status == "blocked" else o.message]
                for o in shown]
        click.echo(table(rows, ["NAME", "RESULT", "ISSUER", "TIME", "FAILS", "DETAIL"]))
    prefix = "dry run: " if dry_run else ""
    click.echo(f"{prefix}{_summary_line(final if counted is None else counted, disabled, unchanged)}")
    if named and any(o.status == "not-due" for o in final):
        click.echo("not due: nothing ordered for those; --force orders them anyway")


def _print_leftovers(report: Any) -> None:
    """Challenge records still published (retried at the start of every run), and those removed."""
    for leftover in report.cleaned:
        click.echo(f"removed, left behind by an earlier run: {leftover.describe()}")
    if report.leftovers:
        rows = [[left.name, "LEFTOVER", left.describe(), str(left.attempts), left.error]
                for left in report.leftovers]
        click.echo(table(rows, ["NAME", "RESULT", "LEFT BEHIND", "TRIES", "ERROR"]))
        click.echo(f"{len(report.leftovers)} challenge record(s) left behind: the next lecentral "
                   "renew removes them first; see lecentral show NAME")
