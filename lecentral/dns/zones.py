"""Where a DNS-01 TXT record goes: the zone serving ``_acme-challenge.NAME``, its primary, its key.

The zone is found by asking the configured primary for the SOA, walking up from the challenge
name (a CNAME on ``_acme-challenge.NAME`` is followed first, so the challenge can be delegated
into another zone). ``[dns.zones."ZONE"]`` overrides the primary and key of one zone; a name at
or below such a zone is looked up on that zone's server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lecentral.config import DnsConfig
from lecentral.dns.tsig import KeyFiles, TsigKey
from lecentral.dns.wire import Server, ask, resolve_server, rrset_at
from lecentral.errors import ConfigError, DnsError

CHALLENGE_LABEL = "_acme-challenge"
#: CNAME hops followed from _acme-challenge.NAME before giving up (loops are caught earlier)
MAX_CNAME_HOPS = 8

_HOSTNAME = re.compile(r"^(\*\.)?(?=.{1,253}$)([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def clean_name(name: str) -> str:
    """``name`` lower-cased, without trailing dot; DnsError unless a host name or ``*.name``.

    Names come from the database: a stray space or quote must not reach a DNS message.
    """
    clean = name.strip().lower().rstrip(".")
    if not _HOSTNAME.match(clean):
        raise DnsError(f"{name!r} is not a valid DNS name for a certificate (letters, digits, '-', "
                       f"dots, an optional leading '*.')")
    return clean


def challenge_name(name: str) -> str:
    """``_acme-challenge.BASE.`` for ``name`` (``*.x`` and ``x`` share ``_acme-challenge.x.``)."""
    clean = clean_name(name)
    base = clean.removeprefix("*.")
    return f"{CHALLENGE_LABEL}.{base}."


def zone_text(name: Any) -> str:
    """A dnspython name as text without the trailing dot (how zones appear in config and logs)."""
    return str(name.to_text(omit_final_dot=True)).lower()


@dataclass(frozen=True)
class ChallengeTarget:
    """Where the TXT proving ``name`` is written: record name, zone, primary and key."""

    name: str
    fqdn: str
    zone: str
    server: Server
    key: TsigKey
    cname_chain: tuple[str, ...] = ()


class ZoneLocator:
    """Finds the :class:`ChallengeTarget` of certificate names from a ``[dns]`` config."""

    def __init__(self, dns: DnsConfig, keys: KeyFiles | None = None) -> None:
        self.dns = dns
        self.keys = keys or KeyFiles()
        self.default_server = resolve_server(dns.server, "[dns] server")
        self.overrides = {z.lower().rstrip("."): conf for z, conf in dns.zones.items()}
        self._override_servers = {
            zone: resolve_server(conf.server, f'[dns.zones."{zone}"] server')
            for zone, conf in self.overrides.items() if conf.server
        }

    # ------------------------------------------------------------ servers and keys

    def server_for(self, zone: str) -> Server:
        """The primary updates for ``zone`` go to."""
        return self._override_servers.get(zone, self.default_server)

    def _lookup_server(self, name: Any) -> Server:
        """The server to ask about ``name``: the nearest enclosing overridden zone's, else [dns] server."""
        for zone, server in sorted(self._override_servers.items(), key=lambda kv: -len(kv[0])):
            if name == _name(zone) or name.is_subdomain(_name(zone)):
                return server
        return self.default_server

    def key_for(self, zone: str) -> TsigKey:
        """The TSIG key for ``zone``: its override's key file or key name, else ``[dns]``'s."""
        conf = self.overrides.get(zone)
        if conf is not None and conf.tsig_key_file:
            return self.keys.pick(conf.tsig_key_file, conf.tsig_key_name, zone, f'[dns.zones."{zone}"]')
        key_name = (conf.tsig_key_name if conf is not None else "") or self.dns.tsig_key_name
        if not self.dns.tsig_key_file:
            raise ConfigError(f"no TSIG key configured for zone {zone}: set [dns] tsig_key_file or "
                              f'[dns.zones."{zone}"] tsig_key_file (a BIND key file, see `lecentral dns zone`)')
        setting = f'[dns.zones."{zone}"]' if conf is not None and conf.tsig_key_name else "[dns]"
        return self.keys.pick(self.dns.tsig_key_file, key_name, zone, setting, "[dns] tsig_key_file")

    # ------------------------------------------------------------------- lookup

    def locate(self, name: str) -> ChallengeTarget:
        """The zone, primary and key that serve the TXT proving certificate name ``name``."""
        import dns.name

        clean = clean_name(name)
        fqdn = dns.name.from_text(challenge_name(clean))
        chain: list[str] = []
        for _ in range(MAX_CNAME_HOPS + 1):
            zone, target = self._zone_or_cname(fqdn)
            if target is None:
                assert zone is not None
                zone_name = zone_text(zone)
                if not chain:
                    self._own_zone(clean, zone_name)
                return ChallengeTarget(clean, fqdn.to_text(), zone_name, self.server_for(zone_name),
                                       self.key_for(zone_name), tuple(chain))
            chain.append(fqdn.to_text())
            if target.to_text() in chain:
                raise DnsError(f"CNAME loop at {chain[0]}: {' -> '.join(chain + [target.to_text()])}")
            fqdn = target
        raise DnsError(f"more than {MAX_CNAME_HOPS} CNAMEs from {chain[0]}: {' -> '.join(chain)}")

    def _own_zone(self, name: str, zone: str) -> None:
        """Refuse a challenge that would go into a zone holding other names (the hand-edited
        parent): the seed's rule, one small dynamic sub-zone per name, so that BIND never rewrites
        a zone file a human edits. A zone the operator names in ``[dns.zones."ZONE"]`` is taken
        as meant for dynamic updates; a CNAME into another zone is a deliberate delegation."""
        base = name.removeprefix("*.").lower()
        key = zone.rstrip(".").lower()
        if key in (base, f"_acme-challenge.{base}") or key in self.overrides:
            return
        raise DnsError(
            f"{name} has no sub-zone of its own: _acme-challenge.{base} is in zone {key}, which "
            f"holds other names; lecentral sends no dynamic update into such a zone (BIND would "
            f"rewrite its hand-edited zone file). Create the sub-zone with `lecentral dns zone "
            f"{base}` (docs/dns.md), or, if {key} is meant to take dynamic updates, name it in "
            f'the configuration as [dns.zones."{key}"]')

    def enclosing_zone(self, name: str) -> str:
        """The zone (on the configured servers) that holds ``name``; CNAMEs are not followed."""
        import dns.name

        zone, _ = self._zone_or_cname(dns.name.from_text(name.rstrip(".") + "."), follow_cname=False)
        assert zone is not None
        return zone_text(zone)

    def _zone_or_cname(self, fqdn: Any, *, follow_cname: bool = True) -> tuple[Any | None, Any | None]:
        """(zone, None) for the zone holding ``fqdn``, or (None, target) if ``fqdn`` is a CNAME."""
        import dns.rcode

        candidate = fqdn
        while True:
            server = self._lookup_server(candidate)
            response = ask(server, candidate, "SOA")
            rcode = response.rcode()
            if rcode == dns.rcode.REFUSED:
                # no advice to create a sub-zone here: `lecentral dns zone` itself asks this (for
                # the parent), and its callers say what fits them
                asked = "" if candidate == fqdn else f" (asked about {zone_text(candidate)})"
                raise DnsError(f"DNS server {server} refused to answer for {zone_text(fqdn)}{asked}: it "
                               f"serves no zone enclosing it; point [dns] server (or a "
                               f"[dns.zones.\"ZONE\"] server) at the primary that serves it")
            if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                raise DnsError(f"DNS server {server} answered {dns.rcode.to_text(rcode)} for {candidate} SOA; "
                               f"see its log (zone not loaded?)")
            if follow_cname and candidate == fqdn:
                cname = rrset_at(response.answer, fqdn, "CNAME")
                if cname is not None:
                    return None, cname[0].target
            found = self._zone_from(response, candidate, server)
            if found is not None:
                return found, None
            if len(candidate) <= 1:
                raise DnsError(f"no zone found for {fqdn} on DNS server {server}")
            candidate = candidate.parent()

    @staticmethod
    def _zone_from(response: Any, candidate: Any, server: Server) -> Any | None:
        import dns.flags

        if rrset_at(response.answer, candidate, "SOA") is not None:
            return candidate
        authoritative = bool(response.flags & dns.flags.AA)
        for rrset in response.authority:
            if rrset.rdtype == 6 and authoritative and candidate.is_subdomain(rrset.name):
                return rrset.name  # NODATA/NXDOMAIN carry the enclosing zone's SOA
            if rrset.rdtype == 2 and not authoritative and candidate.is_subdomain(rrset.name):
                delegated = zone_text(rrset.name)
                servers = ", ".join(sorted(zone_text(r.target) for r in rrset))
                raise DnsError(
                    f"DNS server {server} is not authoritative for {delegated} (it delegates it to {servers}); "
                    f"updates must go to that zone's primary: set [dns.zones.\"{delegated}\"] server = \"IP:PORT\"")
        return None


def _name(text: str) -> Any:
    import dns.name

    return dns.name.from_text(text)
