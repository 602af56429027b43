"""``lecentral dns check``: prove a name's sub-zone works before asking a CA to validate it.

Each check yields a :class:`Finding` (OK, WARN or FAIL, with the fix). The checks, per name:
the zone and key that serve ``_acme-challenge.NAME``; every authoritative nameserver answering
with the primary's serial; the parent's delegation matching the zone's own NS set (no lame
server); a live add/see/delete/see-gone of a random TXT with the configured key; the
negative-caching TTL; and, when asked, what given resolvers see of the delegation.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from lecentral.config import DnsConfig
from lecentral.dns import update
from lecentral.dns.challenge import DnsChallenges, published_txt
from lecentral.dns.propagation import Nameserver, resolve_host, zone_nameservers
from lecentral.dns.wire import Server, ask, parse_server, rrset_at
from lecentral.dns.zones import ChallengeTarget, zone_text
from lecentral.errors import ConfigError, DnsError, LecentralError

log = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_RANK = {OK: 0, WARN: 1, FAIL: 2}
#: above this negative TTL a failed validation locks a name out for too long
MAX_NEGATIVE_TTL = 300


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: status, what was seen, and how to fix it."""

    check: str
    status: str
    message: str
    fix: str = ""


@dataclass
class NameReport:
    """Every finding for one certificate name."""

    name: str
    zone: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The worst status of the findings (FAIL if there are none: nothing was proven)."""
        return max((f.status for f in self.findings), key=_RANK.__getitem__, default=FAIL)

    def add(self, check: str, status: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, status, message, fix))


def worst(reports: list[NameReport]) -> str:
    """The worst status over several names."""
    return max((r.status for r in reports), key=_RANK.__getitem__, default=OK)


class SubZoneChecker:
    """Runs every check for names, against the servers of a ``[dns]`` config."""

    def __init__(self, dns: DnsConfig, resolvers: list[str] | None = None) -> None:
        self.dns = dns
        self.challenges = DnsChallenges(dns)
        self.locator = self.challenges.locator
        self.fixed = self.challenges.waiter.fixed
        self.resolvers = [parse_server(r, "resolver") for r in (resolvers if resolvers is not None
                                                                 else dns.check_resolvers)]

    def check(self, name: str) -> NameReport:
        """All the checks for ``name``; never raises for a DNS problem (it becomes a FAIL)."""
        report = NameReport(name)
        try:
            target = self.locator.locate(name)
        except LecentralError as exc:
            report.add("zone", FAIL, str(exc), _locate_fix(exc, name))
            return report
        report.zone = target.zone
        via = f" (via CNAME {' -> '.join(target.cname_chain)})" if target.cname_chain else ""
        report.add("zone", OK, f"_acme-challenge.{target.name.removeprefix('*.')} is served by zone "
                               f"{target.zone}{via} on {target.server}, key {target.key.name} from {target.key.source}")
        soa = self._soa(target, report)
        servers = self._nameservers(target, soa, report)
        self._delegation(target, servers, report)
        self._live_update(target, report)
        if soa is not None:
            self._negative_ttl(target, soa, report)
        for resolver in self.resolvers:
            self._resolver_view(target, resolver, servers, report)
        return report

    # ------------------------------------------------------------------ the checks

    def _soa(self, target: ChallengeTarget, report: NameReport) -> Any | None:
        try:
            response = ask(target.server, _abs(target.zone), "SOA")
        except DnsError as exc:
            report.add("nameservers", FAIL, str(exc), "start named on the primary, or fix [dns] server")
            return None
        return rrset_at(response.answer, _abs(target.zone), "SOA")

    def _nameservers(self, target: ChallengeTarget, soa: Any | None, report: NameReport) -> list[Nameserver]:
        if soa is None:
            return []
        try:
            servers = zone_nameservers(target.zone, target.server, self.locator.default_server,
                                       self.dns.port, self.fixed)
        except DnsError as exc:
            report.add("nameservers", FAIL, str(exc), "fix the NS records of the zone and their addresses")
            return []
        serial = soa[0].serial
        problems = []
        for ns in servers:
            got = _serial_on(ns.address, target.zone)
            if isinstance(got, str):
                problems.append(f"{ns}: {got}")
            elif got != serial:
                problems.append(f"{ns}: serial {got}, the primary has {serial}")
        listed = ", ".join(map(str, servers))
        if problems:
            report.add("nameservers", FAIL, "; ".join(problems),
                       f"a stale or lame nameserver makes validations fail at random: make it a secondary of "
                       f"{target.zone} that gets NOTIFY from the primary (also-notify, allow-transfer), then "
                       f"`rndc refresh {target.zone}` on it; or remove it from the NS records")
        else:
            report.add("nameservers", OK, f"every nameserver answers authoritatively with serial {serial}: {listed}")
        return servers

    def _delegation(self, target: ChallengeTarget, servers: list[Nameserver], report: NameReport) -> None:
        zone = target.zone
        own = {ns.host for ns in servers}
        if not own:
            return
        if "." not in zone:
            report.add("delegation", WARN, f"{zone} is a top-level zone; its delegation is not checked")
            return
        try:
            parent = self.locator.enclosing_zone(zone.split(".", 1)[1])
            parent_servers = zone_nameservers(parent, self.locator.server_for(parent),
                                              self.locator.default_server, self.dns.port, self.fixed)
        except LecentralError as exc:
            report.add("delegation", WARN, f"cannot check the parent's delegation of {zone}: {exc}",
                       "check it with --resolver, or set [dns] server to a server of the parent zone")
            return
        seen: dict[str, set[str]] = {}
        unknown = []
        for ns in parent_servers:
            delegated = _delegation_on(ns.address, parent, zone)
            if delegated is None:
                unknown.append(str(ns))
            else:
                seen[str(ns)] = delegated
        fix = (f"in zone {parent}: `{zone}. IN NS <host>.` for exactly the hosts of {zone}'s own NS records "
               f"({', '.join(sorted(own))}), no A record for {zone} there; bump the serial; rndc reload {parent}")
        bad = {where: d for where, d in seen.items() if d != own}
        if any(not d for d in bad.values()):
            missing = [w for w, d in bad.items() if not d]
            report.add("delegation", FAIL, f"no delegation of {zone} in zone {parent} on {', '.join(missing)}", fix)
        elif bad:
            shown = "; ".join(f"{w} delegates to {', '.join(sorted(d))}" for w, d in sorted(bad.items()))
            report.add("delegation", FAIL, f"the delegation differs from {zone}'s own NS set "
                                           f"({', '.join(sorted(own))}): {shown}", fix)
        lame = self._lame(zone, set().union(*seen.values()) - own)
        if lame:
            report.add("delegation", FAIL, f"lame delegation: {'; '.join(lame)}", fix)
        if not bad and not lame:
            if seen:
                report.add("delegation", OK, f"zone {parent} delegates {zone} to {', '.join(sorted(own))}")
            if unknown:
                report.add("delegation", WARN, f"cannot see the delegation on {', '.join(unknown)} (it serves "
                           f"{zone} itself and refuses AXFR of {parent})",
                           f"check `{zone}. IN NS` in {parent}'s zone file by hand, or use --resolver")

    def _lame(self, zone: str, hosts: set[str]) -> list[str]:
        """Problems of delegated hosts that are not in the zone's own NS set."""
        problems = []
        for host in sorted(hosts):
            address = self.fixed.get(host)
            if address is None:
                found = resolve_host(_abs(host), [self.locator.default_server])
                address = Server(min(found), self.dns.port) if found else None
            if address is None:
                problems.append(f"{host} has no address")
                continue
            got = _serial_on(address, zone)
            if isinstance(got, str):
                problems.append(f"{host} ({address}) {got}")
        return problems

    def _live_update(self, target: ChallengeTarget, report: NameReport) -> None:
        value = f"lecentral-check-{secrets.token_hex(8)}"
        try:
            update.add_txt(target, value)
        except DnsError as exc:
            report.add("update", FAIL, *_with_fix(str(exc)))
            return
        record = published_txt(target, value)
        try:
            self.challenges.wait_propagated([record])
            update.delete_txt(target, value)
            self.challenges.wait_removed([record])
        except DnsError as exc:
            self.challenges.remove(record)
            report.add("update", FAIL, *_with_fix(f"test TXT {value!r} at {target.fqdn}: {exc}"))
            return
        report.add("update", OK, f"key {target.key.name} added a test TXT at {target.fqdn}, every nameserver "
                                 f"served it, and it was deleted everywhere")

    def _negative_ttl(self, target: ChallengeTarget, soa: Any, report: NameReport) -> None:
        negative = min(soa[0].minimum, soa.ttl)
        if negative > MAX_NEGATIVE_TTL:
            report.add("negative-ttl", WARN,
                       f"negative TTL {negative} s ({_duration(negative)}, min of SOA minimum {soa[0].minimum} and "
                       f"SOA TTL {soa.ttl}): a validation that fails once is cached as 'no such record' by the "
                       f"CA's resolvers for that long",
                       f"set the SOA minimum (last SOA field) of {target.zone} to {MAX_NEGATIVE_TTL} or less: "
                       f"rndc freeze {target.zone}; edit it and bump the serial; rndc thaw {target.zone}")
        else:
            report.add("negative-ttl", OK, f"negative TTL {negative} s")

    def _resolver_view(self, target: ChallengeTarget, resolver: Server, servers: list[Nameserver],
                       report: NameReport) -> None:
        own = {ns.host for ns in servers}
        try:
            response = ask(resolver, _abs(target.zone), "NS", recursion=True)
        except DnsError as exc:
            report.add("resolver", WARN, str(exc), "check the resolver address, or try again later")
            return
        rrset = rrset_at(response.answer, _abs(target.zone), "NS")
        seen = {zone_text(r.target) for r in rrset} if rrset is not None else set()
        if seen == own:
            report.add("resolver", OK, f"resolver {resolver} sees {target.zone} NS {', '.join(sorted(seen))}")
        else:
            report.add("resolver", WARN, f"resolver {resolver} sees {target.zone} NS "
                                         f"{', '.join(sorted(seen)) or '(nothing)'}, not {', '.join(sorted(own))}",
                       "wait for cached answers to expire (up to the parent's NS TTL), then check again; "
                       "issue only once every resolver agrees")


