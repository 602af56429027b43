"""``lecentral renew``: issue or renew every certificate that is due (the seed's download_cert.pl)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click

from lecentral.cli.central import App
from lecentral.cli.common import EXIT_FAILURES, guarded, print_json, table

pass_app = click.make_pass_decorator(App)

_STATUS_ORDER = {"failed": 0, "refused": 1, "invalid": 2, "issued": 3, "would-issue": 4,
                 "skipped": 5, "not-due": 6}


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
            "round": outcome.round}


def _leftover_dict(leftover: Any) -> dict[str, Any]:
    return {"name": leftover.name, "kind": leftover.kind, "target": leftover.target,
            "where": leftover.describe(), "host": leftover.host, "since": leftover.ts,
            "attempts": leftover.attempts, "error": leftover.error,
            "by_hand": leftover.manual_fix()}


def _summary_line(final: list[Any]) -> str:
    counts: dict[str, int] = {}
    for outcome in final:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    order = sorted(counts, key=lambda s: _STATUS_ORDER.get(s, 9))
    return ", ".join(f"{counts[s]} {s}" for s in order) or "no certificates"


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--once", is_flag=True,
              help="One pass only: do not wait renew.retry_pause to retry failures (for cron).")
@click.option("--force", is_flag=True,
              help="Issue even if not due (ignores renew.before_days, ARI and renew.min_interval).")
@click.option("--dry-run", is_flag=True,
              help="Show what is due and which issuer would get it; change nothing, contact no CA.")
@click.option("--wait", "lock_wait", default=0.0, show_default=True, metavar="SECONDS",
              help="How long to wait for another running renew to finish.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@pass_app
@guarded
def renew(app: App, names: tuple[str, ...], once: bool, force: bool, dry_run: bool,
          lock_wait: float, as_json: bool) -> None:
    """Issue or renew the certificates that are due, or only NAME....

    \b
    A certificate is due when it has none yet, expires within renew.before_days, or its CA's
    renewal window (ARI) has opened, and its last attempt is older than renew.min_interval.
    Each is ordered from its stored CSR (DNS-01 into its sub-zone, or HTTP-01 for certbot rows),
    checked against md5_modulus and its CSR's names, and saved in one transaction.

    \b
    Failures raise count_fail_update and alert through [notify]; without --once the failed ones
    are retried every renew.retry_pause seconds until renew.max_failures. Only one renew runs at
    a time, across all central hosts sharing the database.

    \b
    Exit status: 0 if nothing failed (also when another renew holds the lock), 1 if any
    certificate failed or a challenge record (TXT, webroot file) was left behind, >1 for
    configuration, plugin or database errors.
    """
    from lecentral.renew import RenewJob, RenewRequest

    progress = TerminalProgress() if sys.stderr.isatty() and not as_json else None
    job = RenewJob(app.config, app.store(), app.registry, progress)
    report = job.run(RenewRequest(names=names, force=force, dry_run=dry_run, once=once,
                                  lock_timeout=lock_wait))
    final = report.final
    if as_json:
        print_json({"dry_run": dry_run, "locked_out": report.locked_out, "rounds": report.rounds,
                    "ok": report.ok, "certificates": [_as_dict(o) for o in final],
                    "attempts": [_as_dict(o) for o in report.outcomes
                                 if o.status not in ("not-due", "skipped")],
                    "spooled": [_as_dict(o) for o in report.start],
                    "leftovers": [_leftover_dict(left) for left in report.leftovers],
                    "cleaned": [_leftover_dict(left) for left in report.cleaned]})
    elif report.locked_out:
        click.echo("another lecentral renew is running (renew lock held); nothing done", err=True)
    else:
        _print_table(report.start + final, dry_run)
        _print_leftovers(report)
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILURES)


def _print_table(final: list[Any], dry_run: bool) -> None:
    shown = [o for o in final if o.status != "not-due"]
    shown.sort(key=lambda o: (_STATUS_ORDER.get(o.status, 9), o.name))
    if shown:
        rows = [[o.name, o.status.upper(), o.issuer or "-",
                 f"{o.seconds:.2f}s" if o.seconds else "-",
                 str(o.count_fail_update if o.count_fail_update is not None else "-"),
                 o.message] for o in shown]
        click.echo(table(rows, ["NAME", "RESULT", "ISSUER", "TIME", "FAILS", "DETAIL"]))
    prefix = "dry run: " if dry_run else ""
    click.echo(f"{prefix}{_summary_line(final)}")


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
