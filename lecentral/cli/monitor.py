"""``lecentral check`` (a Nagios/Icinga/NRPE plugin) and ``lecentral metrics`` (Prometheus).

Both only read the database: the fleet view (:func:`lecentral.fleet.watch.load_view`), a small
query on ``certs`` and the leftovers. docs/monitoring.md describes their output.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import click

from lecentral.cli.central import App
from lecentral.cli.common import PluginCommand, emit, guarded, url_secrets
from lecentral.fleet import MAX_LINES
from lecentral.fleet.nagios import Thresholds, describe_error, unknown

pass_app = click.make_pass_decorator(App)


@click.command(cls=PluginCommand)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("-w", "--warning", "warning_days", type=float, metavar="DAYS",
              help="WARNING when a certificate has fewer days left [default: 1/4 of its lifetime].")
@click.option("-c", "--critical", "critical_days", type=float, metavar="DAYS",
              help="CRITICAL when a certificate has fewer days left [default: 1/10 of its "
                   "lifetime].")
@click.option("--max-lines", default=MAX_LINES, show_default=True, type=click.IntRange(min=0),
              help="Problem lines after the first line (0: all).")
@click.option("--json", "json_out", is_flag=True, help="The same result as JSON on stdout.")
@pass_app
def check(app: App, names: tuple[str, ...], warning_days: float | None,
          critical_days: float | None, max_lines: int, json_out: bool) -> None:
    """Monitoring plugin (Nagios, Icinga, NRPE): the whole fleet, or only the NAMEs given.

    \b
    Prints `LECENTRAL <STATE> - <summary> | <perfdata>`, then one line per problem, worst first.
    Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (database unreachable, bad
    configuration, an unknown NAME, a usage error, stdout not writable; a reader that stops
    early, as head does, leaves the state as it is).

    \b
    CRITICAL: a certificate expired or below --critical; count_fail_update above
              [renew] max_failures; a host or probe serving a mismatching certificate;
              no renew run within [fleet] renew_max_age (dead timer); a challenge
              journal the renew job does not trust.
    WARNING:  below --warning; count_fail_update >= 2; a row the renew job or the agents
              refuse; an enabled name still without a certificate; stale, silent or
              unreachable targets; no renew run ever recorded; challenge records left behind,
              or noted in the journal of a renew process killed mid-pass; journals this
              user cannot read (run check as the renew job's user, or root); renewal
              information (ARI) requests failing for more than a day.

    Thresholds default to a fraction of each certificate's own lifetime, so one command suits
    90-, 45- and 6-day certificates. The renew timer is checked only without NAME. Perfdata:
    counts, and days left per certificate when NAMEs are given or there are at most 20.
    """
    from lecentral.cli.output import fail_as
    from lecentral.fleet.metrics import crt_expiries
    from lecentral.fleet.nagios import (
        PERFDATA_PER_NAME_MAX,
        CheckInput,
        evaluate,
        lifetimes,
        row_problems,
    )
    from lecentral.fleet.refused import refused_rows
    from lecentral.fleet.watch import bulk, load_view
    from lecentral.journal import survey

    fail_as(3)  # an output that could not be written: UNKNOWN, as the plugin conventions want
    thresholds = Thresholds(warning_days, critical_days)
    bad = thresholds.problem()
    if bad:
        emit(unknown("LECENTRAL", bad), max_lines, json_out)
    secrets: list[str] = []
    app.checking = True
    try:
        secrets = url_secrets(app.config.database.url)
        from lecentral.certificates import now_ts

        now = now_ts()
        with bulk():
            # the whole fleet: the plainly OK certificates judged and counted by the database
            # (their facts are ok: never among the refused rows)
            fleet, view = load_view(app.store(), app.config, now, names, split=True,
                                    ok_limits=thresholds.limits(),
                                    count_above=PERFDATA_PER_NAME_MAX)
            rows = row_problems(fleet.last_snapshot.certs)
            for key, problems in refused_rows(fleet.store, names).items():
                rows.setdefault(key, problems)
            leftovers = app.store().leftovers()
            data = CheckInput(view=view, rows=rows,
                              lifetimes=lifetimes(fleet, view.certs),
                              expiries=crt_expiries(fleet.last_snapshot.certs),
                              leftovers=leftovers, names=names,
                              max_failures=app.config.renew.max_failures,
                              journals=survey(app.config.renew.state_dir, leftovers),
                              ari_failing=ari_failing(app, now))
            result = evaluate(data, thresholds)
    except Exception as exc:  # noqa: BLE001 - a plugin answers UNKNOWN, never a traceback
        result = unknown("LECENTRAL", f"cannot check: {describe_error(exc, secrets)}")
    emit(result, max_lines, json_out)


def ari_failing(app: App, now: int) -> tuple[int, int | None] | None:
    """What ``check`` and ``metrics`` tell of the failing renewal-information requests (None
    with ``[renew] ari`` off)."""
    from lecentral.store.facts import ari_failing_bounds

    if not app.config.renew.ari:
        return None
    return app.store().ari_failing(*ari_failing_bounds(now))


@click.command()
@click.option("--textfile", metavar="PATH",
              help="Write to PATH atomically (mode 0644), for node_exporter's textfile collector "
                   "(name it *.prom in its --collector.textfile.directory) [default: stdout].")
@pass_app
@guarded
def metrics(app: App, textfile: str | None) -> None:
    """The fleet as Prometheus metrics (text exposition format).

    Per certificate: expiry, failures, last attempt, state; per target (host entry or probed
    endpoint): current or not, state, installed and served expiry, last report; targets still
    reporting a name no row has (unclaimed); per run: last success, duration, exit code; the
    renew timer; challenge records left behind, and the challenge journals (records a killed
    renew left, journals it refuses, whether they could be read); certificates whose ARI
    requests have failed for a day. Run it from the
    lecentral-metrics timer (contrib/systemd) a few times an hour, as the renew job's user.

    Exit status: 0 written, 4 database unreachable (the file is left as it was: the
    textfile collector's node_textfile_mtime_seconds then shows its age), 2 configuration error,
    1 PATH cannot be written or $TMPDIR has no room (the file is left as it was).
    """
    from lecentral.certificates import now_ts
    from lecentral.fleet.metrics import crt_expiries, write_exposition, write_textfile
    from lecentral.fleet.nagios import lifetimes
    from lecentral.fleet.spool import MetricsPass, spool_fits, write_spooled
    from lecentral.fleet.watch import bulk, load_view
    from lecentral.journal import survey

    now = now_ts()
    with bulk(), MetricsPass() as spooled:
        # one pass over certs: the samples of every certificate go to temporary files, only
        # the rows not plainly current are held and judged (lecentral/fleet/spool.py)
        fleet, view = load_view(app.store(), app.config, now, split=True, listing=True,
                                taker=spooled)
        leftovers = app.store().leftovers()
        journals = survey(app.config.renew.state_dir, leftovers)
        failing = ari_failing(app, now)
        split = fleet.last_snapshot.split
        fill: Callable[[Callable[[str], object]], None]
        if split is not None and spool_fits(view, spooled, split.listed):
            def fill(write: Callable[[str], object]) -> None:
                write_spooled(write, view, leftovers, spooled, journals, failing)
        else:  # as before: the whole split view, held
            spooled.close()
            fleet, view = load_view(app.store(), app.config, now, split=True, listing=True)
            lives = lifetimes(fleet, view.certs)
            truths = crt_expiries(fleet.last_snapshot.certs)

            def fill(write: Callable[[str], object]) -> None:
                write_exposition(write, view, leftovers, lives, fleet.current_targets(),
                                 truths, journals=journals, ari_failing=failing)

        if textfile is None:
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n",
                                   write_through=False)
            fill(out.write)
            out.flush()
            out.detach()
            return
        write_textfile(textfile, fill)
