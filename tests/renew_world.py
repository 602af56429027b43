"""The world the renew and ACME tests share: a real BIND with sub-zones, real Pebble CAs.

Pebble, its resolver and BIND come from lecentral.testing.
Everything is session-scoped to keep the suite fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lecentral.testing.pebble import PebbleServer
from lecentral.testing.resolver import ResolverServer
from lecentral.config import (
    AcmeConfig,
    CentralConfig,
    DatabaseConfig,
    DnsConfig,
    NotifyConfig,
    RenewConfig,
    ZoneConfig,
)
from lecentral.store.rows import CertRow
from lecentral.testing.bind import BindServer
from lecentral.testing.pki import make_csr, write_private
from lecentral.testing.ports import LOOPBACK

PARENT = "example.test"
ONE = "one.example.test"
SAN1, SAN2 = "san1.example.test", "san2.example.test"
WILD = "wild.example.test"
CNAMED, DELEGATE = "cn.example.test", "delegate.example.test"
BADSECRET, UNKNOWNKEY, OTHERZONE, FROZEN = ("badsecret.example.test", "unknownkey.example.test",
                                            "otherzone.example.test", "frozen.example.test")
SPARE = [f"n{i}.example.test" for i in range(1, 9)]


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
    pebble: PebbleServer
    workdir: Path
    resolver: ResolverServer

    def key_file(self, key_name: str) -> str:
        return str(self.bind.key_file(key_name))

    def bogus_key_file(self, key_name: str, secret: str) -> str:
        """A key file the operator got wrong: a key named ``key_name`` with ``secret``."""
        path = self.workdir / f"bogus-{key_name}.key"
        write_private(path, f'key "{key_name}" {{\n\talgorithm hmac-sha512;\n\tsecret "{secret}";\n}};\n'
                      .encode())
        return str(path)


def make_config(world: World, tmp: Path, *, db_url: str | None = None, pebble: PebbleServer | None = None,
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
        acme=AcmeConfig(directory=pebble.directory_url, email="hostmaster@example.test",
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


def write_toml(config: CentralConfig, path: Path) -> Path:
    lines = [f'[database]\nurl = "{config.database.url}"\n',
             f'[acme]\ndirectory = "{config.acme.directory}"\nemail = "{config.acme.email}"\n'
             f'account_key = "{config.acme.account_key}"\nca_bundle = "{config.acme.ca_bundle}"\n',
             f"[renew]\nretry_pause = 0\nmax_failures = 1\nworkers = 2\n",
             f'[dns]\nserver = "{config.dns.server}"\nport = {config.dns.port}\n'
             f'tsig_key_file = "{config.dns.tsig_key_file}"\npropagation_timeout = 10.0\n'
             f"propagation_interval = 0.05\n"]
    for zone, conf in config.dns.zones.items():
        lines.append(f'[dns.zones."{zone}"]\ntsig_key_file = "{conf.tsig_key_file}"\n')
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("renew-world")
    bind = build_bind(workdir / "bind")
    with bind:
        resolver = ResolverServer(workdir / "resolver", bind.port, PARENT).start()
        pebble = PebbleServer(workdir, dns_server=("127.0.0.1", resolver.port)).start()
        try:
            yield World(bind, pebble, workdir, resolver)
        finally:
            pebble.stop()
            resolver.stop()
