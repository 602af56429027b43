"""A local CA for the demo, the benchmark and the tests: Debian's Pebble behind a resolver.

A small, separate helper kept here until :mod:`lecentral.testing` ships its own Pebble launcher
(then this module should become a thin alias). :class:`Resolver` is a recursive named that
forwards everything to the authoritative test BIND and nothing anywhere else: Pebble asks it, as
Let's Encrypt asks its resolvers, so a CNAME on ``_acme-challenge`` is followed.
:class:`Pebble` runs on 127.0.0.1 with dynamic ports and a throwaway TLS certificate
(``ca_bundle``), validating DNS-01 through the resolver, with ``PEBBLE_VA_NOSLEEP=1``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lecentral.testing.pki import write_private
from lecentral.testing.ports import LOOPBACK, free_port
from lecentral.testing.process import (
    Daemon,
    find_executable,
    start_retrying_ports,
    tcp_open,
)


def _tls_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA-flagged certificate for 127.0.0.1/localhost: Pebble's HTTPS identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test listener")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=3))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path = directory / "pebble-tls.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = write_private(directory / "pebble-tls.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class Pebble:
    """Debian's pebble on 127.0.0.1 (dynamic ports), validating DNS-01 against ``dns_port``."""

    def __init__(self, workdir: Path, dns_port: int, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.dns_port = dns_port
        self.env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", **(env or {})}
        self.ca_bundle, self._key = _tls_pair(workdir)
        self.port = 0
        self.daemon: Daemon | None = None

    @property
    def directory(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/dir"

    def start(self) -> Pebble:
        exe = find_executable("pebble", package="pebble")

        def attempt() -> None:
            self.port = free_port()
            conf = {"pebble": {
                "listenAddress": f"{LOOPBACK}:{self.port}",
                "managementListenAddress": f"{LOOPBACK}:{free_port()}",
                "certificate": str(self.ca_bundle), "privateKey": str(self._key),
                "httpPort": free_port(), "tlsPort": free_port(), "ocspResponderURL": "",
                "externalAccountBindingRequired": False}}
            (self.workdir / "pebble.json").write_text(json.dumps(conf))
            self.daemon = Daemon("pebble", [exe, "-config", str(self.workdir / "pebble.json"),
                                            "-dnsserver", f"{LOOPBACK}:{self.dns_port}"],
                                 log_path=self.workdir / "pebble.log",
                                 env={**os.environ, **self.env}, cwd=self.workdir)
            self.daemon.start(lambda: tcp_open(LOOPBACK, self.port), timeout=30)

        start_retrying_ports(attempt)
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


class Resolver:
    """A recursive named that forwards everything to our authoritative BIND (and nothing else).

    Pebble asks it, as Let's Encrypt asks its own resolvers: it follows a CNAME on
    ``_acme-challenge`` into the delegated zone, which an authoritative-only server does not do.
    Nothing is cached (max-cache-ttl 0), so a re-issued name is checked against its new value.
    """

    def __init__(self, workdir: Path, upstream_port: int, probe_name: str = "example.test") -> None:
        self.workdir = workdir
        self.probe_name = probe_name
        self.upstream_port = upstream_port
        self.port = 0
        self.daemon: Daemon | None = None

    def start(self) -> Resolver:
        exe = find_executable("named", package="bind9")
        self.workdir.mkdir(parents=True, exist_ok=True)

        def attempt() -> None:
            import dns.message
            import dns.query

            self.port = free_port(udp=True)
            (self.workdir / "named.conf").write_text(
                f'options {{\n\tdirectory "{self.workdir}";\n\tpid-file none;\n'
                f"\tsession-keyfile none;\n\tmanaged-keys-directory \"{self.workdir}\";\n"
                f"\tlisten-on port {self.port} {{ {LOOPBACK}; }};\n\tlisten-on-v6 {{ none; }};\n"
                f"\trecursion yes;\n\tallow-recursion {{ 127.0.0.0/8; }};\n"
                f"\tdnssec-validation no;\n\tmax-cache-ttl 0;\n\tmax-ncache-ttl 0;\n"
                f"\tforward only;\n\tforwarders {{ {LOOPBACK} port {self.upstream_port}; }};\n}};\n")
            self.daemon = Daemon("resolver", [exe, "-g", "-4", "-n", "1", "-c",
                                              str(self.workdir / "named.conf")],
                                 log_path=self.workdir / "resolver.log", cwd=self.workdir)
            query = dns.message.make_query(self.probe_name, "SOA")
            self.daemon.start(lambda: bool(dns.query.udp(query, LOOPBACK, port=self.port,
                                                         timeout=0.5).answer), timeout=30)

        start_retrying_ports(attempt)
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
