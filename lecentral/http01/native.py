"""The built-in ``webroot`` issuer: HTTP-01 through the site's webroot, no certbot needed.

For one certificate (a certbot='Y' row), in this order:

1. the row's ``webroot_path`` is validated and ``.well-known/acme-challenge/`` made ready in it;
   a wildcard name is refused (HTTP-01 cannot prove it);
2. with ``[http01] self_check`` (the default), a random probe file is written there and fetched
   for every name of the CSR, as the CA will fetch it: a webroot the web server does not serve is
   a clear error before any request to the CA;
3. the order is created (on the ACME client shared with the DNS-01 issuer: one account, one
   nonce pool), each pending http-01 challenge's key authorization is written as
   ``<token>`` (0644), and fetched once more for its name before the challenge is answered;
4. the authorizations are polled, the order finalized and the chain split into ``crt``/``ca``.

Whatever happens, every file written is removed, and the directories created for them too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lecentral.errors import IssueError
from lecentral.http01.webroot import ChallengeDirs, http01_names, webroot_of
from lecentral.interfaces import IssuedCertificate, Issuer

if TYPE_CHECKING:
    from acme import messages

    from lecentral.certificates import Csr
    from lecentral.config import CentralConfig
    from lecentral.http01.selfcheck import SiteChecker
    from lecentral.store.rows import CertRow
    from lecentral.types import IssuerContext

log = logging.getLogger(__name__)

NAME = "webroot"

#: what to do when the CA could not fetch a challenge file although our own check could
CA_HINT = ("the CA fetches http://NAME/.well-known/acme-challenge/TOKEN on port 80 from the "
           "internet (an IP address at that address itself): check the names' public A/AAAA "
           "records, firewalls and redirects")


def site_checker(config: CentralConfig) -> SiteChecker | None:
    """The self-check for ``[http01]``, or None when ``self_check = false``."""
    if not config.http01.self_check:
        return None
    from lecentral.http01.selfcheck import SiteChecker

    return SiteChecker(config.dns, config.http01.port)


def check_ip_identifiers(order: messages.OrderResource, ips: list[str]) -> None:
    """IssueError unless the order holds an ``ip`` identifier for each of ``ips`` (RFC 8738 §3):
    an acme library that ordered the DNS names alone would get a certificate without them."""
    from importlib.metadata import version

    from lecentral.certificates import ip_name

    ordered = {ip_name(str(i.value)) for i in order.body.identifiers if i.typ.name == "ip"}
    missing = [ip for ip in ips if ip not in ordered]
    if missing:
        raise IssueError(f"the order {order.uri} has no ip identifier for {', '.join(missing)}: "
                         f"the installed acme library ({version('acme')}) does not order IP "
                         "addresses (RFC 8738); upgrade it (pip install -U acme)")


class WebrootIssuer(Issuer):
    """Issues certificates by HTTP-01, writing the challenge files into the row's webroot."""

    def __init__(self, context: IssuerContext) -> None:
        self.config = context.config
        self.checker = site_checker(self.config)
        self.dirs = ChallengeDirs()
        # the run's client, made on first use: a pass with nothing due never talks to the CA
        self._acme = context.acme

    def issue(self, row: CertRow, csr: Csr) -> IssuedCertificate:
        from lecentral.certificates import split_fullchain

        webroot = webroot_of(row.name, row.webroot_path)
        names = http01_names(row.name, csr.names)
        with self.dirs.open(webroot) as files:
            if self.checker is not None:
                self.checker.probe(files, names)
            client = self._acme()
            order = client.new_order(csr.pem, names)
            log.info("%s: order %s created for %s", row.name, order.uri, ", ".join(names))
            check_ip_identifiers(order, csr.ips)
            pending = client.pending_challenges(order, "http-01")
            for challenge in pending:
                files.write(challenge.token, challenge.validation)
            if self.checker is not None:
                for challenge in pending:
                    self.checker.check(challenge.name, challenge.token, challenge.validation, webroot)
            for challenge in pending:
                client.answer(challenge)
            client.wait_authorizations(order, hint=CA_HINT)
        fullchain = client.finalize(order)
        crt, ca = split_fullchain(fullchain.encode("ascii"))
        return IssuedCertificate(crt=crt, ca=ca)

    def close(self) -> None:
        """Nothing of its own to close: the ACME client is the run's (IssuerContext.acme)."""
