"""``lecentral agent``: which database user may report for which host (``lecentral_agents``).

On MariaDB/MySQL and PostgreSQL the reporting triggers (migration ``0002_fleet``) read this
mapping: an agent's account writes deployments, runs and events only for the hosts mapped to it,
and no other account but the central one writes for a mapped host. SQLite has no users: the
mapping is kept there but nothing enforces it.
"""

from __future__ import annotations

import re

import click

from lecentral.certificates import now_ts
from lecentral.cli.central import App
from lecentral.cli.common import guarded, print_json, table
from lecentral.errors import LecentralError, StoreError
from lecentral.fleet.store import FleetStore

pass_app = click.make_pass_decorator(App)

#: a host name as the agents record it (socket.getfqdn(), or [agent] host): no spaces, no quotes
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?$")
#: a database account's user name (MariaDB: up to 80 characters, PostgreSQL: 63)
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.$-]{0,127}$")


def _fleet(app: App) -> FleetStore:
    return FleetStore(app.store())


def _check(host: str, db_user: str | None = None) -> None:
    if not _HOST.match(host):
        raise LecentralError(f"{host!r} is not a host name (letters, digits, '.', '-', '_'); give "
                             "the name the agent reports as (its fully qualified name)")
    if db_user is not None and not _USER.match(db_user):
        raise LecentralError(f"{db_user!r} is not a database user name (letters, digits, '_', "
                             "'.', '$', '-', at most 128); give the user part only, without @host")


def _rows(app: App) -> list[dict[str, object]]:
    rows = _fleet(app).agents()
    for row in rows:  # validated before use: a hand-edited row must not break the listing
        if not isinstance(row.get("host"), str) or not isinstance(row.get("db_user"), str):
            raise StoreError(f"lecentral_agents holds an invalid row {row!r}; fix or delete it")
    return rows


@click.group()
def agent() -> None:
    """Which database user may report for which host.

    \b
    Each reporting agent (lecentral-install with [agent] report = true) logs in with its own
    database account (contrib/sql/ has the grants). Map it to its host here; on MariaDB/MySQL and
    PostgreSQL the database then refuses any report of that account for another host, and any
    report for that host from another account (the central account excepted).
    """


@agent.command("add")
@click.argument("host")
@click.option("--db-user", required=True, metavar="USER",
              help="The agent's database user name (the user part only, without @host).")
@pass_app
@guarded
def add(app: App, host: str, db_user: str) -> None:
    """Let database user USER report for HOST (replacing the user it had).

    HOST is compared as DNS does, without regard to case: it is stored in lower case, as the
    agent reports it ([agent] host, or the FQDN, lower-cased).
    """
    host = host.lower().rstrip(".")
    _check(host, db_user)
    before = {str(r["host"]): str(r["db_user"]) for r in _rows(app)}
    _fleet(app).add_agent(host, db_user, now_ts())
    was = before.get(host)
    if was == db_user:
        click.echo(f"{host}: already reports as database user {db_user}; nothing changed")
    elif was is not None:
        click.echo(f"{host}: now reports as database user {db_user} (was {was})")
    else:
        click.echo(f"{host}: may now report as database user {db_user}")


@agent.command("remove")
@click.argument("host")
@pass_app
@guarded
def remove(app: App, host: str) -> None:
    """Forget which database user reports for HOST (its reports stay: lecentral agent forget).

    That account can write nothing any more (the triggers refuse an account that is neither the
    central one nor mapped); drop it as well when the host is gone.
    """
    host = host.lower().rstrip(".")
    _check(host)
    if not _fleet(app).remove_agent(host):
        raise LecentralError(f"no database user is mapped to host {host} (see lecentral agent list)")
    click.echo(f"{host}: removed; drop or lock its database account if the host is gone")


@agent.command("forget")
@click.argument("host")
@pass_app
@guarded
def forget(app: App, host: str) -> None:
    """Delete what HOST reported (a host retired or renamed): its deployments leave lecentral
    fleet, check and metrics, and their verify URLs are probed no more. Its runs stay in the
    history; its mapping stays until lecentral agent remove.
    """
    host = host.lower().rstrip(".")
    _check(host)
    gone = _fleet(app).forget_host(host)
    if not gone:
        raise LecentralError(f"host {host} has reported nothing (see lecentral fleet)")
    click.echo(f"{host}: {gone} deployment report(s) deleted")


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print [{host, db_user, ts_added}] as JSON.")
@pass_app
@guarded
def list_(app: App, as_json: bool) -> None:
    """Every host and the database user that reports for it."""
    rows = _rows(app)
    if as_json:
        print_json([{"host": r["host"], "db_user": r["db_user"], "ts_added": r["ts_added"]}
                    for r in rows])
    elif not rows:
        click.echo("no agent mapped yet (lecentral agent add HOST --db-user USER)")
    else:
        click.echo(table([[str(r["host"]), str(r["db_user"])] for r in rows], ["HOST", "DB USER"]))
