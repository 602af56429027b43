"""Talking to one nameserver: ``host:port`` parsing and single queries with clear errors."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from lecentral.errors import ConfigError, DnsError

#: seconds one query may take before that server counts as not answering
QUERY_TIMEOUT = 3.0


@dataclass(frozen=True, order=True)
class Server:
    """A nameserver address: an IP literal and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str, setting: str, default_port: int = 53) -> Server:
    """``"127.0.0.1:5353"``, ``"192.0.2.1"`` or ``"[2001:db8::1]:53"`` as a :class:`Server`.

    The host must be an IP address: resolving the primary's name through DNS would make the
    update path depend on the resolver we are trying to fix.
    """
    text = text.strip()
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
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{setting} = {text!r}: the host must be an IP address (host:port), "
                          f"e.g. \"127.0.0.1:53\"") from None
    return Server(host, port)


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
