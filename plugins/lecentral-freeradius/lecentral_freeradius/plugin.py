"""The ``freeradius`` service: the EAP module's TLS files, ``freeradius -C``, restart, RADIUS checks.

FreeRADIUS reads the ``tls-common`` files of ``mods-available/eap`` (``certificate_file``,
``private_key_file``, ``ca_file``) when it starts, so the default activation is a restart. With
``chroot`` in the entry's options, the files are written under that directory (the seed's
"FreeRadius is running in a chroot'ed environment, the certificates go installed in the chroot
directory"). After the restart, :mod:`lecentral_freeradius.service` checks that the server answers
an Access-Request and, where ``eapol_test`` is installed, that EAP presents the new certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lecentral.api import ServiceType, hookimpl

if TYPE_CHECKING:
    from lecentral_freeradius.service import FreeradiusService

CONFDIR = "/etc/freeradius/3.0"

#: FreeRADIUS 3's raddb layout (${certdir}, ${cadir}); paths as the daemon sees them, so inside
#: the chroot when options.chroot is set. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": f"{CONFDIR}/certs/server.key",  # private_key_file: read, never written (a host path)
    "cert": f"{CONFDIR}/certs/server.pem",  # certificate_file: the leaf
    "chain": f"{CONFDIR}/certs/ca.pem",  # ca_file: the CA chain (see the README on EAP-TLS clients)
    "check": f"freeradius -C -l stdout -d {CONFDIR}",
    "reload": "systemctl restart freeradius",
    "options": {"server": "127.0.0.1:1812", "secret": "testing123", "eap": "TLS",
                "eapol_test": "eapol_test"},
}

OPTIONS: dict[str, str] = {
    "chroot": "directory FreeRADIUS runs chrooted in: cert, chain, fullchain and combined are "
              "written under it (key stays the path of the key on this host)",
    "server": "IP:port where the checks after the restart send their requests (default "
              "127.0.0.1:1812)",
    "secret": "shared secret of this host's client entry in clients.conf (default testing123, "
              "Debian's localhost client); never logged",
    "user": "User-Name of the check's Access-Request (and the EAP identity); default "
            "lecentral-probe. Access-Accept and Access-Reject both mean the server is up",
    "password": "its password (for PEAP/TTLS, the inner password); never logged",
    "eap": "EAP method eapol_test uses to see the certificate: TLS (default), PEAP, TTLS, or \"\" "
           "to skip that check",
    "eapol_test": "the eapol_test program (Debian package eapoltest); the EAP check is skipped, "
                  "with a warning, when it is not installed",
    "client_cert": "for EAP-TLS: a client certificate (PEM) to present; default: a throwaway "
                   "self-signed one, rejected by the server after it presented its certificate",
    "client_key": "the key of client_cert (PEM, unencrypted)",
}


def _factory() -> FreeradiusService:
    from lecentral_freeradius.service import FreeradiusService

    return FreeradiusService()


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``freeradius`` service."""
    return [ServiceType(
        name="freeradius",
        factory=_factory,
        defaults=DEFAULTS,
        description="FreeRADIUS: writes the EAP module's certs/server.pem and ca.pem (under "
                    "options.chroot if set), runs freeradius -C, systemctl restart freeradius, "
                    "checks an Access-Request (pyrad) and the certificate EAP presents (eapol_test)",
        options=OPTIONS,
    )]
