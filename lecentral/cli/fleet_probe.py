"""``lecentral probe`` and ``lecentral endpoint``: the central host's own look at every endpoint.

``probe`` dials every verify URL the agents reported and every endpoint an operator added, saves
what each served (``lecentral_probes``), and tells the state changes of the fleet through the
notifiers (:mod:`lecentral.fleet.watch`). ``endpoint`` keeps the operator's list
(``lecentral_endpoints``). See docs/probe.md.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from lecentral.cli.central import App
from lecentral.cli.common import guarded, known_name, print_json, table
from lecentral.errors import ConfigError, LecentralError, UnknownNameError

if TYPE_CHECKING:
    from lecentral.fleet.model import FleetView
    from lecentral.fleet.store import ProbeResult
    from lecentral.interfaces import Store

pass_app = click.make_pass_decorator(App)

#: show a progress line on a terminal when there are more endpoints than this
PROGRESS_FROM = 20


def _stored_names(store: Store, names: tuple[str, ...]) -> list[str]:
    """Each NAME as stored in ``certs``; UnknownNameError (exit 1) for one that is not there."""
    found = []
    for name in names:
        row = store.get(known_name(name))
        if row is None:
            raise UnknownNameError(f"no certificate named {name!r} in the database (see lecentral list)")
        found.append(row.name)
    return list(dict.fromkeys(found))


def _progress(total: int) -> Any:
    """A ``progress(done, total)`` that rewrites one line on stderr, or None off a terminal."""
    if total <= PROGRESS_FROM or sys.stderr is None or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        click.echo(f"\rprobed {done}/{total} endpoints", err=True, nl=done >= total)

    return show


def _positive(value: float | None, default: float, what: str) -> float:
    chosen = default if value is None else value
    if chosen <= 0:
        raise ConfigError(f"{what} must be more than 0 (got {chosen:g})")
    return chosen


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--timeout", type=float, metavar="S",
              help="Seconds for each endpoint [default: [fleet] probe_timeout, 10].")
@click.option("--workers", type=int, metavar="N",
              help="Endpoints probed at once [default: [fleet] probe_workers, 64].")
@pass_app
@guarded
def probe(app: App, names: tuple[str, ...], as_json: bool, timeout: float | None,
          workers: int | None) -> None:
    """Dial every endpoint of the certificates (all, or NAMEs) and record what each serves.

    The endpoints are the verify URLs the agents reported (a loopback host is dialed at the
    reporting host) and those added with `lecentral endpoint add`; each is dialed with the
    certificate's name as SNI unless its URL gives ?sni=. An endpoint that cannot be reached is
    a result (state unreachable), not a failure of the command. State changes since the last run
    (unreachable, mismatch, stale... and back) go to the [notify] alerts once each.

    \b
    Exit status: 0 the endpoints were probed (whatever they served); 1 a NAME is not in the
    database, or an alert could not be sent (the next run sends it again); 2 a bad --timeout or
    --workers; 4 a database error.
    """
    from lecentral import __version__
    from lecentral.certificates import now_ts
    from lecentral.fleet.probe import probe as run_probes
    from lecentral.fleet.probe import targets
    from lecentral.fleet.store import FleetStore, Run
    from lecentral.fleet.watch import load_for_changes, load_view, notify_changes
    from lecentral.host import this_host

    fleet_config = app.config.fleet
    seconds = _positive(timeout, fleet_config.probe_timeout, "--timeout")
    at_once = int(_positive(workers, fleet_config.probe_workers, "--workers"))
    store = app.store()
    wanted = _stored_names(store, names)
    fleet = FleetStore(store)
    started = now_ts()
    found = targets(fleet, wanted)
    results = run_probes(app.registry, found, seconds, at_once, _progress(len(found)))
    ended = now_ts()
    prober = this_host()
    fleet.save_probes(results, prober, ended)
    pruned = 0 if wanted else fleet.forget_probes({(r.name, r.url) for r in results})
    served = sum(1 for r in results if r.fingerprint is not None)
    counts = {"endpoints": len(results), "served": served, "unreachable": len(results) - served,
              "pruned": pruned}
    fleet.record_run(Run(kind="probe", host=prober, ts_start=started, ts_end=ended, exit_code=0,
                         counts=counts, message=", ".join(wanted)), __version__,
                     keep=fleet_config.keep_runs)
    fleet, view = (load_view(store, app.config, now_ts(), wanted) if wanted
                   else load_for_changes(store, app.config, now_ts()))
    unsent = notify_changes(fleet, view, app.registry, app.config, complete=not wanted)
    for error in unsent:
        click.echo(f"lecentral: warning: alert not sent: {error}", err=True)
    rows = _rows(results, view)
    if app.quiet and not as_json:  # the timer's run: the state changes were mailed already
        pass
    elif as_json:
        print_json({"endpoints": rows, "counts": counts, "alerts_unsent": unsent})
    elif not rows:
        what = f" for {', '.join(wanted)}" if wanted else ""
        click.echo(f"no endpoints to probe{what}: agents report their verify URLs, or add one with "
                   "lecentral endpoint add NAME URL")
    else:
        click.echo(table([[r["name"], r["url"], r["state"], r["detail"]] for r in rows],
                         ["NAME", "URL", "STATE", "DETAIL"]))
    if unsent:
        raise click.exceptions.Exit(1)


def _rows(results: list[ProbeResult], view: FleetView) -> list[dict[str, Any]]:
    """One row per probed endpoint: what was served, and its state as the judge sees it."""
    judged = {(c.name.lower(), t.target): t for c in view.certs for t in c.targets if t.kind == "probe"}
    rows = []
    for r in results:
        target = judged.get((r.name.lower(), r.url))
        detail = target.detail if target is not None else (r.error or "")
        rows.append({"name": r.name, "url": r.url, "source": r.source,
                     "state": target.state if target is not None else "unknown",
                     "detail": detail, "fingerprint": r.fingerprint, "not_after": r.not_after,
                     "names": r.names, "key_md5": r.key_md5, "error": r.error})
    return rows


# --- endpoint add / remove / list -------------------------------------------------------------


@click.group()
def endpoint() -> None:
    """The endpoints an operator adds for `lecentral probe`, beside the agents' verify URLs.

    For a service no agent checks (an appliance, a load balancer in front of the servers, a host
    reached by another name from outside): `lecentral endpoint add www.example.com
    tls://lb.example.com:443`. The URL takes the verify URL schemes (tls://, smtp+starttls://,
    imap+starttls://, pop3+starttls://, ldap+starttls://, ldaps://... see docs/verifiers.md).
    """


def _endpoint_url(app: App, name: str, url: str) -> str:
    """``url`` checked by its verifier (ConfigError, exit 2), with ``?sni=NAME`` added as probe dials it."""
    from lecentral.fleet.probe import MAX_URL, with_sni
    from lecentral.verify import check_verify_url

    check_verify_url(app.registry, url)
    full = with_sni(_with_port(url.strip()), name)
    check_verify_url(app.registry, full)
    if len(full) > MAX_URL:
        raise ConfigError(f"endpoint URL {full!r} is longer than {MAX_URL} characters")
    return full


def _with_port(url: str) -> str:
    """``url`` with its scheme's default port written out (``tls://h`` is ``tls://h:443``), so
    that one endpoint has one spelling; a plugin's scheme is left as given."""
    from urllib.parse import urlsplit

    from lecentral.verify.url import parse_verify_url

    try:
        target = parse_verify_url(url)
        parts = urlsplit(url)
    except (LecentralError, ValueError):
        return url
    if parts.port is not None:
        return url
    host = f"[{target.host}]" if ":" in target.host else target.host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{target.port}" if userinfo else f"{host}:{target.port}"
    return parts._replace(netloc=netloc).geturl()


def _who() -> str:
    import getpass

    from lecentral.host import this_host

    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = "?"
    return f"{user}@{this_host()}"[:255]


@endpoint.command("add")
@click.argument("name")
@click.argument("url")
@pass_app
@guarded
def endpoint_add(app: App, name: str, url: str) -> None:
    """Probe URL for certificate NAME too (SNI NAME unless URL gives ?sni=)."""
    from lecentral.certificates import now_ts
    from lecentral.fleet.store import FleetStore

    full = _endpoint_url(app, name, url)
    store = app.store()
    stored = _stored_names(store, (name,))[0]
    if FleetStore(store).add_endpoint(stored, full, _who(), now_ts()):
        click.echo(f"{stored}: endpoint {full} added; lecentral probe {stored} to probe it now")
    else:
        click.echo(f"{stored}: endpoint {full} was there already; nothing changed")


@endpoint.command("remove")
@click.argument("name")
@click.argument("url")
@pass_app
@guarded
def endpoint_remove(app: App, name: str, url: str) -> None:
    """Stop probing URL for NAME (as added, or as `endpoint list` shows it); its last result goes."""
    from lecentral.fleet.probe import with_sni
    from lecentral.fleet.store import FleetStore

    store = app.store()
    stored = _stored_names(store, (name,))[0]
    fleet = FleetStore(store)
    given = url.strip()
    for candidate in dict.fromkeys((url, given, with_sni(given, stored),
                                    with_sni(_with_port(given), stored))):
        if fleet.remove_endpoint(stored, candidate):
            click.echo(f"{stored}: endpoint {candidate} removed")
            return
    raise LecentralError(f"{stored} has no endpoint {url!r} (see lecentral endpoint list {stored}); "
                         "an agent's verify URL goes away when the agent stops reporting it")


@endpoint.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@pass_app
@guarded
def endpoint_list(app: App, name: str | None, as_json: bool) -> None:
    """The endpoints operators added (all, or NAME's), with who added them and when."""
    from lecentral.fleet.store import FleetStore

    store = app.store()
    wanted = _stored_names(store, (name,)) if name else []
    items = [{"name": r["name"], "url": r["url"], "ts_added": int(r["ts_added"]),
              "added": datetime.fromtimestamp(int(r["ts_added"]), UTC).strftime("%Y-%m-%d %H:%M"),
              "added_by": r["added_by"]} for r in FleetStore(store).endpoints(wanted)]
    if as_json:
        print_json(items)
    elif not items:
        click.echo("no endpoints added" + (f" for {wanted[0]}" if wanted else "")
                   + "; lecentral endpoint add NAME URL")
    else:
        click.echo(table([[i["name"], i["url"], i["added"], i["added_by"]] for i in items],
                         ["NAME", "URL", "ADDED (UTC)", "BY"]))
