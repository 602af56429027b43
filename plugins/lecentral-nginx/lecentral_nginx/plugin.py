"""The ``nginx`` service: nginx reads the full chain and the key; ``nginx -t``, a certificate/key
check (``nginx -T``), then ``nginx -s reload``.

``nginx -t`` loads every certificate and key named in the configuration (a key of the same type
that does not match its certificate fails it); :class:`~lecentral_nginx.service.NginxService`
adds the check ``nginx -t`` cannot make (a key of another type, see there). ``nginx -s reload``
starts new workers with the new files and lets the old ones finish (a reload that fails keeps the
old configuration running, and the HTTPS verification then sees the old certificate and rolls back).
"""

from __future__ import annotations

from typing import Any

from lecentral.api import ServiceType, hookimpl, lazy_service

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/ssl/certs/{name}.crt",  # the leaf alone: what the agent compares with the database
    "fullchain": "/etc/ssl/certs/{name}.full",  # leaf + CA: what ssl_certificate names
    "check": "nginx -t",
    "reload": "nginx -s reload",
    "verify": ["https://127.0.0.1:443?sni={name}"],
}


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``nginx`` service."""
    return [ServiceType(
        name="nginx",
        factory=lazy_service("lecentral_nginx.service:NginxService"),
        defaults=DEFAULTS,
        description="nginx: writes {name}.crt and {name}.full (ssl_certificate), runs nginx -t and "
                    "checks the certificate/key pairs of nginx -T, nginx -s reload, verifies HTTPS "
                    "on 127.0.0.1:443 with the name as SNI",
    )]