# ----------------------------------------------------------------------- helpers


#: where an update error's explanation ends and its remedy begins: "... (BADSIG: ...). Copy ..."
_REMEDY = re.compile(r"\. (?=[A-Z])")
#: the ``fix:`` of an update error that names no remedy of its own
UPDATE_FIX = ("fix what the message names (named's log on the server says why it refused), then "
              "check again")


def _with_fix(error: str) -> tuple[str, str]:
    """(message, fix) of an update error: the update errors (lecentral/dns/update.py) say their
    remedy as their last sentences, after what went wrong; ``dns check`` prints it on its
    ``fix:`` line, as for every other problem, not twice."""
    found = _REMEDY.search(error)
    if found is None:
        return error, UPDATE_FIX
    remedy = error[found.end():]
    return error[:found.start()], remedy[0].lower() + remedy[1:]


def _locate_fix(exc: LecentralError, name: str) -> str:
    """What to do when the zone of ``name`` could not be found, by what went wrong: a key file
    or setting is fixed where the error points, never by making a sub-zone."""
    error = str(exc)
    if isinstance(exc, ConfigError):  # a key file or a [dns] setting, not a missing zone
        return ("fix the key file or the setting the error names (TSIG keys: docs/dns.md, \"The "
                "TSIG key\"), then check again")
    if any(word in error for word in ("unreachable", "timed out", "Connection refused",
                                      "cannot resolve")):
        return "check that the DNS server of [dns] server is up and reachable from this host"
    bare = name.removeprefix("*.")
    if "serves no zone enclosing" in error:
        return ("point [dns] server at the primary of the zone above " + bare + "; if that zone "
                "is on no server lecentral may update, create a sub-zone for it on one with "
                f"`lecentral dns zone {bare} --ns HOST` and delegate it")
    return f"create the sub-zone with `lecentral dns zone {bare}` and load it"


