"""Verify URLs: which protocol to speak, where, with which SNI name.

A verify URL says how to reach a running service and make it show its certificate::

    tls://127.0.0.1:8443?sni=www.example.com
    smtp+starttls://mail.example.com:587?ehlo=agent.example.com
    imaps://mail.example.com

The path, if any, is ignored (``https://host/`` and ``ldaps://host/dc=example`` are fine). Unknown
query keys, user names, passwords and fragments are refused: they would mean nothing here and are
most likely a typo in the agent's configuration. A verifier plugin parses the URLs of its own
schemes with the same rules: ``parse_verify_url(url, {"ldaps": Scheme("ldaps", "tls", 636, ...)})``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from lecentral.errors import ConfigError


@dataclass(frozen=True)
class Scheme:
    """One URL scheme: the protocol spoken before the TLS handshake and the port used by default."""

    name: str
    protocol: str  # "tls" (handshake at once), or the STARTTLS dialogue: "smtp", "imap", "pop3" (a plugin's: "ldap")
    default_port: int
    description: str

    @property
    def starttls(self) -> bool:
        """True if a plaintext dialogue upgrades the connection (STARTTLS, STLS, LDAP StartTLS)."""
        return self.protocol != "tls"


#: Every built-in scheme, by name.
SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("tls", "tls", 443, "TLS from the first byte (HTTPS, SMTPS, IMAPS, LDAPS, anything)"),
    Scheme("https", "tls", 443, "alias of tls:// with port 443 by default"),
    Scheme("smtps", "tls", 465, "SMTP over implicit TLS (submissions), port 465 by default"),
    Scheme("imaps", "tls", 993, "IMAP over implicit TLS, port 993 by default"),
    Scheme("pop3s", "tls", 995, "POP3 over implicit TLS, port 995 by default"),
    Scheme("smtp+starttls", "smtp", 25, "SMTP, EHLO then STARTTLS (RFC 3207), port 25 by default"),
    Scheme("imap+starttls", "imap", 143, "IMAP, CAPABILITY then STARTTLS (RFC 3501), port 143 by default"),
    Scheme("pop3+starttls", "pop3", 110, "POP3, CAPA then STLS (RFC 2595), port 110 by default"),
)}

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
_QUERY_KEYS = {"sni", "ehlo"}


@dataclass(frozen=True)
class VerifyTarget:
    """A parsed verify URL."""

    url: str
    scheme: Scheme
    host: str
    port: int
    sni: str | None  # server name sent in the TLS ClientHello; None sends none
    ehlo: str  # the name given in the SMTP EHLO command

    @property
    def where(self) -> str:
        """``host:port`` (``[v6]:port``), the way every error message names the service."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _default_ehlo() -> str:
    # What smtplib sends too (less the DNS look-up of getfqdn, which may hang on a broken resolver).
    import socket

    name = socket.gethostname()
    return name if _HOSTNAME.match(name) else "localhost"


def masked_url(url: str) -> str:
    """``url`` with the password of a ``user:password@`` part replaced by ``***``: such a URL is
    refused anyway, and no error, log line or report may show the password."""
    scheme, sep, rest = str(url).partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return str(url)
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostport}{slash}{tail}"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"verify URL {masked_url(url)!r}: {why}; see docs/verifiers.md for the accepted forms")


def parse_verify_url(url: str, schemes: Mapping[str, Scheme] | None = None) -> VerifyTarget:
    """Parse a verify URL of one of ``schemes`` (default: the built-in :data:`SCHEMES`; a verifier
    plugin passes its own); raise :class:`ConfigError` saying what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "expected SCHEME://HOST[:PORT], e.g. tls://127.0.0.1:443")
    parts = urlsplit(url.strip())
    known_schemes = SCHEMES if schemes is None else schemes
    scheme = known_schemes.get(parts.scheme.lower())
    if scheme is None:
        known = ", ".join(sorted(known_schemes))
        raise _bad(url, f"unknown scheme {parts.scheme!r} (schemes here: {known})")
    if parts.username is not None or parts.password is not None:
        raise _bad(url, "user names and passwords have no place in a verify URL")
    if parts.fragment:
        raise _bad(url, "a #fragment means nothing here")
    host = parts.hostname or ""
    if not host or not (_is_ip(host) or _HOSTNAME.match(host)):
        raise _bad(url, f"{host or 'no host'!r} is not a host name or IP address")
    try:
        port = parts.port
    except ValueError:
        raise _bad(url, "the port must be a number from 1 to 65535") from None
    if port is None:
        port = scheme.default_port
    if not 1 <= port <= 65535:
        raise _bad(url, "the port must be a number from 1 to 65535")
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in _QUERY_KEYS:
            raise _bad(url, f"unknown parameter {key!r} (known: {', '.join(sorted(_QUERY_KEYS))})")
        params[key] = value
    if "ehlo" in params and scheme.protocol != "smtp":
        raise _bad(url, "ehlo= is only for smtp+starttls://")
    sni = params.get("sni", None if _is_ip(host) else host)
    if sni is not None and sni != "" and not _HOSTNAME.match(sni):
        raise _bad(url, f"sni={sni!r} is not a host name")
    ehlo = params.get("ehlo") or _default_ehlo()
    if not _HOSTNAME.match(ehlo) and not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", ehlo):
        raise _bad(url, f"ehlo={ehlo!r} is not a host name or [address]")
    return VerifyTarget(url=url, scheme=scheme, host=host, port=port, sni=sni or None, ehlo=ehlo)
