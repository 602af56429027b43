"""Dynamic loopback ports for the throwaway servers.

Several test suites run at the same time on one machine, so no port is ever fixed: each one is
found by binding to port 0 and letting the kernel choose. There is an unavoidable window between
closing our probe socket and the daemon binding the port; launchers close it by retrying with
fresh ports when a daemon reports "address in use" (see :func:`lecentral_testing.process.start_retrying_ports`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

LOOPBACK = "127.0.0.1"

# Ports this process already handed out: a second call must not return the same number before the
# first daemon got round to binding it.
_handed_out: set[int] = set()
_lock = threading.Lock()


def _bindable(host: str, port: int, kind: socket.SocketKind) -> bool:
    """True if ``host:port`` can be bound right now for ``kind`` (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # As TCP servers do: connections of a stopped server left in TIME_WAIT do not count.
            # (Not for UDP, where SO_REUSEADDR would let us share a port a daemon still holds.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_is_free(port: int, host: str = LOOPBACK, *, udp: bool = False) -> bool:
    """Return True if nothing listens on ``host:port`` (TCP, and UDP too when ``udp`` is set).

    Tests use this to prove that stopping a server really released its port.
    """
    if not _bindable(host, port, socket.SOCK_STREAM):
        return False
    return not udp or _bindable(host, port, socket.SOCK_DGRAM)


def free_port(hosts: Sequence[str] = (LOOPBACK,), *, udp: bool = False, attempts: int = 100) -> int:
    """Return a TCP port (and UDP too when ``udp``) that is free on every address in ``hosts``.

    All addresses must be in 127.0.0.0/8. Several hosts share one port so that, e.g., a primary
    nameserver on 127.0.0.1 and a secondary on 127.0.0.2 answer on the same port, as real
    nameservers all answer on 53.
    """
    for host in hosts:
        if not host.startswith("127."):
            raise ValueError(f"{host} is not a loopback address; the test world stays in 127.0.0.0/8")
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((hosts[0], 0))
            port: int = sock.getsockname()[1]
        with _lock:
            if port in _handed_out:
                continue
            if all(port_is_free(port, host, udp=udp) for host in hosts):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {', '.join(hosts)} after {attempts} attempts")


def free_ports(count: int, hosts: Sequence[str] = (LOOPBACK,), *, udp: bool = False) -> list[int]:
    """Return ``count`` distinct free ports (see :func:`free_port`)."""
    return [free_port(hosts, udp=udp) for _ in range(count)]

