"""The ``lecentral-install`` sub-commands: run, status, csr, plugins."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from lecentral.cli.agent import AgentApp
from lecentral.cli.common import (
    EXIT_FAILURES,
    PluginCommand,
    emit,
    guarded,
    print_json,
    setup_logging,
    table,
    url_secrets,
)
from lecentral.fleet import MAX_LINES
from lecentral.plugins import DISABLE_ENV
from lecentral.types import ServiceType

pass_app = click.make_pass_decorator(AgentApp)


def _date(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if ts else "-"


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing, send nothing.")
@click.option("--keep", type=click.IntRange(min=1), metavar="N",
              help="Backup generations to keep per certificate [default: [agent] keep, 3].")
@click.option("--quiet", is_flag=True, help="No summary on stdout, only errors on stderr (for cron).")
@click.option("--json", "as_json", is_flag=True, help="Results as JSON on stdout.")
@pass_app
@guarded
def run(app: AgentApp, names: tuple[str, ...], dry_run: bool, keep: int | None, quiet: bool,
        as_json: bool) -> None:
    """Install the database's certificate of every configured NAME (or only those given).

    For each one: if enabled in the database, not expired, not the installed one and not older
    than it by an hour or more, check it against the local key (or a staged KEY.next), its name
    and its chain, back up the current files, switch the new set in atomically, run the config
    test and the reload, and verify the service presents it. Any failure puts the previous files
    back and alerts.

    Exit status: 0 when everything is installed or up to date, 1 when a certificate failed or was
    rolled back or a NAME is not configured in install.toml (nothing done), 2 configuration
    error (install.toml without any [[cert]] entry included), 4 database unreachable (nothing
    touched), 7 another run holds the lock.
    """
    from lecentral.errors import ConfigError
    from lecentral.install.engine import Agent

    if not app.config.certs and not app.config.broken:  # a timer installing nothing: no success
        raise ConfigError(f"{app.config.path or 'install.toml'}: no [[cert]] entry, so nothing to "
                          "install; add one per certificate this host uses (docs/agent.md)")

    if quiet:
        setup_logging(0, quiet=True, prog="lecentral-install")
    results = Agent(app.config, app.registry, dry_run=dry_run, keep=keep).run(names)
    if as_json:
        print_json([r.as_dict() for r in results])
    elif not quiet:
        for result in results:
            click.echo(result.line())
            for line in result.plan:
                click.echo(f"    {line}")
    if any(r.failed for r in results):
        sys.exit(EXIT_FAILURES)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
@guarded
def status(app: AgentApp, as_json: bool) -> None:
    """For each certificate: installed (expiry, fingerprint), in the database, and served.

    Read-only. Exit status 1 if the database is unreachable, an entry has an error, or a verify
    URL refuses connections, cannot be reached or serves another certificate than the installed
    one (each such URL is named on stderr).
    """
    from lecentral.install.status import status as get_status

    rows, db_error = get_status(app.config, app.registry)
    if as_json:
        print_json({"database_error": db_error, "certs": rows})
    else:
        if db_error:
            click.echo(f"database: {db_error}", err=True)
        click.echo(table([_status_row(r) for r in rows],
                         ["NAME", "SERVICE", "INSTALLED", "DATABASE", "SERVED", "STATE"]))
    unserved = [(r["name"], url, info.get("error") or "serves another certificate than the "
                 "installed one") for r in rows for url, info in r["served"].items()
                if not info.get("is_installed")]
    if not as_json:
        for name, url, why in unserved:
            click.echo(f"lecentral-install: error: {name}: {url}: {why}", err=True)
    if db_error or unserved or any(r["error"] for r in rows):
        sys.exit(EXIT_FAILURES)


def _status_row(r: dict[str, Any]) -> list[str]:
    inst, db = r["installed"], r["database"]
    installed = f"{_date(inst['expires'])} {inst['fingerprint'][:12]}" if inst else "-"
    database = "-"
    if db:
        database = f"{_date(db.get('expires'))} {db.get('fingerprint', '')[:12]}".strip()
        database += "" if db["enable"] else " (disabled)"
    served = []
    for url, info in r["served"].items():
        served.append(f"{url} {'ok' if info.get('is_installed') else 'error' if 'error' in info else 'OTHER'}")
    state = f"ERROR: {r['error']}" if r["error"] else r["state"]
    return [r["name"], r["service"], installed, database, ", ".join(served) or "-", state]


@click.command(cls=PluginCommand)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("-w", "--warning", "warning_days", type=float, metavar="DAYS",
              help="WARNING when an installed certificate has fewer days left [default: 1/4 of "
                   "its lifetime].")
@click.option("-c", "--critical", "critical_days", type=float, metavar="DAYS",
              help="CRITICAL when an installed certificate has fewer days left [default: 1/10 "
                   "of its lifetime].")
@click.option("--stale-after", "stale_after_days", type=click.FloatRange(min=0), default=2.0,
              show_default=True, metavar="DAYS",
              help="WARNING when a newer certificate in the database is not installed after this.")
@click.option("--max-lines", default=MAX_LINES, show_default=True, type=click.IntRange(min=0),
              help="Problem lines after the first line (0: all).")
@click.option("--json", "json_out", is_flag=True, help="The same result as JSON on stdout.")
@pass_app
def check(app: AgentApp, names: tuple[str, ...], warning_days: float | None,
          critical_days: float | None, stale_after_days: float, max_lines: int,
          json_out: bool) -> None:
    """Monitoring plugin for NRPE: this host's certificates, or only the NAMEs given.

    \b
    Prints `LECENTRAL-INSTALL <STATE> - <summary> | <perfdata>` (days left of each installed
    certificate), then one line per problem. Read-only, like status: it compares what is
    installed, what the database holds and what each verify URL presents.
    Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (database unreachable, bad
    install.toml, an unknown NAME, a usage error).

    \b
    CRITICAL: the installed certificate expired or below --critical; a verify URL presents
              another certificate than the installed one.
    WARNING:  below --warning; an entry with an error or an interrupted run; nothing
              installed; a verify URL unreachable; a newer certificate in the database not
              installed after --stale-after days; a name the database does not have.
    """
    from lecentral.certificates import now_ts
    from lecentral.cli.output import fail_as
    from lecentral.fleet.nagios import Thresholds, describe_error, unknown
    from lecentral.install.check import PREFIX, evaluate
    from lecentral.install.status import status as get_status

    fail_as(3)  # an output that could not be written: UNKNOWN, as the plugin conventions want
    thresholds = Thresholds(warning_days, critical_days)
    bad = thresholds.problem()
    if bad:
        emit(unknown(PREFIX, bad), max_lines, json_out)
    secrets: list[str] = []
    try:
        secrets = url_secrets(app.config.database.url)
        from lecentral.config import for_a_check

        config = dataclasses.replace(app.config, database=for_a_check(app.config.database))
        rows, db_error = get_status(config, app.registry, names)
        result = evaluate(rows, db_error, thresholds, now_ts(), stale_after_days=stale_after_days,
                          names=names)
    except Exception as exc:  # noqa: BLE001 - a plugin answers UNKNOWN, never a traceback
        result = unknown(PREFIX, f"cannot check: {describe_error(exc, secrets)}")
    emit(result, max_lines, json_out)


@click.command()
@click.argument("name")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The private key: reused if it exists, else made here (mode 0600).")
@click.option("--rotate", is_flag=True,
              help="Make a new key in KEY.next for this CSR; the agent switches key and certificate "
                   "together when the certificate arrives (a pending KEY.next is reused).")
@click.option("--san", "sans", multiple=True, metavar="NAME",
              help="Another name (repeatable); an IP address becomes an iPAddress subjectAltName "
                   "(an IP certificate is issued by HTTP-01: lecentral add --certbot).")
@click.option("--rsa", "rsa_bits", type=click.Choice(["2048", "3072", "4096"]),
              help="Make an RSA key of this size [default for a new key: 2048].")
@click.option("--ec", "curve", type=click.Choice(["p256", "p384"]), help="Make an ECDSA key on this curve.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the CSR to this file instead of stdout.")
@click.option("--force", is_flag=True,
              help="A fresh new key: like --rotate, but never reusing a pending KEY.next. The live "
                   "key is never replaced at once.")
@guarded
def csr(name: str, key_path: Path, sans: tuple[str, ...], rsa_bits: str | None, curve: str | None,
        out: Path | None, rotate: bool, force: bool) -> None:
    """Make the private key for NAME here and a CSR to give to the central host.

    An existing key at --key is reused (so the daemon's key stays valid); a new one is written
    atomically with mode 0600. Then, on the central host: `lecentral add NAME --csr FILE` for a
    new name, or `lecentral set-csr NAME FILE` for more names.

    Key rotation is staged: --rotate (or --force) writes the new key to KEY.next and the live key
    stays in use; after `lecentral set-csr NAME FILE` and `lecentral renew --force NAME` on the
    central host, `lecentral-install run` switches key and certificate together, and keeps the
    old key in its backups.
    """
    from lecentral.certificates import check_name
    from lecentral.errors import CsrError
    from lecentral.install.csr import KeySpec, make_csr

    if rsa_bits and curve:
        raise CsrError("choose either --rsa or --ec, not both")
    spec = KeySpec("rsa", int(rsa_bits)) if rsa_bits else KeySpec("ec", curve=curve) if curve else None
    staged = (rotate or force) and key_path.exists()
    request, what = make_csr(name, list(sans), key_path, spec, force=force, rotate=rotate)
    _say(f"{what}; CSR for {', '.join(request.names)} (md5_modulus {request.md5_modulus})")
    if staged and not sans:
        # set-csr replaces the names too: a rotation must not drop the certificate's other names
        _say(f"note: this CSR names only {name}; if the certificate has more names, make it "
             "again with every one of them as --san before lecentral set-csr")
    if out is None:
        click.echo(request.pem.decode(), nl=False)
        return
    from lecentral.files_io import replace_atomically

    replace_atomically(str(out), request.pem, os.geteuid(), os.getegid(), 0o644)
    first = check_name(name)  # the row's name: the one typed (an IP is never the CN)
    http01 = " --certbot --webroot PATH" if request.ips else ""  # RFC 8738: IPs by HTTP-01 only
    then = (f"lecentral set-csr {first} {out.name} and lecentral renew --force {first}" if staged
            else f"lecentral add {first} --csr {out.name}{http01} (or lecentral set-csr {first} "
                 f"{out.name})")
    _say(f"wrote {out}; on the central host: {then}")


def _say(text: str) -> None:
    """What was done and what comes next, on stderr (stdout may carry the CSR); nothing with
    ``lecentral-install -q``: only errors then."""
    if not click.get_current_context().find_root().params.get("quiet"):
        click.echo(text, err=True)


def _defaults(rec: ServiceType) -> dict[str, Any]:
    """A service's defaults, with those of its options dataclass under ``options`` (secrets masked)."""
    defaults = dict(rec.defaults)
    if rec.options_model is not None:
        own = {f.name: ("********" if f.metadata.get("secret") and f.default else f.default)
               for f in dataclasses.fields(rec.options_model) if f.default is not dataclasses.MISSING}
        defaults["options"] = {**own, **defaults.get("options", {})}
    return defaults


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
@guarded
def plugins(app: AgentApp, as_json: bool) -> None:
    """The service plugins the [[cert]] entries can name, the verify URL schemes, and load errors."""
    registry = app.registry
    services: list[dict[str, Any]] = []
    kind = registry.services
    for name, rec in sorted(kind.records.items()):
        info = registry.loaded.infos.get(kind.owner[name])
        services.append({"name": name, "distribution": info.distribution if info else "?",
                         "version": info.version if info else "?", "description": rec.description,
                         "defaults": _defaults(rec), "options": dict(rec.options)})
    verifiers = registry.verifiers.names()
    described = registry.describe()
    failures = [r for r in described if r["status"] == "error"]
    disabled = [r["name"] for r in described if r["status"] == "disabled"]
    if as_json:
        print_json({"services": services, "verifiers": verifiers, "failures": failures,
                    "disabled": disabled})
        return
    click.echo(table([[s["name"], f"{s['distribution']} {s['version']}", s["description"]]
                      for s in services], ["SERVICE", "FROM", "DESCRIPTION"]))
    for s in services:
        if s["defaults"] or s["options"]:
            click.echo(f"\n{s['name']}:")
        for key, value in sorted(s["defaults"].items()):
            click.echo(f"  {key} = {value!r}")
        for key, help_ in sorted(s["options"].items()):
            click.echo(f"  options.{key}: {help_}")
    click.echo(f"\nverify URL schemes: {', '.join(verifiers) or 'none'}")
    if disabled:
        click.echo(f"disabled plugins ([plugins] disable, ${DISABLE_ENV}): {', '.join(disabled)}")
    for f in failures:
        click.echo(f"ERROR: plugin {f['name']} ({f['distribution']}): {f['error']}")
