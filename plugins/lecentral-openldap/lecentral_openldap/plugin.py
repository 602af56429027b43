"""The ``openldap`` service: slapd's TLS files, ``slaptest``, ``systemctl restart slapd``, LDAP checks.

slapd reads ``olcTLSCertificateFile`` (the leaf), ``olcTLSCertificateKeyFile`` (the key, which
the agent only reads) and ``olcTLSCACertificateFile`` (the CA chain, which OpenSSL also uses to
send the intermediates) when it starts, so the default activation is a restart. After it, the
service checks over StartTLS and LDAPS that slapd presents the new certificate and answers a
bind and a search of the root DSE (:mod:`lecentral_openldap.service`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lecentral.api import ServiceType, hookimpl

if TYPE_CHECKING:
    from lecentral_openldap.service import OpenLdapService

#: Debian's slapd; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ldap/tls/{name}.key",  # olcTLSCertificateKeyFile: read, never written; root:openldap 0640
    "cert": "/etc/ldap/tls/{name}.crt",  # olcTLSCertificateFile: the leaf
    "chain": "/etc/ldap/tls/{name}.ca",  # olcTLSCACertificateFile: the CA chain
    "check": "slaptest -u -F /etc/ldap/slapd.d",
    "reload": "systemctl restart slapd",
    "verify": ["ldap+starttls://127.0.0.1:389?sni={name}", "ldaps://127.0.0.1:636?sni={name}"],
    "options": {"key_group": "openldap", "slapd_d": "/etc/ldap/slapd.d"},
}

OPTIONS: dict[str, str] = {
    "bind_dn": "DN of a simple bind made after the restart over each LDAP verify URL (default: an "
               "anonymous bind); the bind and a base search of the root DSE must succeed",
    "bind_password": "the password of bind_dn (never logged; keep install.toml 0600)",
    "key_group": "the group slapd runs as, which must be able to read the key (root:openldap "
                 "0640 on Debian; never readable by all); \"\" to skip this check",
    "slapd_d": "slapd's cn=config directory, read before the restart to check that "
               "olcTLSCertificateFile names this entry's certificate and olcTLSCertificateKeyFile a "
               "key matching it (default /etc/ldap/slapd.d; \"\" to skip, e.g. with slapd.conf)",
}


def _factory() -> OpenLdapService:
    from lecentral_openldap.service import OpenLdapService

    return OpenLdapService()


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``openldap`` service."""
    return [ServiceType(
        name="openldap",
        factory=_factory,
        defaults=DEFAULTS,
        description="OpenLDAP slapd: writes /etc/ldap/tls/{name}.crt and .ca (olcTLS* files), "
                    "checks cn=config and slaptest, systemctl restart slapd, verifies StartTLS on "
                    "389 and LDAPS on 636 (certificate, bind, root DSE)",
        options=OPTIONS,
    )]
