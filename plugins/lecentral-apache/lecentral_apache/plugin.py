"""The ``apache`` service: Debian's layout, configtest + certificate/key check, graceful restart.

Files: the leaf (``{name}.crt``), the CA chain (``{name}.ca``) and leaf + chain (``{name}.full``)
are all written, so the virtual host may use either style: ``SSLCertificateFile {name}.full``
(Apache >= 2.4.8, every Debian since 8 — the chain in the certificate file) or
``SSLCertificateFile {name}.crt`` with ``SSLCertificateChainFile {name}.ca`` (older releases;
deprecated since 2.4.8 but still honoured). The choice is the admin's, in the Apache
configuration; the check before the reload warns when a virtual host sends no chain at all.
Leave one out with ``fullchain = ""`` or ``chain = ""`` in the entry.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

from lecentral.api import EntryError, ServiceType, hookimpl, lazy_service, option

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/ssl/certs/{name}.crt",  # the leaf (SSLCertificateFile, with the chain file)
    "chain": "/etc/ssl/certs/{name}.ca",  # the CA chain (SSLCertificateChainFile)
    "fullchain": "/etc/ssl/certs/{name}.full",  # leaf + chain (SSLCertificateFile, Apache >= 2.4.8)
    "check": "apache2ctl configtest",
    "reload": "apache2ctl graceful",
    "verify": ["https://127.0.0.1:443?sni={name}"],
}


@dataclass(frozen=True)
class ApacheOptions:
    """``[cert.options]`` of the ``apache`` service."""

    key_check: bool = option(True, "before the reload, check that each SSLCertificateFile naming this "
                                   "entry's files is paired with a key matching the new certificate "
                                   "(configtest does not, and a mismatch stops Apache at the graceful "
                                   "restart); default true")
    apachectl: str = option("apache2ctl", "the command that runs apache2 with its configuration, for "
                                          "that check (default apache2ctl; e.g. \"apachectl\" or "
                                          "\"httpd -f /etc/httpd/conf/httpd.conf\")")
    mod_info: str = option("/usr/lib/apache2/modules/mod_info.so",
                           "mod_info.so, loaded for that check only (-t -D DUMP_CONFIG); default "
                           "Debian's /usr/lib/apache2/modules/mod_info.so")

    def __post_init__(self) -> None:
        try:
            if not shlex.split(self.apachectl):
                raise EntryError("apachectl", "must be a command, not empty")
        except ValueError as exc:
            raise EntryError("apachectl", f"cannot parse {self.apachectl!r}: {exc}") from None
        if self.key_check and not os.path.isfile(self.mod_info):
            raise EntryError("mod_info", f"{self.mod_info or '(empty)'} does not exist; set it to the "
                             "path of mod_info.so, or key_check = false to skip the certificate/key "
                             "check before the graceful restart")


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``apache`` service."""
    return [ServiceType(
        name="apache",
        factory=lazy_service("lecentral_apache.service:ApacheService"),
        defaults=DEFAULTS,
        description="Apache httpd: writes {name}.crt, .ca and .full, runs apache2ctl configtest and "
                    "checks the certificate/key pairs Apache will load, apache2ctl graceful, "
                    "verifies HTTPS on 127.0.0.1:443 with the name as SNI",
        options_model=ApacheOptions,
    )]
