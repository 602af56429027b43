"""Registers the HTTP-01 issuers for certbot='Y' rows: ``certbot-webroot`` and ``webroot``.

The issuers live in :mod:`lecentral.http01`; they are imported only when a renew run needs one,
so ``lecentral --help`` never pays for them. ``[renew] http01_issuer`` picks which one runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lecentral.hookspecs import hookimpl
from lecentral.types import IssuerType

if TYPE_CHECKING:
    from lecentral.interfaces import Issuer
    from lecentral.types import IssuerContext


def _certbot_webroot(context: IssuerContext) -> Issuer:
    from lecentral.http01.certbot import CertbotWebrootIssuer

    return CertbotWebrootIssuer(context.config)


def _webroot(context: IssuerContext) -> Issuer:
    from lecentral.http01.native import WebrootIssuer

    return WebrootIssuer(context)


@hookimpl
def lecentral_register_issuers() -> list[IssuerType]:
    return [
        IssuerType(name="certbot-webroot", factory=_certbot_webroot,
                   description="HTTP-01 by running certbot certonly --webroot --csr "
                               "(pip install lecentral[certbot])"),
        IssuerType(name="webroot", factory=_webroot,
                   description="HTTP-01 through the site's webroot with lecentral's own ACME "
                               "client (no certbot needed)"),
    ]
