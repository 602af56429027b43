"""Fetching a challenge file ourselves, the way the CA will, before the CA is asked.

A webroot the web server does not serve for a name is the common HTTP-01 mistake; found by the
CA, it is a failed validation that counts against the CA's rate limits. So for every name, this
module resolves its A/AAAA records (through ``[dns] check_resolvers``, then ``[dns] server``:
never the system resolver, whose answers may differ from what the world sees; an IP address
(RFC 8738) is its own and only address, as the CA connects to it directly), connects to each
address on ``[http01] port`` (80 in production: the CA always uses 80), asks for
``/.well-known/acme-challenge/FILE`` with the name as Host, follows redirects as the CA does (at
most 10, http or https, certificates not verified) and compares the body. Any difference is an
IssueError naming the name, the address, the webroot and the next step.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from lecentral.certificates import ip_name
from lecentral.config import DnsConfig
from lecentral.errors import ConfigError, IssueError
from lecentral.http01.webroot import CHALLENGE_PATH, ChallengeFiles

log = logging.getLogger(__name__)

#: seconds for one connection or one answer
TIMEOUT = 10.0
MAX_REDIRECTS = 10
MAX_BODY = 8192


@dataclass(frozen=True)
class Answer:
    """What one GET returned."""

    status: int
    reason: str
    body: bytes
    location: str | None


class SiteChecker:
    """Checks that every name serves a given challenge file from a given webroot."""

    def __init__(self, dns: DnsConfig, port: int) -> None:
        from lecentral.dns.wire import parse_server, resolve_server

        if not 0 < port < 65536:
            raise ConfigError(f"[http01] port = {port}: use a port from 1 to 65535 (80 in production)")
        self.port = port
        self.resolvers = [parse_server(r, "[dns] check_resolvers") for r in dns.check_resolvers]
        self.resolvers.append(resolve_server(dns.server, "[dns] server"))

    def addresses(self, name: str) -> list[str]:
        """A and AAAA of ``name`` from the configured DNS servers; IssueError if none. An IP
        address is itself: the CA validates an IP identifier at that address (RFC 8738 §7)."""
        import dns.name

        from lecentral.dns.propagation import resolve_host

        ip = ip_name(name)
        if ip is not None:
            return [ip]

        found = resolve_host(dns.name.from_text(name + "."), self.resolvers)
        if not found:
            servers = ", ".join(str(s) for s in self.resolvers)
            raise IssueError(
                f"{name} has no A or AAAA record visible from {servers}: the CA cannot reach the "
                f"site either. Add the record, or set [dns] check_resolvers to a resolver that "
                "sees the site's public records")
        return sorted(found)

    def check(self, name: str, file_name: str, expected: str, webroot: Path) -> None:
        """GET ``http://name/.well-known/acme-challenge/file_name`` at every address of ``name``
        and compare with ``expected``; IssueError naming the name, address and webroot if not."""
        path = f"/{CHALLENGE_PATH}/{file_name}"
        for address in self.addresses(name):
            answer, url, where = self._follow(name, address, path)
            if answer.status == 200 and answer.body.strip() == expected.encode():
                log.debug("%s serves %s from %s (%s)", name, file_name, webroot, where)
                continue
            if answer.status == 200:
                seen = answer.body[:60].decode("ascii", "replace")
                got = f"answered 200 with other content ({len(answer.body)} bytes: {seen!r})"
            else:
                got = f"answered {answer.status} {answer.reason}".rstrip()
            raise IssueError(
                f"{name}: the web server at {where} does not serve the webroot {webroot} for this "
                f"name: GET {url} {got}. Make {webroot} the DocumentRoot of every name of the "
                f"certificate (or alias /{CHALLENGE_PATH}/ to its {CHALLENGE_PATH}/), or fix the "
                "row's webroot_path; the CA was not asked to validate it")

    def probe(self, files: ChallengeFiles, names: list[str]) -> None:
        """Before any CA request: write a random file and check that every name serves it."""
        file_name, content = files.write_probe()
        try:
            for name in names:
                self.check(name, file_name, content, files.webroot)
        finally:
            files.remove(file_name)

    def _follow(self, name: str, address: str, path: str) -> tuple[Answer, str, str]:
        """The final answer after redirects, the URL that gave it, and host:port asked."""
        url = _url("http", name, self.port, path)
        host, scheme, port = name, "http", self.port
        for _ in range(MAX_REDIRECTS + 1):
            where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            answer = _get(scheme, address, port, host, path, url)
            if answer.status not in (301, 302, 303, 307, 308) or not answer.location:
                return answer, url, where
            url = urljoin(url, answer.location)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise IssueError(f"{name}: {where} redirects the challenge to {url}, which the CA "
                                 "will not follow (only http and https)")
            scheme = parts.scheme
            default = self.port if scheme == "http" else 443
            port = parts.port or default
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            if parts.hostname.lower() != host:
                host = parts.hostname.lower()
                address = self.addresses(host)[0]
        raise IssueError(f"{name}: more than {MAX_REDIRECTS} redirects fetching the challenge "
                         f"(last {url}); the CA gives up too")


def _url(scheme: str, host: str, port: int, path: str) -> str:
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{_host(host)}{'' if port == default else f':{port}'}{path}"


def _host(host: str) -> str:
    """``host`` as a URL and a Host header write it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _get(scheme: str, address: str, port: int, host: str, path: str, url: str) -> Answer:
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    conn: http.client.HTTPConnection
    if scheme == "https":
        # the CA does not verify the certificate of a redirect target either
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = _SniHttps(address, port, host, context)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": _host(host), "User-Agent": "lecentral-http01-selfcheck",
                                           "Accept": "*/*", "Connection": "close"})
        response = conn.getresponse()
        body = response.read(MAX_BODY)
        return Answer(response.status, response.reason, body, response.getheader("Location"))
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise IssueError(
            f"{host}: no web server answers {url} at {where} ({why}); the CA could not reach "
            "the site either: start the web server for this name, open the port, or set "
            "[http01] port") from None
    finally:
        conn.close()


class _SniHttps(http.client.HTTPSConnection):
    """HTTPS to an address chosen by us, with the name as SNI (as the CA connects)."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__(address, port, timeout=TIMEOUT, context=context)
        # an IP address is never sent as SNI (RFC 6066 §3); the ssl module leaves it out
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)
