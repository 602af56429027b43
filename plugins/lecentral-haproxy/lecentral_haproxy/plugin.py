"""The ``haproxy`` service: HAProxy reads one PEM per certificate, leaf, chain and key together.

``bind :443 ssl crt /etc/haproxy/certs/`` loads every file of that directory as a certificate with
its key, so only the combined file goes there; the leaf alone (what the agent compares with the
database) goes beside haproxy.cfg. ``haproxy -c`` loads the new file before anything is reloaded;
``systemctl reload haproxy`` has the master start new workers with it while the old ones finish
their connections; the agent then checks on port 443 that the new certificate is presented.
"""

from __future__ import annotations

import os
from typing import Any

from lecentral.api import CertEntry, CommandService, EntryError, ServiceType, hookimpl

#: ``{name}`` is the entry's name; every key can be overridden in the ``[[cert]]`` entry.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to build the combined file, never written
    "cert": "/etc/haproxy/{name}.crt",  # the leaf alone, outside the crt directory
    "combined": "/etc/haproxy/certs/{name}.pem",
    "combined_order": ["cert", "chain", "key"],
    "mode": "0600",  # it holds the key; HAProxy's master reads it as root
    "check": "haproxy -c -f /etc/haproxy/haproxy.cfg",
    "reload": "systemctl reload haproxy",
    "verify": ["tls://127.0.0.1:443?sni={name}"],
}


class HaproxyService(CommandService):
    """``check``, ``reload`` and ``verify`` as ``CommandService`` runs them, plus a check of
    where the entry's files go, made when install.toml is loaded."""

    def check_entry(self, entry: CertEntry) -> None:
        if not entry.combined:
            raise EntryError("combined", "is empty; HAProxy reads the leaf, the chain and the key "
                             "from one file: set combined to the path haproxy.cfg names")
        crt_dir = os.path.dirname(entry.combined)
        for role, path in entry.files.items():
            if role != "combined" and os.path.dirname(path) == crt_dir:
                # With "crt DIR/" HAProxy would take it for a certificate and refuse to start.
                raise EntryError(role, f"{path} is in {crt_dir}/, the directory of combined; "
                                 "HAProxy loads every file of a crt directory and fails on a "
                                 f"certificate without its key: put {role} outside {crt_dir}/ "
                                 f"(cert's default: /etc/haproxy/{entry.name}.crt)")


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``haproxy`` service."""
    return [ServiceType(
        name="haproxy",
        factory=HaproxyService,
        defaults=DEFAULTS,
        description="HAProxy: writes {name}.pem (leaf, chain, key; 0600) in /etc/haproxy/certs/ "
                    "and the leaf in /etc/haproxy/, runs haproxy -c, systemctl reload haproxy, "
                    "verifies TLS on 127.0.0.1:443 with the name as SNI",
    )]
