"""``lecentral dns``: set up a per-name sub-zone (``dns zone``) and prove it works (``dns check``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lecentral.cli.central import App
from lecentral.cli.common import guarded, print_json
from lecentral.errors import LecentralError

if TYPE_CHECKING:
    from lecentral.dns.check import NameReport
    from lecentral.dns.subzone import SubZonePlan

pass_app = click.make_pass_decorator(App)

#: exit status of ``dns check`` by worst finding (the monitoring-plugin convention)
CHECK_EXIT = {"OK": 0, "WARN": 1, "FAIL": 2}


@click.group()
def dns() -> None:
    """Set up and check the per-name DNS sub-zones that DNS-01 validation writes into.

    \b
    One sub-zone per certificate name, updatable only at _acme-challenge.NAME TXT with a TSIG key,
    delegated from the parent zone. `dns zone` writes what to install; `dns check` proves it works
    before a CA is asked (a failed validation is cached by resolvers for the negative TTL).
    """


# ------------------------------------------------------------------------------- dns zone


@dns.command("zone")
@click.argument("name")
@click.option("--key", "key_name", metavar="KEYNAME",
              help="Grant this existing TSIG key instead of generating a new one (named NAME).")
@click.option("--ns", "nameservers", multiple=True, metavar="HOST",
              help="Nameserver of the sub-zone (repeat for several) [default: the parent zone's primary "
                   "(SOA MNAME), asked of [dns] server].")
@click.option("--address", "addresses", multiple=True, metavar="IP",
              help="A/AAAA record of NAME itself, which moves from the parent into the sub-zone (repeat) "
                   "[default: what [dns] server serves for NAME now].")
@click.option("--zone-file", metavar="PATH", help="Zone file path for named.conf [default: /var/lib/bind/db.NAME].")
@click.option("--soa-minimum", type=click.IntRange(1, 86400), default=300, show_default=True,
              help="Negative-caching TTL in seconds: how long a failed validation is cached.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the files into this directory (key 0600) instead of printing them.")
@click.option("--force", is_flag=True, help="With --out: replace files that already exist.")
@pass_app
@guarded
def zone(app: App, name: str, key_name: str | None, nameservers: tuple[str, ...], addresses: tuple[str, ...],
         zone_file: str | None, soa_minimum: int, out_dir: Path | None, force: bool) -> None:
    """Write everything needed to create the sub-zone NAME.

    \b
    - the TSIG key (hmac-sha512, fresh random secret) unless --key names an existing one;
    - the named.conf zone stanza: update-policy grants the key _acme-challenge.NAME TXT only;
    - the zone file, with a negative TTL of minutes (the seed's 12 hours cost a day per failure);
    - the records replacing NAME's A record in the parent zone;
    - the lecentral.toml lines for the key.

    Without --out everything is printed, the key's secret included: redirect it to a file that
    only root can read.
    """
    plan = _plan(app, name, key_name, nameservers, addresses, zone_file, soa_minimum)
    from lecentral.dns.subzone import output_files, write_files

    if out_dir is None:
        for f in output_files(plan, Path("/etc/lecentral")):
            click.echo(f"# ---- {f.name}{' (mode 0600: it holds the secret)' if f.mode == 0o600 else ''}")
            click.echo(f.text)
        click.echo("# ---- then\n" + "".join(f"# {line}\n" for line in plan.reminder().splitlines()), nl=False)
        return
    written = write_files(output_files(plan, out_dir), out_dir, force=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(_next_steps(plan, out_dir))


def _plan(app: App, name: str, key_name: str | None, nameservers: tuple[str, ...], addresses: tuple[str, ...],
          zone_file: str | None, soa_minimum: int) -> SubZonePlan:
    import ipaddress

    from lecentral.dns.subzone import SubZonePlan, default_serial, new_key
    from lecentral.dns.zones import clean_name

    zone = clean_name(name)
    if zone.startswith("*."):
        raise click.UsageError("a sub-zone is named without '*.': the wildcard's TXT lives in the zone of its base name")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address", param_hint="--address") from None
    key = clean_name(key_name) if key_name else zone
    hosts = tuple(clean_name(ns) + "." for ns in nameservers) or (_parent_primary(app, zone),)
    return SubZonePlan(
        zone=zone, key_name=key, nameservers=hosts,
        addresses=addresses or _current_addresses(app, zone),
        zone_file_path=zone_file or f"/var/lib/bind/db.{zone}",
        new_key=None if key_name else new_key(key), serial=default_serial(), soa_minimum=soa_minimum,
    )


def _parent_primary(app: App, zone: str) -> str:
    """The SOA MNAME of the zone above ``zone``, asked of ``[dns] server``."""
    from lecentral.dns.wire import ask, rrset_at
    from lecentral.dns.zones import ZoneLocator

    try:
        locator = ZoneLocator(app.config.dns)
        parent = locator.enclosing_zone(zone.split(".", 1)[1])
        import dns.name

        origin = dns.name.from_text(parent + ".")
        soa = rrset_at(ask(locator.server_for(parent), origin, "SOA").answer, origin, "SOA")
        if soa is None:
            raise LecentralError(f"no SOA for {parent}")
        return str(soa[0].mname.to_text())
    except (LecentralError, IndexError) as exc:
        raise click.UsageError(f"cannot find the parent zone's primary of {zone} ({exc}); pass --ns HOST") from None


def _current_addresses(app: App, name: str) -> tuple[str, ...]:
    """The A/AAAA records ``[dns] server`` serves for ``name`` now (to move them into the sub-zone)."""
    import dns.name

    from lecentral.dns.wire import ask, resolve_server, rrset_at

    server = resolve_server(app.config.dns.server, "[dns] server")
    qname = dns.name.from_text(name + ".")
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            rrset = rrset_at(ask(server, qname, rdtype).answer, qname, rdtype)
        except LecentralError:
            return ()
        found += sorted(r.address for r in rrset) if rrset is not None else []
    return tuple(found)


def _next_steps(plan: SubZonePlan, out: Path) -> str:
    key = (f"  1. install {out}/{plan.key_name}.key on the primary (e.g. /etc/bind/{plan.key_name}.key, "
           f"owned root:bind, mode 0640) and `include` it in named.conf; copy it for lecentral too\n"
           if plan.new_key is not None else f"  1. key {plan.key_name} must already be defined in named.conf\n")
    return (
        "next steps:\n" + key
        + f"  2. add {out}/named.conf.{plan.zone} to named.conf; copy {out}/db.{plan.zone} to {plan.zone_file_path} "
          f"(writable by named)\n"
        + "  3. `named-checkconf` then `rndc reconfig`\n"
        + f"  4. change the parent zone as {out}/parent.{plan.zone}.txt says\n"
        + f"  5. add {out}/lecentral.{plan.zone}.toml to lecentral.toml\n"
        + f"  6. lecentral dns check {plan.zone}\n"
        + plan.reminder()
    )


# ------------------------------------------------------------------------------ dns check


@dns.command("check")
@click.argument("names", nargs=-1)
@click.option("--all", "all_rows", is_flag=True, help="Check every name of every enabled DNS-01 row.")
@click.option("--resolver", "resolvers", multiple=True, metavar="IP[:PORT]",
              help="Also ask this recursive resolver what it sees (repeat) [default: [dns] check_resolvers].")
@click.option("--timeout", type=click.FloatRange(0.1), metavar="SECONDS",
              help="How long the live update may take to reach every nameserver [default: [dns] propagation_timeout].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable findings on stdout.")
@pass_app
@guarded
def check(app: App, names: tuple[str, ...], all_rows: bool, resolvers: tuple[str, ...], timeout: float | None,
          as_json: bool) -> None:
    """Prove that DNS-01 can work for each NAME; report OK/WARN/FAIL with a fix per problem.

    \b
    Per name: the zone serving _acme-challenge.NAME (CNAMEs followed) and its key; every
    authoritative nameserver answering with the primary's serial; the parent's delegation
    matching the zone's NS set; a live add/see/delete/see-gone of a random TXT with the key; the
    negative TTL (WARN above 300 s); and, with --resolver, what resolvers see of the delegation.

    Exit status: 0 every name OK, 1 some WARN, 2 some FAIL (for monitoring).
    """
    from lecentral.dns.check import SubZoneChecker, worst

    if not names and not all_rows:
        raise click.UsageError("name at least one NAME, or --all")
    config = app.config.dns
    if timeout is not None:
        config = dataclasses.replace(config, propagation_timeout=timeout)
    checker = SubZoneChecker(config, list(resolvers) if resolvers else None)
    reports: list[NameReport] = []
    wanted = list(dict.fromkeys(names))
    if all_rows:
        more, invalid = _enabled_dns_names(app)
        wanted += [n for n in more if n not in wanted]
        reports += invalid
    reports += [checker.check(name) for name in wanted]
    if as_json:
        print_json([{"name": r.name, "zone": r.zone, "status": r.status,
                     "findings": [dataclasses.asdict(f) for f in r.findings]} for r in reports])
    else:
        click.echo(_render(reports))
    raise click.exceptions.Exit(CHECK_EXIT[worst(reports)])


def _enabled_dns_names(app: App) -> tuple[list[str], list[NameReport]]:
    """Every name of every enabled DNS-01 row's CSR; invalid rows as FAIL reports."""
    from lecentral.certificates import Csr, check_methods
    from lecentral.dns.check import FAIL, NameReport

    names: list[str] = []
    invalid: list[NameReport] = []
    for row in app.store().list():
        if not row.enable or row.certbot:
            continue
        try:
            if row.problems:
                raise LecentralError("; ".join(row.problems))
            csr = Csr.load(row.csr, f"CSR of {row.name}")
            check_methods(row.name, csr.names, http01=False)  # an IP address has no sub-zone
            names += [n for n in csr.names if n not in names]
        except LecentralError as exc:
            report = NameReport(row.name)
            report.add("row", FAIL, f"row {row.name} is invalid: {exc}", f"fix it: lecentral show {row.name}")
            invalid.append(report)
    return names, invalid


def _render(reports: list[NameReport]) -> str:
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.name}: {report.status}" + (f" (zone {report.zone})" if report.zone else ""))
        for f in report.findings:
            lines.append(f"  {f.status:<4}  {f.check:<12}  {f.message}")
            if f.fix and f.status != "OK":
                lines.append(f"        {'':<12}  fix: {f.fix}")
    return "\n".join(lines)
