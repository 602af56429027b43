"""The ``openldap`` service: slapd's TLS files, ``slaptest``, ``systemctl restart slapd``, LDAP checks.

slapd reads ``olcTLSCertificateFile`` (the leaf), ``olcTLSCertificateKeyFile`` (the key, which
the agent only reads) and ``olcTLSCACertificateFile`` (the CA chain, which OpenSSL also uses to
send the intermediates) when it starts, so the default activation is a restart. After it, the
service checks over StartTLS and LDAPS that slapd presents the new certificate and answers a
bind and a search of the root DSE (:mod:`lecentral_openldap.service`).

The plugin also brings the ``ldap+starttls://`` and ``ldaps://`` verify URL schemes
(:class:`lecentral_openldap.probe.LdapVerifier`, with ldap3), which any ``[[cert]]`` may use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lecentral.api import (
    EntryError,
    ServiceType,
    VerifierType,
    hookimpl,
    lazy_service,
    lazy_verifier,
    option,
)

#: Debian's slapd; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ldap/tls/{name}.key",  # olcTLSCertificateKeyFile: read, never written; root:openldap 0640
    "cert": "/etc/ldap/tls/{name}.crt",  # olcTLSCertificateFile: the leaf
    "chain": "/etc/ldap/tls/{name}.ca",  # olcTLSCACertificateFile: the CA chain
    "check": "slaptest -u -F /etc/ldap/slapd.d",
    "reload": "systemctl restart slapd",
    "verify": ["ldap+starttls://127.0.0.1:389?sni={name}", "ldaps://127.0.0.1:636?sni={name}"],
}


@dataclass(frozen=True)
class OpenLdapOptions:
    """``[cert.options]`` of the ``openldap`` service."""

    bind_dn: str = option("", "DN of a simple bind made after the restart over each LDAP verify URL "
                          "(default: an anonymous bind); the bind and a base search of the root DSE "
                          "must succeed")
    bind_password: str = option("", "the password of bind_dn (never logged; keep install.toml 0600)",
                                secret=True)
    key_group: str = option("openldap", "the group slapd runs as, which must be able to read the key "
                            "(root:openldap 0640 on Debian; never readable by all); \"\" to skip this check")
    slapd_d: str = option("/etc/ldap/slapd.d", "slapd's cn=config directory, read before the restart to "
                          "check that olcTLSCertificateFile names this entry's certificate and "
                          "olcTLSCertificateKeyFile a key matching it (\"\" to skip, e.g. with slapd.conf)")

    def __post_init__(self) -> None:
        if bool(self.bind_dn) != bool(self.bind_password):
            raise EntryError("bind_dn", "set bind_dn and bind_password together (neither for an "
                             "anonymous bind)")


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``openldap`` service."""
    return [ServiceType(
        name="openldap",
        factory=lazy_service("lecentral_openldap.service:OpenLdapService"),
        defaults=DEFAULTS,
        description="OpenLDAP slapd: writes /etc/ldap/tls/{name}.crt and .ca (olcTLS* files), "
                    "checks cn=config and slaptest, systemctl restart slapd, verifies StartTLS on "
                    "389 and LDAPS on 636 (certificate, bind, root DSE)",
        options_model=OpenLdapOptions,
    )]


@hookimpl
def lecentral_register_verifiers() -> list[VerifierType]:
    """``ldap+starttls://`` (port 389 by default) and ``ldaps://`` (636), read with ldap3."""
    factory = lazy_verifier("lecentral_openldap.probe:LdapVerifier")
    return [VerifierType("ldap+starttls", factory, "LDAP, StartTLS extended operation (RFC 4511 4.14) "
                                                   "with ldap3, port 389 by default"),
            VerifierType("ldaps", factory, "LDAP over implicit TLS with ldap3, port 636 by default")]
