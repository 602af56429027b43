"""The ``nginx`` service: nginx reads the full chain and the key; ``nginx -t``, then ``nginx -s reload``.

nginx needs no code of its own: ``nginx -t`` loads every certificate and key named in the
configuration (a key that does not match its certificate fails it), so the engine's config test
before the reload catches what would make nginx refuse the new files; ``nginx -s reload`` starts
new workers with them and lets the old ones finish (a reload that fails keeps the old
configuration running, and the HTTPS verification then sees the old certificate and rolls back).
So the service is :class:`~lecentral.install.service.CommandService` with Debian's defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lecentral.hookspecs import hookimpl
from lecentral.types import ServiceType

if TYPE_CHECKING:
    from lecentral.install.service import CommandService

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/ssl/certs/{name}.crt",  # the leaf alone: what the agent compares with the database
    "fullchain": "/etc/ssl/certs/{name}.full",  # leaf + CA: what ssl_certificate names
    "check": "nginx -t",
    "reload": "nginx -s reload",
    "verify": ["https://127.0.0.1:443?sni={name}"],
}


def _factory() -> CommandService:
    from lecentral.install.service import CommandService

    return CommandService()


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``nginx`` service."""
    return [ServiceType(
        name="nginx",
        factory=_factory,
        defaults=DEFAULTS,
        description="nginx: writes {name}.crt and {name}.full (ssl_certificate), runs nginx -t, "
                    "nginx -s reload, verifies HTTPS on 127.0.0.1:443 with the name as SNI",
    )]
