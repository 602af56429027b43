"""The built-in ``dns-subzone`` issuer: ACME DNS-01 with TXT records in per-name BIND sub-zones.

For one certificate, in this order (the order is the point: a validation the CA tries too early is
a failure that the world's resolvers cache, the seed's "lost day"):

1. every name of the stored CSR (CN and SANs) is located: the zone serving its
   ``_acme-challenge`` (CNAMEs followed) and that zone's key; once per zone and pass, a test
   update proves the key may write there, so a refused key fails before any CA request;
2. the order is created for all those names;
3. each pending dns-01 challenge's TXT is added (never replacing: a wildcard and its apex share
   one name);
4. the issuer waits until every authoritative nameserver of every zone serves every value;
5. only then are the challenges answered, the authorizations polled, the order finalized and the
   chain downloaded, and split into leaf (``crt``) and CA chain (``ca``).

Whatever happens, every TXT added is removed (if this process is killed, by the next run, from
the journal that noted it before it was added: lecentral/journal.py). Any failure before step 5
means no challenge was answered, so the CA has nothing to cache. The private key is never needed: the CSR is all we send.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.phases import phase
from lecentral.types import IssuerContext, IssuerType

if TYPE_CHECKING:
    from lecentral.acme.client import PendingChallenge
    from lecentral.certificates import Csr
    from lecentral.dns.challenge import DnsChallenges, PublishedTxt
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

NAME = "dns-subzone"


class ZoneChecks:
    """The once-per-zone-and-pass update-permission test, shared by the workers of a pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zone_locks: dict[str, threading.Lock] = {}
        self._results: dict[str, Exception | None] = {}

    def reset(self) -> None:
        """Forget every result: a new pass tests each zone again."""
        with self._lock:
            self._results.clear()

    def check(self, dns: DnsChallenges, name: str) -> None:
        """Raise the zone's DnsError if its key may not update ``_acme-challenge.name``."""
        zone = dns.locate(name).zone
        with self._lock:
            zone_lock = self._zone_locks.setdefault(zone, threading.Lock())
        with zone_lock:  # a second worker for the same zone waits for the first one's answer
            if zone not in self._results:
                try:
                    dns.check_update_permission(name)
                    self._results[zone] = None
                except Exception as exc:  # noqa: BLE001 - kept, and raised for every name of the zone
                    self._results[zone] = exc
            error = self._results[zone]
        if error is not None:
            raise error


class DnsSubzoneIssuer(Issuer):
    """Issues certificates by DNS-01, publishing TXT records through RFC 2136 + TSIG."""

    #: each certificate's TXT records are in its own sub-zone, the zone checks and the ACME
    #: client are per process: a worker process may issue its share with its own copy
    processes_safe = True

    def __init__(self, context: IssuerContext) -> None:
        self.config = context.config
        self.context = context
        self._lock = threading.Lock()
        self._dns: DnsChallenges | None = None
        self.zone_checks = ZoneChecks()

    # Built on first use, not in the factory: a dry run or a pass with nothing due never reads a
    # key file; the ACME client is asked for only once the zones passed (no CA request before).
    def _dns_part(self) -> DnsChallenges:
        with self._lock:
            if self._dns is None:
                from lecentral.dns.challenge import DnsChallenges

                self._dns = DnsChallenges(self.config.dns, self.context.secret)
            return self._dns

    def begin_pass(self) -> None:
        """Each pass tests each zone again and looks zones and nameservers up again (a retry
        round an hour later sees what the admin fixed meanwhile)."""
        self.zone_checks.reset()
        with self._lock:
            dns = self._dns
        if dns is not None:
            dns.forget()

    def issue(self, row: CertRow, csr: Csr) -> IssuedCertificate:
        from lecentral.certificates import split_fullchain

        dns = self._dns_part()
        names = csr.names
        with phase("dns_check"):
            for name in names:
                self.zone_checks.check(dns, name)
        client = self.context.acme()  # the first request to the CA comes after the zone checks
        with phase("order"):
            order = client.new_order(csr.pem, names)
        log.info("%s: order %s created for %s", row.name, order.uri, ", ".join(names))
        published: list[PublishedTxt] = []
        try:
            pending = client.pending_challenges(order, "dns-01")
            with phase("dns_publish"):
                for challenge in pending:
                    published.append(dns.publish(_ordered_name(challenge), challenge.validation))
            with phase("propagation"):
                dns.wait_propagated(published)
            with phase("validation"):
                for challenge in pending:
                    client.answer(challenge)
                client.wait_authorizations(order)
            with phase("finalize"):
                fullchain = client.finalize(order)
        finally:
            with phase("dns_remove"):
                for record in published:
                    dns.remove(record)
        crt, ca = split_fullchain(fullchain.encode("ascii"))
        return IssuedCertificate(crt=crt, ca=ca)

    def close(self) -> None:
        """Nothing of its own to close: the ACME client is the run's (IssuerContext.acme)."""


def _ordered_name(challenge: PendingChallenge) -> str:
    """The certificate name a challenge proves: ``*.x`` for a wildcard authorization of ``x``."""
    return f"*.{challenge.name}" if challenge.wildcard else challenge.name


@hookimpl
def lecentral_register_issuers() -> list[IssuerType]:
    return [IssuerType(
        name=NAME, factory=DnsSubzoneIssuer,
        description="ACME DNS-01: TXT records in per-name BIND sub-zones via RFC 2136 + TSIG",
    )]
