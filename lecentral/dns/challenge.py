"""The DNS side of DNS-01, as the issuer uses it: publish, wait until served everywhere, remove.

::

    challenges = DnsChallenges(config.dns)
    records = [challenges.publish(name, value) for name, value in wanted]
    try:
        challenges.wait_propagated(records)     # only then answer the ACME challenges
        ...
    finally:
        for record in records:
            challenges.remove(record)           # never raises: a failure is a leftover

Safe to share between threads: the shared state (the key-file cache, the zones found, the
nameservers of each zone) is locked.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lecentral import journal, leftovers
from lecentral.config import DnsConfig
from lecentral.dns import update
from lecentral.dns.propagation import Expected, PropagationWaiter
from lecentral.dns.tsig import KeyFiles
from lecentral.dns.wire import parse_server
from lecentral.dns.zones import ChallengeTarget, ZoneLocator
from lecentral.errors import LecentralError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedTxt:
    """One TXT record lecentral added (never holds the TSIG secret)."""

    name: str       # the certificate name it proves ("*.a.example.test" or "a.example.test")
    fqdn: str       # where the TXT is, after following CNAMEs ("_acme-challenge.a.example.test.")
    zone: str       # the zone updated ("a.example.test")
    server: str     # "host:port" of the primary updated
    key_name: str   # TSIG key name used
    value: str      # the TXT value


class DnsChallenges:
    """Publishes and removes ``_acme-challenge`` TXT records through RFC 2136 with TSIG."""

    def __init__(self, dns: DnsConfig, on_secret: Callable[[str], None] | None = None) -> None:
        self.dns = dns
        self.keys = KeyFiles(on_secret)
        self.locator = ZoneLocator(dns, self.keys)
        self._lock = threading.Lock()
        self._located: dict[str, ChallengeTarget] = {}
        fixed = {host.lower().rstrip("."): parse_server(address, f'[dns.nameserver_addresses] "{host}"', dns.port)
                 for host, address in dns.nameserver_addresses.items()}
        self.waiter = PropagationWaiter(self.locator.default_server, dns.port,
                                        dns.propagation_timeout, dns.propagation_interval, fixed)

    def locate(self, name: str) -> ChallengeTarget:
        """Where the TXT for ``name`` would go (zone, primary, key), without changing anything.

        Found once until :meth:`forget` (the issuer calls it at the start of every renew pass):
        the zone test, the publish and the removal of one certificate then use the same zone,
        and a certificate costs one SOA lookup (or a few, through CNAMEs) instead of three. An
        error is not kept."""
        key = name.strip().lower()
        with self._lock:
            known = self._located.get(key)
        if known is None:
            known = self.locator.locate(name)
            with self._lock:
                self._located[key] = known
        return known

    def forget(self) -> None:
        """Forget the zones found and the nameservers asked: the next lookups ask the servers
        again (a retry round an hour later sees a sub-zone or CNAME made meanwhile)."""
        with self._lock:
            self._located.clear()
        self.waiter.forget()

    def publish(self, name: str, value: str) -> PublishedTxt:
        """Add TXT ``value`` at ``_acme-challenge`` of ``name`` (added beside any other value)."""
        target = self.locate(name)
        record = published_txt(target, value)
        # noted first: a process killed between the add and the removal leaves it noted
        journal.note_added(leftovers.DNS_TXT, dataclasses.asdict(record))
        update.add_txt(target, value)
        log.info("added TXT %s %r in zone %s on %s (key %s)", target.fqdn, value, target.zone,
                 target.server, target.key.name)
        return record

    def wait_propagated(self, records: list[PublishedTxt]) -> None:
        """Return once every authoritative NS of each record's zone serves its value; else DnsError."""
        if records:
            self.waiter.wait([self._expected(r) for r in records])
            log.info("TXT records served by every authoritative nameserver: %s",
                     ", ".join(sorted({r.fqdn for r in records})))

    def wait_removed(self, records: list[PublishedTxt]) -> None:
        """Return once no authoritative NS serves these values any more; else DnsError."""
        if records:
            self.waiter.wait([self._expected(r) for r in records], present=False)

    def delete(self, record: PublishedTxt) -> None:
        """Delete exactly ``record.value`` at ``record.fqdn``; DnsError if the server refuses."""
        update.delete_txt(self._target(record), record.value)

    def remove(self, record: PublishedTxt) -> bool:
        """Delete ``record`` and return True; on failure return False, never raise.

        A failure is reported to :mod:`lecentral.leftovers` (logged with the manual fix and, in a
        renew run, stored so that the next run removes it): cleanup runs in ``finally`` blocks,
        where raising would mask the real error.
        """
        try:
            self.delete(record)
        except Exception as exc:  # noqa: BLE001  see the docstring
            error = str(exc) if isinstance(exc, LecentralError) else f"unexpected {type(exc).__name__}: {exc}"
            leftovers.report(leftovers.DNS_TXT, record.fqdn, dataclasses.asdict(record), error)
            return False
        journal.note_removed(leftovers.DNS_TXT, {"fqdn": record.fqdn, "value": record.value})
        log.info("removed TXT %s %r from zone %s", record.fqdn, record.value, record.zone)
        return True

    def check_update_permission(self, name: str) -> PublishedTxt:
        """Add and delete a random TXT for ``name`` with its key, in one UPDATE message (nothing
        stays behind, whatever happens); DnsError if the server refuses it.

        Returns the (never kept) test record, so a caller can say where it went.
        """
        target = self.locate(name)
        value = f"lecentral-check-{secrets.token_hex(8)}"
        update.probe_txt(target, value)
        return published_txt(target, value)

    # ------------------------------------------------------------------ helpers

    def _expected(self, record: PublishedTxt) -> Expected:
        return Expected(record.fqdn, record.value, record.zone, parse_server(record.server, "record server"))

    def _target(self, record: PublishedTxt) -> ChallengeTarget:
        """The target a published record was written to, with the key configured for its zone."""
        key = self.locator.key_for(record.zone)
        if key.name != record.key_name:
            log.warning("zone %s: key changed from %s to %s since the TXT was added", record.zone,
                        record.key_name, key.name)
        return ChallengeTarget(record.name, record.fqdn, record.zone,
                               parse_server(record.server, "record server"), key)


def published_txt(target: ChallengeTarget, value: str) -> PublishedTxt:
    """The record that adding ``value`` at ``target`` made."""
    return PublishedTxt(name=target.name, fqdn=target.fqdn, zone=target.zone, server=str(target.server),
                        key_name=target.key.name, value=value)
