"""Talking to one nameserver: ``host:port`` parsing (and resolving) and single queries with clear errors."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

from lecentral.errors import ConfigError, DnsError

log = logging.getLogger(__name__)

#: seconds one query may take before that server counts as not answering
QUERY_TIMEOUT = 3.0


@dataclass(frozen=True, order=True)
class Server:
    """A nameserver address: an IP literal and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _split(text: str, setting: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``"host:port"``, ``"host"``, ``"[IPv6]:port"`` or a bare IPv6 address."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{setting} = {text!r}: expected [IPv6]:port")
            port = _port(rest[1:], text, setting)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text, setting)
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_server(text: str, setting: str, default_port: int = 53) -> Server:
    """``"127.0.0.1:5353"``, ``"192.0.2.1"`` or ``"[2001:db8::1]:53"`` as a :class:`Server`.

    The host must be an IP address: this reads what lecentral itself stored (a record's server,
    already resolved) and addresses given to bypass DNS (resolvers, nameserver addresses). The
    configured primary may be a name: see :func:`resolve_server`.
    """
    text = text.strip()
    host, port = _split(text, setting, default_port)
    if not _is_ip(host):
        raise ConfigError(f"{setting} = {text!r}: the host must be an IP address (host:port), "
                          f"e.g. \"127.0.0.1:53\"")
    return Server(host, port)


#: host names already resolved in this process (a run): (host, port) -> Server
_resolved: dict[tuple[str, int], Server] = {}
_resolved_lock = threading.Lock()
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$")


def resolve_server(text: str, setting: str, default_port: int = 53) -> Server:
    """Like :func:`parse_server`, but the host may also be a name (``"dns.example.com:53"``).

    A name is resolved once per run (per process), through the system resolver
    (``getaddrinfo``: /etc/hosts, then the resolvers of /etc/resolv.conf; the C library sorts
    the addresses, unreachable families last, as /etc/gai.conf says), and its first address is
    used for every update and query of the run: the primary is then one server for the whole
    run, even if its name has several addresses. An IP address avoids the lookup altogether.
    """
    text = text.strip()
    host, port = _split(text, setting, default_port)
    if _is_ip(host):
        return Server(host, port)
    name = host.lower().rstrip(".")
    if not _HOST_NAME.match(name):
        raise ConfigError(f"{setting} = {text!r}: the host must be an IP address or a host name "
                          f"(host:port, [IPv6]:port), e.g. \"dns.example.com:53\" or \"192.0.2.53:53\"")
    with _resolved_lock:
        if (name, port) in _resolved:
            return _resolved[(name, port)]
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise ConfigError(f"{setting} = {text!r}: cannot resolve {name} through the system resolver "
                          f"({why}); fix the name, its /etc/hosts entry or /etc/resolv.conf, or give "
                          f"the primary's IP address") from None
    addresses = [info[4][0] for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise ConfigError(f"{setting} = {text!r}: {name} has no IPv4 or IPv6 address; give the "
                          f"primary's IP address")
    server = Server(str(addresses[0]), port)
    log.debug("%s: %s is %s for this run", setting, name, server)
    with _resolved_lock:
        return _resolved.setdefault((name, port), server)


def forget_resolved() -> None:
    """Forget the host names :func:`resolve_server` resolved (a new run in the same process)."""
    with _resolved_lock:
        _resolved.clear()


def _port(text: str, whole: str, setting: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{setting} = {whole!r}: the port must be a number from 1 to 65535")
    return int(text)


def ask(server: Server, qname: Any, rdtype: str, *, recursion: bool = False,
        timeout: float = QUERY_TIMEOUT) -> Any:
    """One query to ``server`` (UDP, TCP if truncated); returns the ``dns.message.Message``.

    Non-recursive by default: we want what this very server holds, not what it can find out.
    Unreachable servers and timeouts raise DnsError naming ``server``.
    """
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query

    query = dns.message.make_query(qname, rdtype)
    if not recursion:
        query.flags &= ~dns.flags.RD
    try:
        with _connected_udp(server) as sock:
            response, _ = dns.query.udp_with_fallback(query, server.host, port=server.port, timeout=timeout,
                                                      udp_sock=sock)
    except dns.exception.Timeout:
        raise DnsError(f"no answer from DNS server {server} within {timeout:g}s (asking {qname} {rdtype}); "
                       f"is named running and listening there?") from None
    except OSError as exc:
        raise DnsError(f"DNS server {server} unreachable (asking {qname} {rdtype}): {exc.strerror or exc}; "
                       f"is named running and listening there?") from None
    except dns.exception.DNSException as exc:
        raise DnsError(f"bad answer from DNS server {server} (asking {qname} {rdtype}): {exc}") from None
    return response


def _connected_udp(server: Server) -> socket.socket:
    """A UDP socket connected to ``server``: a closed port then fails at once (ICMP port
    unreachable becomes ECONNREFUSED) instead of after the whole timeout."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((server.host, server.port))
    except OSError:
        sock.close()
        raise
    return sock


def rrset_at(section: list[Any], owner: Any, rdtype: str) -> Any | None:
    """The RRset of ``rdtype`` owned by ``owner`` in a message section, or None."""
    import dns.rdatatype

    wanted = dns.rdatatype.from_text(rdtype)
    for rrset in section:
        if rrset.rdtype == wanted and rrset.name == owner:
            return rrset
    return None


def txt_strings(rrset: Any) -> set[str]:
    """Every TXT rdata of ``rrset`` as one string (its character-strings joined)."""
    if rrset is None:
        return set()
    return {b"".join(rdata.strings).decode("utf-8", "replace") for rdata in rrset}
