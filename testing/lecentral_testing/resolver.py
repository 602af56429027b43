"""A recursive resolver for the local ACME world: named forwarding only to the test BIND.

Pebble asks it, as Let's Encrypt asks its own resolvers: it follows a CNAME on ``_acme-challenge``
into the delegated zone, which an authoritative-only server does not do. Nothing is cached
(max-cache-ttl 0), so a re-issued name is checked against its new value, and it forwards nowhere
but 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    DaemonServer,
    find_executable,
    start_retrying_ports,
)

if TYPE_CHECKING:
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer


class ResolverServer(DaemonServer):
    """``named`` on 127.0.0.1:<port>, recursive, forwarding everything to ``upstream_port``.

    ``probe_name`` is a name the upstream answers (a SOA), used to know when it is ready.
    """

    kind = "resolver"

    def __init__(self, workdir: Path | str | None, upstream_port: int,
                 probe_name: str = "example.test") -> None:
        super().__init__(workdir)
        self.upstream_port = upstream_port
        self.probe_name = probe_name
        self.port = 0

    def _conf(self) -> str:
        return (
            f'options {{\n\tdirectory "{self.workdir}";\n\tpid-file none;\n'
            f'\tsession-keyfile none;\n\tmanaged-keys-directory "{self.workdir}";\n'
            f"\tlisten-on port {self.port} {{ {LOOPBACK}; }};\n\tlisten-on-v6 {{ none; }};\n"
            f"\trecursion yes;\n\tallow-recursion {{ 127.0.0.0/8; }};\n"
            f"\tdnssec-validation no;\n\tmax-cache-ttl 0;\n\tmax-ncache-ttl 0;\n"
            f"\tforward only;\n\tforwarders {{ {LOOPBACK} port {self.upstream_port}; }};\n}};\n"
        )

    def start(self) -> Self:
        """Start named; returns once it answers ``probe_name`` from the upstream."""
        exe = find_executable("named", package="bind9")

        def attempt() -> None:
            import dns.message
            import dns.query

            self.port = free_port(udp=True)
            conf = self.workdir / "named.conf"
            conf.write_text(self._conf())
            self._daemon = Daemon("resolver", [exe, "-g", "-4", "-n", "1", "-c", str(conf)],
                                  log_path=self.workdir / "resolver.log", cwd=self.workdir)
            query = dns.message.make_query(self.probe_name, "SOA")
            self._daemon.start(lambda: bool(dns.query.udp(query, LOOPBACK, port=self.port,
                                                          timeout=0.5).answer), timeout=30)

        start_retrying_ports(attempt)
        return self


@contextmanager
def resolving_pebble(workdir: Path, bind: BindServer, *, probe_name: str = "example.test",
                     **pebble_options: Any) -> Iterator[tuple[ResolverServer, PebbleServer]]:
    """A resolver forwarding to the running ``bind``, and Pebble (in ``workdir``) asking it.

    Both are started, and stopped when the block ends. ``pebble_options`` go to
    :class:`~lecentral_testing.pebble.PebbleServer` (``env``, ``http_port``, ...).
    """
    from lecentral_testing.pebble import PebbleServer

    resolver = ResolverServer(workdir / "resolver", bind.port, probe_name).start()
    try:
        pebble = PebbleServer(workdir, dns_server=(LOOPBACK, resolver.port), **pebble_options).start()
        try:
            yield resolver, pebble
        finally:
            pebble.stop()
    finally:
        resolver.stop()