def _abs(zone: str) -> Any:
    import dns.name

    return dns.name.from_text(zone + ".")


def _serial_on(server: Server, zone: str) -> int | str:
    """The SOA serial ``server`` serves for ``zone``, or why it serves none authoritatively."""
    import dns.flags

    try:
        response = ask(server, _abs(zone), "SOA")
    except DnsError:
        return "does not answer"
    rrset = rrset_at(response.answer, _abs(zone), "SOA")
    if not response.flags & dns.flags.AA or rrset is None:
        return "does not serve the zone authoritatively (lame)"
    return int(rrset[0].serial)


def _delegation_on(server: Server, parent: str, zone: str) -> set[str] | None:
    """NS hosts ``server`` delegates ``zone`` to from ``parent``; None if it cannot be seen.

    A server of the parent that also serves the child answers NS queries from the child, so the
    delegation is then read from a zone transfer of the parent, when the server allows it.
    """
    import dns.flags

    try:
        response = ask(server, _abs(zone), "NS")
    except DnsError:
        return None
    authority = rrset_at(response.authority, _abs(zone), "NS")
    if not response.flags & dns.flags.AA and authority is not None:
        return {zone_text(r.target) for r in authority}  # a referral: the delegation itself
    if rrset_at(response.answer, _abs(zone), "NS") is None:
        return set()  # the parent answers for the name itself: no delegation
    return _delegation_by_axfr(server, parent, zone)


def _delegation_by_axfr(server: Server, parent: str, zone: str) -> set[str] | None:
    import dns.query

    try:
        hosts: set[str] = set()
        for message in dns.query.xfr(server.host, parent + ".", port=server.port, relativize=False,
                                     timeout=5.0, lifetime=20.0):
            # a transfer may split one RRset over several entries: collect them all
            hosts |= {zone_text(r.target) for rrset in message.answer
                      if rrset.rdtype == 2 and rrset.name == _abs(zone) for r in rrset}
        return hosts
    except Exception as exc:  # noqa: BLE001  refused or broken transfer: the delegation stays unknown
        log.debug("AXFR of %s from %s: %s", parent, server, exc)
        return None


def _duration(seconds: int) -> str:
    return f"{seconds / 3600:g} hours" if seconds >= 3600 else f"{seconds / 60:g} minutes"
