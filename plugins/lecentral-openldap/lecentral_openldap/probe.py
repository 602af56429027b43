"""Ask slapd, with ldap3, which certificate it presents and whether it answers a bind and the root DSE.

One LDAP session: connect (LDAPS: TLS at once; LDAP: StartTLS, RFC 4511 4.14), take the leaf the
server presented; :func:`probe` then binds (anonymously, or as the configured DN once TLS is up, so
the password never crosses the network in clear) and reads the root DSE (a base search of the
empty DN). :class:`LdapVerifier` is the ``ldap+starttls://`` and ``ldaps://`` verifier: the leaf
only. The chain is not validated: the caller compares fingerprints, a stronger check.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from lecentral.api import (
    ConfigError,
    Scheme,
    Verifier,
    VerifyError,
    VerifyTarget,
    parse_verify_url,
)

#: the verify URL schemes an LDAP session can be opened on
SCHEMES = {"ldap+starttls": Scheme("ldap+starttls", "ldap", 389, "LDAP StartTLS"),
           "ldaps": Scheme("ldaps", "tls", 636, "LDAP over implicit TLS")}
LDAP_SCHEMES = tuple(SCHEMES)
_NOT_LDAP = "is this port speaking LDAP? check the port and the scheme of the verify URL"


class BindRefused(VerifyError):
    """slapd answered over TLS but refused the bind: the credentials or its access rules, not TLS."""


@dataclass(frozen=True)
class Credentials:
    """Who binds: anonymous when ``dn`` is empty. ``repr`` hides the password."""

    dn: str = ""
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(dn={self.dn!r}, password={'***' if self.password else ''!r})"

    @property
    def who(self) -> str:
        return f"bind as {self.dn}" if self.dn else "anonymous bind"

    def scrub(self, text: str) -> str:
        """``text`` with the password masked (ldap3 messages never hold it; this makes sure)."""
        return text.replace(self.password, "***") if self.password else text


class LdapVerifier(Verifier):
    """The leaf slapd (or any LDAP server) presents over StartTLS or LDAPS; no bind."""

    def check_url(self, url: str) -> None:
        parse_verify_url(url, SCHEMES)

    def presented_certificate(self, url: str, timeout: float) -> bytes:
        try:
            target = parse_verify_url(url, SCHEMES)
        except ConfigError as exc:
            raise VerifyError(str(exc)) from None
        return session(target, Credentials(), timeout, lambda conn, where: None)


def probe(target: VerifyTarget, credentials: Credentials, timeout: float) -> str:
    """SHA-256 hex of the leaf presented at ``target``, after a bind and a root DSE search succeed.

    Raise :class:`VerifyError` naming ``host:port`` and the step that failed.
    """
    return hashlib.sha256(session(target, credentials, timeout, _bind_and_read_root_dse)).hexdigest()


def session(target: VerifyTarget, credentials: Credentials, timeout: float, then: Any) -> bytes:
    """Open an LDAP session on ``target``, get TLS up, call ``then(conn, where)``; the leaf's DER."""
    import ssl

    import ldap3
    from ldap3.core.exceptions import LDAPException

    starttls = target.scheme.starttls
    # receive_timeout: ldap3 packs it into SO_RCVTIMEO as whole seconds (struct "LL")
    # like the core's verifiers: any certificate, and old ciphers too (old appliances are checked)
    tls = ldap3.Tls(validate=ssl.CERT_NONE, sni=target.sni, ciphers="ALL:@SECLEVEL=0")
    server = ldap3.Server(target.host, port=target.port, use_ssl=not starttls, tls=tls,
                          get_info=ldap3.NONE, connect_timeout=timeout)
    conn = ldap3.Connection(server, user=credentials.dn or None, password=credentials.password or None,
                            auto_bind=ldap3.AUTO_BIND_NONE, receive_timeout=math.ceil(timeout),
                            raise_exceptions=False)
    where = f"{target.scheme.name}://{target.where}"
    try:
        der = _open_tls(conn, starttls, where)
        then(conn, where)
    except LDAPException as exc:
        raise VerifyError(credentials.scrub(f"{where}: {type(exc).__name__}: {exc}")) from None
    except OSError as exc:
        raise VerifyError(f"{where}: {exc.strerror or exc}") from None
    finally:
        _close(conn)
    return der


def _open_tls(conn: Any, starttls: bool, where: str) -> bytes:
    from ldap3.core.exceptions import (
        LDAPException,
        LDAPSocketOpenError,
        LDAPStartTLSError,
    )

    conn.open()
    if starttls:
        try:
            agreed = conn.start_tls(read_server_info=False)
        except LDAPSocketOpenError:
            raise
        except LDAPException as exc:
            if not isinstance(exc, LDAPStartTLSError) or not (conn.result or {}).get("description"):
                raise VerifyError(f"{where}: no LDAP answer to the StartTLS request "
                                  f"({type(exc).__name__}: {exc}); {_NOT_LDAP}") from None
            agreed = False  # an LDAP answer saying no: reported below with its result code
        if not agreed:
            offered = (conn.result or {}).get("description") != "protocolError"
            raise VerifyError(f"{where}: StartTLS {'refused' if offered else 'not offered'} "
                              f"({_result(conn)}); configure TLS in slapd (olcTLSCertificateFile, "
                              "olcTLSCertificateKeyFile)")
    der: bytes | None = conn.socket.getpeercert(binary_form=True)
    if not der:
        raise VerifyError(f"{where}: the server presented no certificate")
    return der


def _bind_and_read_root_dse(conn: Any, where: str) -> None:
    import ldap3

    who = f"bind as {conn.user}" if conn.user else "anonymous bind"
    if not conn.bind():
        raise BindRefused(f"{where}: {who} failed ({_result(conn)}); check bind_dn and "
                          "bind_password in [cert.options], or the server's access rules")
    found = conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["supportedLDAPVersion"])
    if not found or not conn.response:
        raise VerifyError(f"{where}: reading the root DSE (base search of \"\") failed "
                          f"({_result(conn)}) after the {who}")


def _result(conn: Any) -> str:
    result = conn.result or {}
    text = str(result.get("description") or "no answer")
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _close(conn: Any) -> None:
    from ldap3.core.exceptions import LDAPException

    # closing a broken session: nothing left to report
    with contextlib.suppress(LDAPException, OSError):
        if not conn.closed:
            conn.unbind()
