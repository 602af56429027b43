"""Waiting until every authoritative nameserver of a zone serves a TXT value.

The CA may ask any of the zone's nameservers; if one of them still lacks the record, the
validation fails and resolvers cache that failure for the SOA minimum. So each NS of the zone is
asked directly (no recursion, by its address, on ``[dns] port``) until all of them answer
authoritatively with the exact value.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from lecentral.dns.wire import Server, ask, rrset_at, txt_strings
from lecentral.errors import DnsError

log = logging.getLogger(__name__)

#: first pause between two rounds of queries; doubled each round up to [dns] propagation_interval
FIRST_PAUSE = 0.05


@dataclass(frozen=True, order=True)
class Nameserver:
    """One authoritative server of a zone: its NS host name and one of its addresses."""

    host: str
    address: Server

    def __str__(self) -> str:
        return f"{self.host} ({self.address})"


@dataclass(frozen=True)
class Expected:
    """A TXT value that must be visible at ``fqdn`` in ``zone`` (whose primary is ``primary``)."""

    fqdn: str
    value: str
    zone: str
    primary: Server


def zone_nameservers(zone: str, primary: Server, resolver: Server, port: int,
                     fixed: dict[str, Server] | None = None,
                     hosts: dict[str, set[str]] | None = None) -> list[Nameserver]:
    """Every (NS host, address) of ``zone``: NS asked of the primary, addresses from glue or ``resolver``.

    ``port`` is where the nameservers are asked (53 in production). ``fixed`` maps NS host names
    (no trailing dot) to the address to use instead (``[dns] nameserver_addresses``). DnsError if
    the zone has no NS or an NS host has no address: an unchecked nameserver is exactly the one
    the CA will ask. ``hosts``, if given, keeps the addresses of NS hosts without glue, so the
    sub-zones sharing one nameserver cost one lookup of it.
    """
    import dns.name

    origin = dns.name.from_text(zone + ".")
    response = ask(primary, origin, "NS")
    ns_rrset = rrset_at(response.answer, origin, "NS")
    if ns_rrset is None:
        raise DnsError(f"zone {zone} has no NS records on {primary}; add `@ IN NS <nameserver>.` to its zone file")
    servers: list[Nameserver] = []
    for host in sorted({rdata.target for rdata in ns_rrset}):
        host_text = host.to_text(omit_final_dot=True).lower()
        if fixed and host_text in fixed:
            servers.append(Nameserver(host_text, fixed[host_text]))
            continue
        addresses = {rdata.address for rrset in response.additional
                     if rrset.name == host and rrset.rdtype in (1, 28) for rdata in rrset}
        if not addresses and hosts is not None and host_text in hosts:
            addresses = hosts[host_text]
        if not addresses:
            addresses = resolve_host(host, [resolver, primary])
            if addresses and hosts is not None:
                hosts[host_text] = addresses
        if not addresses:
            raise DnsError(f"nameserver {host.to_text()} of zone {zone} has no A/AAAA record visible from "
                           f"{resolver}; add its address (glue) so it can be checked")
        servers += [Nameserver(host_text, Server(a, port)) for a in sorted(addresses)]
    return servers


def resolve_host(host: Any, via: list[Server]) -> set[str]:
    """A and AAAA of ``host`` from the first server of ``via`` that knows them."""
    for server in dict.fromkeys(via):
        found: set[str] = set()
        for rdtype in ("A", "AAAA"):
            try:
                response = ask(server, host, rdtype, recursion=True)
            except DnsError as exc:
                log.debug("resolving %s: %s", host, exc)
                continue
            rrset = rrset_at(response.answer, host, rdtype)
            found |= {rdata.address for rdata in rrset} if rrset is not None else set()
        if found:
            return found
    return set()


def missing_on(nameserver: Nameserver, expected: Expected, timeout: float) -> str | None:
    """Why ``nameserver`` does not (yet) serve ``expected`` authoritatively, or None if it does."""
    import dns.flags
    import dns.name

    qname = dns.name.from_text(expected.fqdn)
    try:
        response = ask(nameserver.address, qname, "TXT", timeout=timeout)
    except DnsError:
        return "no answer"
    if not response.flags & dns.flags.AA:
        return "answers but is not authoritative (lame)"
    if expected.value not in txt_strings(rrset_at(response.answer, qname, "TXT")):
        return f"lacks TXT {expected.value!r} at {expected.fqdn}"
    return None


def absent_on(nameserver: Nameserver, fqdn: str, value: str, timeout: float) -> str | None:
    """Why ``nameserver`` still serves ``value`` at ``fqdn`` (or cannot tell), or None once it is gone."""
    import dns.name

    qname = dns.name.from_text(fqdn)
    try:
        response = ask(nameserver.address, qname, "TXT", timeout=timeout)
    except DnsError:
        return "no answer"
    if value in txt_strings(rrset_at(response.answer, qname, "TXT")):
        return f"still serves TXT {value!r} at {fqdn}"
    return None


class PropagationWaiter:
    """Polls the nameservers of the zones of some TXT records until all serve them, or times out."""

    def __init__(self, resolver: Server, port: int, timeout: float, interval: float,
                 fixed: dict[str, Server] | None = None) -> None:
        self.resolver = resolver
        self.port = port
        self.fixed = fixed or {}
        self.timeout = timeout
        self.interval = max(interval, 0.01)
        self._lock = threading.Lock()
        self._nameservers: dict[tuple[str, Server], list[Nameserver]] = {}
        self._hosts: dict[str, set[str]] = {}  # NS host -> addresses, when not in glue

    def wait(self, records: list[Expected], *, present: bool = True) -> None:
        """Block until every record is served (or, with ``present=False``, gone) on every NS.

        On timeout: DnsError listing each lagging server and what it lacked.
        """
        deadline = time.monotonic() + self.timeout
        pending = self._pairs(records)
        reasons: dict[tuple[Nameserver, Expected], str] = {}
        pause = min(FIRST_PAUSE, self.interval)
        while True:
            for pair in list(pending):
                remaining = max(0.2, min(3.0, deadline - time.monotonic()))
                nameserver, expected = pair
                why = (missing_on(nameserver, expected, remaining) if present
                       else absent_on(nameserver, expected.fqdn, expected.value, remaining))
                if why is None:
                    pending.discard(pair)
                else:
                    reasons[pair] = why
            if not pending:
                return
            if time.monotonic() + pause > deadline:
                raise DnsError(self._timeout_message(pending, reasons, present))
            time.sleep(pause)
            # a secondary usually catches up within milliseconds of the NOTIFY: ask again soon,
            # then back off to the configured interval so a slow one is not hammered
            pause = min(pause * 2, self.interval)

    def _pairs(self, records: list[Expected]) -> set[tuple[Nameserver, Expected]]:
        pairs: set[tuple[Nameserver, Expected]] = set()
        for record in records:
            pairs |= {(ns, record) for ns in self.nameservers(record.zone, record.primary)}
        return pairs

    def nameservers(self, zone: str, primary: Server) -> list[Nameserver]:
        """The zone's nameservers, asked once until :meth:`forget` (one renew pass, one
        command): the NS set of a zone does not change between its certificates, and asking
        again cost one to three queries per certificate. An error is not kept: the next wait
        asks again."""
        key = (zone, primary)
        with self._lock:
            known = self._nameservers.get(key)
        if known is None:
            known = zone_nameservers(zone, primary, self.resolver, self.port, self.fixed,
                                     self._hosts)
            with self._lock:
                self._nameservers[key] = known
        return known

    def forget(self) -> None:
        """Forget the nameservers and their addresses: the next wait asks again."""
        with self._lock:
            self._nameservers.clear()
            self._hosts.clear()

    def _timeout_message(self, pending: set[tuple[Nameserver, Expected]], reasons: dict[Any, str],
                         present: bool) -> str:
        lagging = sorted({str(ns) for ns, _ in pending})
        details = "; ".join(sorted({f"{ns}: {reasons.get((ns, exp), 'not checked')} (zone {exp.zone})"
                                    for ns, exp in pending}))
        what = "serving the new TXT records" if present else "dropping the removed TXT records"
        return (f"nameservers still not {what} after {self.timeout:g}s: {', '.join(lagging)}. {details}. "
                f"The challenge was not answered, so no resolver cached a failure. Check that these "
                f"servers get NOTIFY and zone transfers from the primary (rndc notify ZONE; on a secondary "
                f"rndc refresh ZONE), or raise [dns] propagation_timeout")
