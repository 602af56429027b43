"""The ``freeradius`` service: the EAP module's TLS files, ``freeradius -C``, restart, RADIUS checks.

FreeRADIUS reads the ``tls-common`` files of ``mods-available/eap`` (``certificate_file``,
``private_key_file``, ``ca_file``) when it starts, so the default activation is a restart. With
``chroot`` in the entry's options, the files are written under that directory (the seed's
"FreeRadius is running in a chroot'ed environment, the certificates go installed in the chroot
directory"). After the restart, :mod:`lecentral_freeradius.service` checks that the server answers
an Access-Request and, where ``eapol_test`` is installed, that EAP presents the new certificate.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from lecentral.api import EntryError, ServiceType, hookimpl, lazy_service, option

CONFDIR = "/etc/freeradius/3.0"
#: what eapol_test can check the certificate with (``""``: no EAP check)
EAP_METHODS = ("TLS", "PEAP", "TTLS")

#: FreeRADIUS 3's raddb layout (${certdir}, ${cadir}); paths as the daemon sees them, so inside
#: the chroot when options.chroot is set. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": f"{CONFDIR}/certs/server.key",  # private_key_file: read, never written (a host path)
    "cert": f"{CONFDIR}/certs/server.pem",  # certificate_file: the leaf
    "chain": f"{CONFDIR}/certs/ca.pem",  # ca_file: the CA chain (see the README on EAP-TLS clients)
    "check": f"freeradius -C -l stdout -d {CONFDIR}",
    "reload": "systemctl restart freeradius",
}


@dataclass(frozen=True)
class FreeradiusOptions:
    """``[cert.options]`` of the ``freeradius`` service; the secrets stay out of its ``repr``."""

    chroot: str = option("", "directory FreeRADIUS runs chrooted in: cert, chain, fullchain and combined "
                         "are written under it (key stays the path of the key on this host)")
    server: str = option("127.0.0.1:1812", "IP:port where the checks after the restart send their "
                         "requests (default 127.0.0.1:1812)")
    secret: str = option("testing123", "shared secret of this host's client entry in clients.conf "
                         "(default testing123, Debian's localhost client); never logged", secret=True)
    user: str = option("", "User-Name of the check's Access-Request (and the EAP identity); default "
                       "lecentral-probe. Access-Accept and Access-Reject both mean the server is up")
    password: str = option("", "its password (for PEAP/TTLS, the inner password); never logged",
                           secret=True)
    eap: str = option("TLS", "EAP method eapol_test uses to see the certificate: TLS (default), PEAP, "
                      "TTLS, or \"\" to skip that check")
    eapol_test: str = option("eapol_test", "the eapol_test program (Debian package eapoltest); the EAP "
                             "check is skipped, with a warning, when it is not installed")
    client_cert: str = option("", "for EAP-TLS: a client certificate (PEM) to present; default: a "
                              "throwaway self-signed one, rejected by the server after it presented its "
                              "certificate")
    client_key: str = option("", "the key of client_cert (PEM, unencrypted)")

    def __post_init__(self) -> None:
        if self.chroot and (not self.chroot.startswith("/") or self.chroot.rstrip("/") == ""):
            raise EntryError("chroot", f"{self.chroot!r} must be an absolute path other than /")
        server_address(self.server)
        if not self.secret:
            raise EntryError("secret", "is empty; set the shared secret of this host's client entry "
                             "in clients.conf")
        if self.eap.upper() not in (*EAP_METHODS, ""):
            raise EntryError("eap", f"{self.eap!r}; choose TLS, PEAP, TTLS or \"\"")
        if bool(self.client_cert) != bool(self.client_key):
            raise EntryError("client_cert", "set client_cert and client_key together")
        for key in ("user", "password"):
            if any(c in getattr(self, key) for c in '"\r\n'):
                raise EntryError(key, "cannot hold a double quote or a line break")


def server_address(value: str) -> tuple[str, int]:
    """``IP:port`` (``[v6]:port``) as (ip, port); EntryError saying what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port) if sep else 0
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise EntryError("server", f"{value!r}; write IP:PORT, e.g. 127.0.0.1:1812 (eapol_test needs "
                         "an IP address)")
    return host, number


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``freeradius`` service."""
    return [ServiceType(
        name="freeradius",
        factory=lazy_service("lecentral_freeradius.service:FreeradiusService"),
        defaults=DEFAULTS,
        description="FreeRADIUS: writes the EAP module's certs/server.pem and ca.pem (under "
                    "options.chroot if set), runs freeradius -C, systemctl restart freeradius, "
                    "checks an Access-Request (pyrad) and the certificate EAP presents (eapol_test)",
        options_model=FreeradiusOptions,
    )]
