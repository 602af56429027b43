"""Managing the ``certs`` table: init, add (the seed's populate.pl), set-csr, enable, disable,
remove, list, show; and the plugin and configuration listings."""

from __future__ import annotations

import json
import os
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lecentral.certificates import (
    Certificate,
    Csr,
    check_methods,
    check_name,
    load_chain,
    now_ts,
    when,
)
from lecentral.cli.central import App
from lecentral.cli.common import (
    TABLE_WIDTH,
    guarded,
    known_name,
    print_json,
    wrapped_table,
)
from lecentral.errors import ConfigError, CsrError, LecentralError, UnknownNameError
from lecentral.store.rows import CertRow, certificate_problems, load_row_csr
from lecentral.window import renew_at

if TYPE_CHECKING:
    from lecentral.config import CentralConfig, RenewConfig

pass_app = click.make_pass_decorator(App)
DAY = 86400
#: ``renew_reason`` of a row the renew job holds back now: ``renew_at`` is when
#: ``renew.min_interval`` after its last attempt ends (:func:`lecentral.renew.checks.held_until`)
HELD = "renew.min_interval after the last attempt"


def _read_csr(path: Path) -> Csr:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CsrError(f"CSR file {path} does not exist; make one on the server with "
                       "lecentral-install csr NAME --key PATH, or pass --csr FILE") from None
    except OSError as exc:
        raise CsrError(f"cannot read CSR file {path}: {exc.strerror}") from None
    return Csr.load(data, f"CSR file {path}")


def _csr_for(name: str, path: Path) -> Csr:
    csr = _read_csr(path)
    csr.require_name(name, f"CSR file {path}")
    return csr


@click.command()
@pass_app
@guarded
def init(app: App) -> None:
    """Create the tables and bring lecentral's own tables to this version (safe to run again).

    On an existing database made by the seed's scripts, `certs` is left exactly as it is: only
    lecentral's own tables are added, through its schema migrations (the same ones `lecentral
    upgrade` runs). A database made by an earlier lecentral is upgraded, its rows kept.
    """
    _check_database_dir(app)
    store = app.store(check=False)
    created = store.init_schema()
    revision = _revision(store)
    if created:
        click.echo(f"created tables {', '.join(created)} in {store.location}{revision}")
    else:
        click.echo(f"all tables already exist in {store.location}; nothing changed{revision}")


