"""The world the renew and ACME tests share: a real BIND with sub-zones, real Pebble CAs.

A small, separate helper (lecentral.testing's Pebble launcher had not landed when these tests were
written): :class:`Pebble` runs Debian's pebble on 127.0.0.1 with a throwaway TLS certificate,
resolving through our BIND. Everything is module- or session-scoped to keep the suite fast.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lecentral.config import (AcmeConfig, CentralConfig, DatabaseConfig, DnsConfig, NotifyConfig,
                              RenewConfig, ZoneConfig)
from lecentral.store.rows import CertRow
from lecentral.testing.bind import BindServer
from lecentral.testing.pki import make_csr, write_private
from lecentral.testing.ports import LOOPBACK, free_port
from lecentral.testing.process import Daemon, find_executable, start_retrying_ports, tcp_open

PARENT = "example.test"
ONE = "one.example.test"
SAN1, SAN2 = "san1.example.test", "san2.example.test"
WILD = "wild.example.test"
CNAMED, DELEGATE = "cn.example.test", "delegate.example.test"
BADSECRET, UNKNOWNKEY, OTHERZONE, FROZEN = ("badsecret.example.test", "unknownkey.example.test",
                                            "otherzone.example.test", "frozen.example.test")
SPARE = [f"n{i}.example.test" for i in range(1, 9)]


def _tls_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA-flagged certificate for 127.0.0.1/localhost: Pebble's HTTPS identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
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

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.workdir = workdir
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
            query = dns.message.make_query(PARENT, "SOA")
            self.daemon.start(lambda: bool(dns.query.udp(query, LOOPBACK, port=self.port,
                                                         timeout=0.5).answer), timeout=30)

        start_retrying_ports(attempt)
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


def build_bind(workdir: Path) -> BindServer:
    """named with one sub-zone per test name, some with their own keys, some broken on purpose."""
    bind = BindServer(workdir, parent=PARENT)
    bind.add_subzone(ONE)
    bind.add_subzone(SAN1, key_name="san1-key")
    bind.add_subzone(SAN2, key_name="san2-key")
    bind.add_subzone(WILD)
    bind.add_subzone(DELEGATE, key_name="delegate-key", grant_names=[f"cn.{DELEGATE}"])
    bind.add_subzone(CNAMED, records=[f"_acme-challenge CNAME cn.{DELEGATE}."])
    bind.add_subzone(BADSECRET)
    bind.add_subzone(UNKNOWNKEY)
    # the config gives this zone san1-key, which named.conf grants only in san1's zone: REFUSED
    bind.add_subzone(OTHERZONE)
    bind.add_subzone(FROZEN)
    for name in SPARE:
        bind.add_subzone(name)
    return bind


@dataclasses.dataclass
class World:
    bind: BindServer
    pebble: Pebble
    workdir: Path
    resolver: Resolver

    def key_file(self, key_name: str) -> str:
        return str(self.bind.key_file(key_name))

    def bogus_key_file(self, key_name: str, secret: str) -> str:
        """A key file the operator got wrong: a key named ``key_name`` with ``secret``."""
        path = self.workdir / f"bogus-{key_name}.key"
        write_private(path, f'key "{key_name}" {{\n\talgorithm hmac-sha512;\n\tsecret "{secret}";\n}};\n'
                      .encode())
        return str(path)


def make_config(world: World, tmp: Path, *, db_url: str | None = None, pebble: Pebble | None = None,
                **renew: Any) -> CentralConfig:
    """The lecentral.toml an operator would write for this world."""
    from lecentral.testing.bind import new_tsig_secret

    pebble = pebble or world.pebble
    zones = {
        SAN1: ZoneConfig(tsig_key_file=world.key_file("san1-key")),
        SAN2: ZoneConfig(tsig_key_file=world.key_file("san2-key")),
        DELEGATE: ZoneConfig(tsig_key_file=world.key_file("delegate-key")),
        OTHERZONE: ZoneConfig(tsig_key_file=world.key_file("san1-key")),
        BADSECRET: ZoneConfig(tsig_key_file=world.bogus_key_file("acme-update", new_tsig_secret())),
        UNKNOWNKEY: ZoneConfig(tsig_key_file=world.bogus_key_file("nobody-knows", new_tsig_secret())),
    }
    settings: dict[str, Any] = {"retry_pause": 0, "min_interval": 3600, "workers": 4, **renew}
    return CentralConfig(
        database=DatabaseConfig(url=db_url or f"sqlite:///{tmp}/lecentral.db"),
        acme=AcmeConfig(directory=pebble.directory, email="hostmaster@example.test",
                        account_key=str(tmp / "acme" / "account.key"),
                        ca_bundle=str(pebble.ca_bundle), poll_timeout=60),
        renew=RenewConfig(csr_dir=str(tmp / "csr"), **settings),
        dns=DnsConfig(server=f"{LOOPBACK}:{world.bind.port}", port=world.bind.port,
                      tsig_key_file=world.key_file("acme-update"), propagation_timeout=10,
                      propagation_interval=0.05, zones=zones),
        notify=NotifyConfig(),
    )


def add_row(store: Any, names: list[str], *, enable: bool = True, **extra: Any) -> tuple[CertRow, Any]:
    """Insert a row for ``names`` as ``lecentral add`` does; returns (row, the server's private key)."""
    from lecentral.certificates import Csr

    csr_pem, key = make_csr(names)
    csr = Csr.load(csr_pem)
    row = CertRow(name=names[0], csr=csr.pem, md5_modulus=csr.md5_modulus, enable=enable,
                  ts_expire=1, ts_last_update=1, count_fail_update=0, **extra)
    store.add(row)
    return row, key


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("renew-world")
    bind = build_bind(workdir / "bind")
    with bind:
        resolver = Resolver(workdir / "resolver", bind.port).start()
        pebble = Pebble(workdir, resolver.port).start()
        try:
            yield World(bind, pebble, workdir, resolver)
        finally:
            pebble.stop()
            resolver.stop()