def _check_database_dir(app: App) -> None:
    """An SQLite database's missing directories are made only inside lecentral's own state
    directory (the parent of [renew] state_dir, /var/lib/lecentral by default): a typo in
    [database] url must not leave a new directory tree elsewhere (ConfigError, nothing made)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(app.config.database.url)
    except ArgumentError:
        return  # the store says what is wrong with it
    if not url.get_backend_name().startswith("sqlite") or url.database in (None, "", ":memory:"):
        return
    directory = Path(os.path.abspath(str(url.database))).parent
    if directory.is_dir():
        return
    missing = directory
    while not missing.parent.is_dir() and missing.parent != missing:
        missing = missing.parent
    state = Path(os.path.abspath(app.config.renew.state_dir)).parent
    if directory == state or state in directory.parents:
        return  # init_schema makes them, mode 0750
    raise ConfigError(f"directory {missing} does not exist (for the database file {url.database} "
                      f"of [database] url); lecentral init makes directories only inside its state "
                      f"directory {state} ([renew] state_dir's parent): check the url, or create "
                      f"{directory} first")


def _revision(store: object) -> str:
    from lecentral.store.sql import SqlStore

    return f" (schema revision {store.schema_revision()})" if isinstance(store, SqlStore) else ""


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print {from, to, head, changed} as JSON.")
@pass_app
@guarded
def upgrade(app: App, as_json: bool) -> None:
    """Run the pending schema migrations of lecentral's own tables.

    Run it on the central host after installing a new lecentral (every command says `run
    lecentral upgrade` until then). `certs` is never changed; running it again does nothing.
    The agents never migrate. Prints the revision before and after.
    """
    from lecentral.store import migrations
    from lecentral.store.sql import SqlStore

    store = app.store(check=False)
    if not isinstance(store, SqlStore):
        raise LecentralError(f"{store.location}: this store has no schema migrations")
    before, after = store.upgrade_schema()
    if as_json:
        print_json({"from": before, "to": after, "head": migrations.head(),
                    "changed": before != after})
    elif before == after:
        click.echo(f"{store.location}: lecentral's tables already at revision {after}; nothing to do")
    else:
        click.echo(f"{store.location}: lecentral's tables upgraded from revision "
                   f"{before or '(none)'} to {after}")


@click.command()
@click.argument("name")
@click.option("--csr", "csr_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The CSR file [default: <renew.csr_dir>/NAME.csr].")
@click.option("--certbot", is_flag=True,
              help="Issue by HTTP-01 through the site's webroot (needs --webroot).")
@click.option("--webroot", type=click.Path(path_type=Path),
              help="The site's DocumentRoot on this host, for --certbot.")
@click.option("--comment", help="Free text stored with the row.")
@click.option("--enable", is_flag=True, help="Let the renew job manage it now (default: disabled).")
@pass_app
@guarded
def add(app: App, name: str, csr_file: Path | None, certbot: bool, webroot: Path | None,
        comment: str | None, enable: bool) -> None:
    """Add NAME from its CSR (the seed's populate.pl).

    The CSR's key fingerprint (md5_modulus) is computed from the CSR. The row is disabled unless
    --enable is given, with ts_expire and ts_last_update set to 1 as populate.pl does, so the next
    renew run issues it.

    NAME may be an IP address (RFC 8738): a CSR with IP addresses in its subjectAltName is
    proved by HTTP-01 only, so it needs --certbot --webroot PATH; an IP-only certificate is named
    by its (first) IP address, e.g. `lecentral add 192.0.2.10 --certbot --webroot /srv/www`.
    """
    name = check_name(name)
    if certbot != (webroot is not None):
        raise LecentralError("--certbot and --webroot go together: HTTP-01 needs the site's webroot")
    if webroot is not None and not webroot.is_dir():
        raise LecentralError(f"webroot {webroot} is not an existing directory; give the site's "
                             "DocumentRoot")
    path = csr_file or Path(app.config.renew.csr_dir) / f"{name}.csr"
    csr = _csr_for(name, path)
    check_methods(name, csr.names, http01=certbot)
    row = CertRow(name=name, csr=csr.pem, md5_modulus=csr.md5_modulus, enable=enable,
                  comment=comment, certbot=certbot, ts_expire=1, ts_last_update=1,
                  count_fail_update=0,
                  webroot_path=str(webroot.resolve()) if webroot is not None else None)
    app.store().add(row)
    state = "enabled" if enable else "disabled (lecentral enable NAME to start renewing)"
    click.echo(f"added {name} ({', '.join(csr.names)}; {csr.key_type}; {row.method}); {state}")
    _note_cn_outside_sans(csr)


def _note_cn_outside_sans(csr: Csr) -> None:
    """Say on stderr what a CN outside the subjectAltNames means (accepted: the seed's own CSRs
    are so): ordered with the SANs, certified by Let's Encrypt, refused by SAN-only CAs."""
    cn = csr.cn_outside_sans
    if cn is not None:
        click.echo(f"note: the CSR's CN {cn} is not among its subjectAltNames; it is ordered with "
                   "them (as certbot does) and Let's Encrypt certifies every one, but a CA taking "
                   "the names from the subjectAltNames only (Pebble) refuses this CSR", err=True)


@click.command("set-csr")
@click.argument("name")
@click.argument("csr_file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
@guarded
def set_csr(app: App, name: str, csr_file: Path) -> None:
    """Replace the CSR of NAME (after a new key was made on the server)."""
    name = known_name(name)
    csr = _csr_for(name, csr_file)
    row = app.store().get(name)
    if row is not None:  # an unknown name: the store's set_csr says so
        check_methods(name, csr.names, http01=row.certbot)
    app.store().set_csr(name, csr.pem, csr.md5_modulus, now_ts())
    click.echo(f"{name}: new CSR stored (md5_modulus {csr.md5_modulus}); "
               f"lecentral renew --force {name} to issue a certificate for it now")
    _note_cn_outside_sans(csr)


@click.command("set")
@click.argument("name")
@click.option("--profile", metavar="PROFILE",
              help="The ACME profile to order NAME with (e.g. shortlived, tlsserver), instead of "
                   "[acme] profile; \"\" clears it.")
@click.option("--json", "as_json", is_flag=True, help="Print {name, profile, effective} as JSON.")
@pass_app
@guarded
def set_(app: App, name: str, profile: str | None, as_json: bool) -> None:
    """Change NAME's settings kept in lecentral's own table (certs is never changed).

    --profile P orders NAME's next certificates with the CA's profile P (draft-ietf-acme-profiles)
    instead of [acme] profile; --profile "" goes back to [acme] profile. The CA's directory says
    which profiles it offers: the renew run checks P against them before ordering (an unknown
    one fails that certificate, naming the offered ones); a CA that offers none gets no profile.
    """
    from lecentral.config import PROFILE_RE, PROFILE_RULE

    name = known_name(name)
    if profile is None:
        raise click.UsageError("nothing to set: give --profile PROFILE (or --profile \"\" to clear)")
    profile = profile.strip()
    if profile and not PROFILE_RE.match(profile):
        raise ConfigError(f"--profile {profile[:80]!r} is not a valid ACME profile name "
                          f"({PROFILE_RULE})")
    store = app.store()
    store.set_profile(name, profile or None, now_ts())
    effective = profile or app.config.acme.profile or None
    if as_json:
        print_json({"name": name, "profile": profile or None, "effective": effective})
    elif profile:
        click.echo(f"{name}: profile {profile} (checked against the CA's profiles at the next "
                   "order)")
    else:
        click.echo(f"{name}: profile cleared; [acme] profile applies "
                   f"({effective or 'none: the CA default'})")


def _set_enable(app: App, name: str, flag: bool) -> None:
    name = known_name(name)
    done = "enabled" if flag else "disabled"
    if app.store().set_enable(name, flag, now_ts()):
        click.echo(f"{name}: {done}")
    else:  # nothing written: the history keeps one event per real change
        click.echo(f"{name}: already {done}")


@click.command()
@click.argument("name")
@pass_app
@guarded
def enable(app: App, name: str) -> None:
    """Let the renew job and the agents manage NAME (enable = 'Y')."""
    _set_enable(app, name, True)


@click.command()
@click.argument("name")
@pass_app
@guarded
def disable(app: App, name: str) -> None:
    """Stop renewing and installing NAME (enable = 'N'); its certificate stays in the table."""
    _set_enable(app, name, False)


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@guarded
def remove(app: App, name: str, yes: bool) -> None:
    """Delete NAME's row, certificate included (its event history is kept).

    Of two rows whose names differ only in case, NAME exactly as stored picks the one to delete.
    """
    name = _lookup_name(name)
    store = app.store()
    if store.get(name) is None:
        raise UnknownNameError(f"no certificate named {name!r} in the database (see lecentral list)")
    if not yes:
        click.confirm(f"Delete {name} and its certificate from the database?", abort=True)
    store.remove(name, now_ts())
    click.echo(f"{name}: removed")


def _lookup_name(name: str) -> str:
    """NAME to look a row up by: as typed, spaces included, so that of rows whose names differ
    only in case, a final dot or a trailing space (``'www.x '``, as list and the problem show
    it) the one stored exactly as NAME is picked; an IP address written otherwise than stored
    (``2001:DB8:0::1``) in its canonical form (UnknownNameError for what names no row)."""
    from lecentral.store.direct import dns_key

    known = known_name(name)
    return name if dns_key(name) == known else known


# --- list and show ----------------------------------------------------------------------------


def _date(ts: int | None) -> str | None:
    if not ts or ts <= 1:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


#: a Unix time inside a stored event message (``issued, expires at 1953955398``): the events
#: keep the seed-era epochs (other tools may read them); shown as dates
_EPOCH_IN_MESSAGE = re.compile(r"\b(expires at|expired at) (\d{9,11})\b")


def readable(message: str) -> str:
    """An event message with its Unix times as ``2031-12-02 10:00 UTC`` dates."""
    return _EPOCH_IN_MESSAGE.sub(lambda m: f"{m.group(1)} {when(int(m.group(2)))}", message)


def _lifetime_days(validity: tuple[int, int] | None) -> float | None:
    """The stored certificate's lifetime (notAfter - notBefore) in days, one decimal: 90.0 for a
    classic certificate, 6.7 for a 160-hour one; None without a readable certificate."""
    if validity is None:
        return None
    return round((validity[1] - validity[0]) / DAY, 1)


def _profile(name: str, stored: str | None, default: str) -> dict[str, Any]:
    """``profile``: what the next order asks for (None: the CA's default), and where it comes
    from; a stored value (``lecentral set``) that is not a valid profile name is a problem of
    the row ``name``."""
    from lecentral.config import PROFILE_RE, PROFILE_RULE

    if stored is not None and not PROFILE_RE.match(stored):
        return {"profile": None, "profile_source": "lecentral set",
                "profile_problem": f"lecentral_cert_settings holds an invalid ACME profile "
                                   f"({PROFILE_RULE}): lecentral set {name} --profile NAME"}
    if stored is not None:
        return {"profile": stored, "profile_source": "lecentral set"}
    return {"profile": default or None, "profile_source": "[acme] profile" if default else None}


def _renewal(row: CertRow, bad_cert: list[str], renew: RenewConfig,
             validity: tuple[int, int] | None, held: int | None) -> tuple[int | None, str]:
    """(when NAME becomes due, why) for list/show: the renew job's rule without ARI (which can
    only make it earlier, and needs the CA: ``renew --dry-run`` does not ask it either).
    ``validity``: the stored certificate's (notBefore, notAfter), None without one; ``held``:
    when renew.min_interval lets the next attempt go, if it holds now
    (:func:`lecentral.renew.checks.held_until`): the renew job does not try the row before
    then, whatever else makes it due."""
    if row.problems:
        return None, "never while the row is invalid"
    if bad_cert:
        if held is not None:
            return held, HELD  # why: the problems
        return None, "now: the stored certificate is bad"
    if validity is None or (row.ts_expire or 0) <= 1:
        return (held, HELD) if held is not None else (None, "now: no certificate yet")
    window = renew_at(validity[0], validity[1], renew)
    # the renew job tests min_interval first: a row due, or due before it ends, waits for it
    if held is not None and held > window.at:
        return held, HELD
    return window.at, window.reason


def _validity(row: CertRow) -> tuple[int, int] | None:
    """The stored certificate's (notBefore, notAfter); None without a readable one."""
    if not row.crt:
        return None
    try:
        cert = Certificate.load(row.crt, "crt column")
    except LecentralError:
        return None
    return cert.not_before, cert.not_after


def _with_ari(info: dict[str, Any], crt: bytes, config: CentralConfig,
              issuer: tuple[str, str] | None) -> None:
    """``show``: ask the issuing CA's ARI (one plain GET, no account) for the certificate's
    renewal window; when the renew job would renew earlier for it, say so (``ari_window``).
    A CA without ARI, or unreachable (a warning on stderr), leaves the lifetime rule."""
    from lecentral.acme.client import RenewalInfoReader
    from lecentral.renew.checks import ari_due_at

    authorities = dict(config.acme.authorities())
    acme = authorities.get(issuer[0]) if issuer else None
    reader = RenewalInfoReader(acme or config.acme.first())
    window = reader.window(crt)
    if window is None:
        info["ari_window"] = None
        return
    start, end = int(window.start.timestamp()), int(window.end.timestamp())
    info["ari_window"] = {"start": _date(start), "end": _date(end)}
    at = ari_due_at(start, end, Certificate.load(crt).fingerprint)
    if at < info["ts_renew_at"]:
        info["ts_renew_at"], info["renew_at"] = at, _date(at)
        info["renew_reason"] = f"the CA's ARI window {_date(start)} to {_date(end)} UTC"


def _issuing_ca(found: tuple[str, str] | None) -> dict[str, Any]:
    """``issuer_ca``: the ``[[acme.ca]]`` name of the CA that issued the stored certificate and
    ``issuer_ca_directory`` its directory then, from ``found`` as stored (None: not recorded,
    or not a valid name)."""
    from lecentral.config import CA_NAME_RE

    if found is None or not CA_NAME_RE.match(found[0]):
        return {"issuer_ca": None, "issuer_ca_directory": None}
    directory = "".join(c for c in found[1] if c.isprintable())[:500]
    return {"issuer_ca": found[0], "issuer_ca_directory": directory or None}


def _summary(row: CertRow, now: int, renew: RenewConfig, default_profile: str = "",
             profile: str | None = None, issuer: tuple[str, str] | None = None) -> dict[str, Any]:
    """One row for list/show: ``problems`` is everything wrong with it; ``invalid`` says whether
    it is refused until fixed (row problems), ``certificate_problems`` the subset that only makes
    it due (the renew job replaces the bad stored certificate); ``renew_at`` when it becomes due
    and ``renew_reason`` why then (or why none). ``profile`` and ``issuer``: the row's settings
    as stored (lecentral_cert_settings). lecentral/cli/listing.py makes the same from the facts
    of a row known good and unchanged."""
    from lecentral.renew.checks import held_until

    names: list[str] | None = None
    csr: Csr | None = None
    try:
        csr = load_row_csr(row)
        names = csr.names
    except LecentralError as exc:
        row = row.with_problem(str(exc))
    bad_cert = certificate_problems(row, names)
    validity = _validity(row)
    has_cert = bool(row.crt) and (row.ts_expire or 0) > 1
    fields = _profile(row.name, profile, default_profile)
    # a note, not INVALID: the renew job does not refuse the row, its order fails saying this
    notes = [*row.notes, *([fields.pop("profile_problem")] if "profile_problem" in fields else [])]
    ts_renew_at, renew_reason = _renewal(row, bad_cert, renew, validity,
                                         held_until(row, now, renew.min_interval, csr))
    return {
        # rows whose names differ only in case: each as stored, to tell them apart
        "name": row.stored_name or row.name, "enabled": row.enable, "method": row.method,
        "names": names or [],
        "expires": _date(row.ts_expire) if has_cert else None,
        "ts_expire": row.ts_expire,
        "days_left": ((row.ts_expire or 0) - now) // DAY if has_cert else None,
        **fields, **_issuing_ca(issuer),
        "lifetime_days": _lifetime_days(validity) if has_cert else None,
        "renew_at": _date(ts_renew_at), "ts_renew_at": ts_renew_at, "renew_reason": renew_reason,
        "count_fail_update": row.count_fail_update or 0,
        "last_attempt": _date(row.ts_last_update), "ts_last_update": row.ts_last_update,
        "webroot_path": row.webroot_path, "comment": row.comment,
        "problems": [*row.problems, *bad_cert], "invalid": bool(row.problems),
        "certificate_problems": bad_cert, "notes": notes,
    }


def _state(item: dict[str, Any]) -> str:
    """The last column of ``lecentral list``: what is wrong, and what happens about it."""
    if item["invalid"]:
        return "INVALID: " + "; ".join(p for p in item["problems"]
                                       if p not in item["certificate_problems"])
    if item["certificate_problems"]:
        fate = ("disabled: not replaced" if not item["enabled"] else
                "the next renew replaces it" if item["ts_renew_at"] is None else
                f"replaced by the first renew after {item['renew_at']}")
        return f"BAD CERTIFICATE ({fate}): " + "; ".join(item["certificate_problems"])
    return "; ".join(item["notes"])


def _renews(item: dict[str, Any], now: int) -> str:
    """The RENEWS column: the date and the rule (``2027-03-01 10:00 (1/3 of its 64-day lifetime
    left)``), ``due`` once it has passed, ``now``/``never`` and why without a date."""
    at = item["ts_renew_at"]
    if at is None:
        return str(item["renew_reason"]).split(":")[0]
    return f"{'due' if at <= now else item['renew_at']} ({item['renew_reason']})"


def _cert_info(data: bytes | None, what: str) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        cert = Certificate.load(data, what)
    except LecentralError as exc:
        return {"error": str(exc)}
    return {"subject": cert.subject, "issuer": cert.issuer, "names": cert.names,
            "key": cert.key_type, "sha256": cert.fingerprint, "md5_modulus": cert.md5_modulus,
            "not_before": _date(cert.not_before), "not_after": _date(cert.not_after)}


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--history", default=20, show_default=True, help="How many events to show.")
@pass_app
@guarded
def show(app: App, name: str, as_json: bool, history: int) -> None:
    """One certificate in full: names, key type, fingerprints, chain and history."""
    store = app.store()
    row = store.get(_lookup_name(name))
    if row is None:
        raise UnknownNameError(f"no certificate named {name!r} in the database (see lecentral list)")
    name = row.name
    now = now_ts()
    key = row.name.strip().lower().rstrip(".")
    info = _summary(row, now, app.config.renew, app.config.acme.profile,
                    store.profiles().get(key), store.issuing_cas().get(key))
    try:
        csr = Csr.load(row.csr, "CSR")
        info["csr"] = {"names": csr.names, "key": csr.key_type, "md5_modulus": csr.md5_modulus}
    except LecentralError as exc:
        info["csr"] = {"error": str(exc)}
    # a bad one is replaced, and a held one waits for min_interval: ARI cannot make either
    # earlier, and is not asked ("ari_window" then stays out of info)
    if info["ts_renew_at"] is not None and row.crt and app.config.renew.ari and \
            not info["certificate_problems"] and info["renew_reason"] != HELD:
        _with_ari(info, row.crt, app.config, store.issuing_cas().get(row.name.strip().lower()))
    info["md5_modulus"] = row.md5_modulus
    info["md5_ca"] = row.md5_ca
    info["certificate"] = _cert_info(row.crt, "crt column")
    info["old_certificate"] = _cert_info(row.old_crt, "old_crt column")
    try:
        info["chain"] = [c.subject for c in load_chain(row.ca, "ca column")] if row.ca else []
    except LecentralError as exc:
        info["chain"] = [str(exc)]
    info["history"] = [{"time": _date(e.ts) or str(e.ts), "event": e.kind, "host": e.host,
                        "message": e.message} for e in store.events(name, history)]
    if as_json:
        print_json(info)
        return
    _print_show(info, now)


def _print_show(info: dict[str, Any], now: int) -> None:
    def line(label: str, value: Any) -> None:
        click.echo(f"{label:<18}{value}")

    line("name", info["name"])
    line("enabled", "yes" if info["enabled"] else "no")
    for note in info["notes"]:
        line("NOTE", note)
    line("method", info["method"] + (f" (webroot {info['webroot_path']})"
                                     if info["webroot_path"] else ""))
    line("names", ", ".join(info["names"]))
    line("csr key", info["csr"].get("key") or info["csr"].get("error"))
    line("md5_modulus", info["md5_modulus"])
    cert = info["certificate"]
    if cert and "error" not in cert:
        line("expires", f"{cert['not_after']} UTC ({info['days_left']} days)")
        if info["lifetime_days"] is not None:
            line("lifetime", f"{info['lifetime_days']:g} days")
        due = info["ts_renew_at"] is not None and info["ts_renew_at"] <= now
        # only when its ARI window was asked for (not with [renew] ari off, nor for a bad or
        # held certificate) and the CA had none
        no_ari = "; the CA offers no ARI window" if "ari_window" in info and \
            info["ari_window"] is None else ""
        line("renews", f"{'due since' if due else 'at'} {info['renew_at']} UTC "
             f"({info['renew_reason']}{no_ari})"
             if info["ts_renew_at"] is not None else info["renew_reason"])
        line("issuer", cert["issuer"])
        line("issuing CA", f"{info['issuer_ca']} ({info['issuer_ca_directory']})"
             if info["issuer_ca"] else "not recorded (issued before lecentral recorded it)")
        line("sha256", cert["sha256"])
    else:
        line("certificate", (cert or {}).get("error", "none yet"))
        if info["ts_renew_at"] is not None and not info["certificate_problems"]:
            # none yet, and renew.min_interval holds it after a failed attempt: said when
            line("renews", f"at {info['renew_at']} UTC ({info['renew_reason']})")
    line("profile", info["profile"] + f" ({info['profile_source']})" if info["profile"]
         else "none (the CA's default)")
    line("md5_ca", info["md5_ca"] or "-")
    for i, subject in enumerate(info["chain"]):
        line("chain" if i == 0 else "", subject)
    line("failures", info["count_fail_update"])
    line("last attempt", info["last_attempt"] or "-")
    if info["comment"]:
        line("comment", info["comment"])
    for problem in info["problems"]:
        bad_cert = problem in info["certificate_problems"]
        line("BAD CERTIFICATE" if bad_cert else "PROBLEM", problem)
    if info["certificate_problems"]:
        line("", "not replaced while the row is disabled or invalid" if not info["enabled"] or
             info["invalid"] else "the next renew replaces the certificate"
             if info["ts_renew_at"] is None else
             f"the first renew after {info['renew_at']} UTC replaces the certificate")
    if info["history"]:
        click.echo("history:")
        for e in info["history"]:
            click.echo(f"  {e['time']}  {e['event']:<8} {e['host']}: {readable(e['message'])}")


# --- plugins and config -----------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
@guarded
def plugins(app: App, as_json: bool) -> None:
    """Every plugin: its distribution, version, what it registers, and load errors."""
    rows = app.registry.describe()
    if as_json:
        print_json(rows)
        return
    click.echo(wrapped_table([[r["name"], f"{r['distribution']} {r['version']}",
                               "ERROR" if r["error"] else r["status"], _registers(r["registers"])]
                              for r in rows], ["PLUGIN", "FROM", "STATUS", "REGISTERS"]))
    for r in rows:
        if r["error"]:
            click.echo(textwrap.fill(f"ERROR: plugin {r['name']} ({r['distribution']}): "
                                     f"{r['error']}", TABLE_WIDTH, subsequent_indent="  ",
                                     break_on_hyphens=False))


def _registers(registered: list[str]) -> str:
    """``verifier:tls, verifier:https`` as ``verifier: tls, https`` (kinds in first-seen order)."""
    kinds: dict[str, list[str]] = {}
    for item in registered:
        kind, _, name = item.partition(":")
        kinds.setdefault(kind, []).append(name)
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items()) or "-"


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
@guarded
def config_show(app: App, as_json: bool) -> None:
    """Print the effective configuration, secrets masked.

    Settings that do not fit short-lived certificates (renew.min_interval above a day) are
    warned about on stderr; `lecentral doctor` also checks them against the certificates in
    the database.
    """
    from lecentral.config import masked
    from lecentral.window import window_warnings

    for warning in window_warnings(app.config.renew, None):
        click.echo(f"lecentral: warning: {warning}", err=True)
    data = masked(app.config)
    source = data.pop("path") or "(built-in defaults: no configuration file)"
    if as_json:
        print_json({"file": source, **data})
        return
    click.echo(f"# {source}")
    acme = data.get("acme")
    if isinstance(acme, dict) and acme.get("ca"):  # [[acme.ca]]: the one-CA keys are not used
        per_ca = {key for entry in acme["ca"] for key in entry}
        data["acme"] = {k: v for k, v in acme.items() if k not in per_ca}
    for section, values in data.items():
        _print_toml(section, values)


def _print_toml(section: str, values: dict[str, Any]) -> None:
    """``values`` as the TOML table ``[section]``: plain values first, then its sub-tables
    (``[section.key."name"]`` for tables of tables such as dns.zones) and arrays of tables
    (``[[section.key]]`` such as acme.ca); a table of plain values (dns.nameserver_addresses) is
    an inline table. A value that is not set is a comment: TOML has no null."""
    click.echo(f"\n[{section}]")
    tables: dict[str, dict[str, Any]] = {}
    arrays: dict[str, list[dict[str, Any]]] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            tables[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays[key] = value
        elif value is None:
            click.echo(f"# {_toml_key(key)}: not set")
        else:
            click.echo(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, sub in tables.items():
        for name, table_ in sub.items():
            _print_toml(f"{section}.{_toml_key(key)}.{json.dumps(name)}", table_)
    for key, entries in arrays.items():
        for entry in entries:
            click.echo(f"\n[[{section}.{_toml_key(key)}]]")
            for name, value in entry.items():
                if value is not None:
                    click.echo(f"{_toml_key(name)} = {_toml_value(value)}")


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                                if v is not None) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers, booleans: JSON's forms are TOML's


