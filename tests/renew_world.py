"""The world the renew and ACME tests share: a real BIND with sub-zones, real Pebble CAs.

Pebble, its resolver and BIND come from lecentral_testing. The fixture ``dns_world`` is
session-scoped to keep the suite fast (registered by conftest.py); the helpers here (the names,
:func:`make_config`, :func:`add_row`, :func:`run`, :func:`assert_issued`) are imported by the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.bind import BindServer
from lecentral_testing.central import new_row
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.pki import make_csr, write_private
from lecentral_testing.ports import LOOPBACK
from lecentral_testing.resolver import ResolverServer, resolving_pebble
from lecentral_testing.tomlfile import write_toml as write_tables

from lecentral.certificates import Certificate, load_chain, md5_ca, verify_chain
from lecentral.config import (
    AcmeConfig,
    CentralConfig,
    DatabaseConfig,
    DnsConfig,
    NotifyConfig,
    RenewConfig,
    ZoneConfig,
)
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewReport, RenewRequest
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore

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
    from lecentral_testing.bind import new_tsig_secret

    pebble = pebble or world.pebble
    zones = {
        SAN1: ZoneConfig(tsig_key_file=world.key_file("san1-key")),
        SAN2: ZoneConfig(tsig_key_file=world.key_file("san2-key")),
        DELEGATE: ZoneConfig(tsig_key_file=world.key_file("delegate-key")),
        OTHERZONE: ZoneConfig(tsig_key_file=world.key_file("san1-key")),
        BADSECRET: ZoneConfig(tsig_key_file=world.bogus_key_file("acme-update", new_tsig_secret())),
        UNKNOWNKEY: ZoneConfig(tsig_key_file=world.bogus_key_file("nobody-knows", new_tsig_secret())),
    }
    settings: dict[str, Any] = {"retry_pause": 0, "min_interval": 3600, "workers": 4,
                                "state_dir": str(tmp / "state"), **renew}
    (tmp / "acme").mkdir(mode=0o700, exist_ok=True)  # the state directory the package makes
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


def add_row(store: Any, names: list[str], *, enable: bool = True, **columns: Any) -> tuple[CertRow, Any]:
    """Insert a row for ``names`` as ``lecentral add`` does; returns (row, the server's private key)."""
    csr_pem, key = make_csr(names)
    row = new_row(csr_pem, name=names[0], enable=enable, **columns)
    store.add(row)
    return row, key


def open_store(config: CentralConfig) -> SqlStore:
    """The store of ``config``, its schema made (close it at the end of the test)."""
    store = SqlStore(config.database.url)
    store.init_schema()
    return store


def write_toml(config: CentralConfig, path: Path, **renew: Any) -> Path:
    """The lecentral.toml of ``config`` for the CLI: one retry round, two workers (``renew``:
    more ``[renew]`` keys, e.g. ``min_interval=0``)."""
    tables: dict[str, dict[str, Any]] = {
        "database": {"url": config.database.url},
        "acme": {"directory": config.acme.directory, "email": config.acme.email,
                 "account_key": config.acme.account_key, "ca_bundle": config.acme.ca_bundle},
        "renew": {"retry_pause": 0, "max_failures": 1, "workers": 2,
                  "state_dir": config.renew.state_dir, **renew},
        "dns": {"server": config.dns.server, "port": config.dns.port,
                "tsig_key_file": config.dns.tsig_key_file, "propagation_timeout": 10.0,
                "propagation_interval": 0.05,
                "zones": {zone: {"tsig_key_file": conf.tsig_key_file}
                          for zone, conf in config.dns.zones.items()}},
    }
    return write_tables(path, tables)


@dataclasses.dataclass
class CliRenew:
    """One ``lecentral renew --json`` run: exit code, the JSON document, stderr."""

    exit_code: int
    data: dict[str, Any]
    stderr: str

    def outcome(self, name: str) -> dict[str, Any]:
        """The final outcome of ``name`` (a ``certificates`` entry)."""
        found = [c for c in self.data["certificates"] if c["name"] == name]
        assert len(found) == 1, f"{name} not exactly once in {self.data}\n{self.stderr}"
        return found[0]


def renew_cli(toml: Path, *args: str) -> CliRenew:
    """``lecentral --config TOML renew --json ARGS`` in-process, as cron runs it."""
    import json

    from click.testing import CliRunner

    from lecentral.cli.central import main

    result = CliRunner().invoke(main, ["--config", str(toml), "renew", "--json", *args])
    assert result.stdout.lstrip().startswith("{"), f"no JSON (rc {result.exit_code}): {result.output}"
    return CliRenew(result.exit_code, json.loads(result.stdout), result.stderr)


def new_zone(world: World, prefix: str, **options: Any) -> str:
    """A new sub-zone ``PREFIX-<random>.example.test`` of ``world``'s BIND (``options``: see
    :meth:`BindServer.add_subzone`): a name no other test uses."""
    import secrets

    name = f"{prefix}-{secrets.token_hex(3)}.{PARENT}"
    world.bind.add_subzone(name, **options)
    return name


def run(config: CentralConfig, store: SqlStore, registry: Registry | None = None,
        **request: Any) -> RenewReport:
    """One renew job as ``lecentral renew --once`` runs it (``request``: RenewRequest fields)."""
    job = RenewJob(config, store, registry or Registry.load(entrypoints=False))
    return job.run(RenewRequest(**{"once": True, **request}))


def assert_issued(store: SqlStore, name: str, names: list[str], key: Any) -> Certificate:
    """The row holds a certificate for exactly ``names`` and the server's key, with its chain."""
    row = store.get(name)
    assert row is not None and row.crt and row.ca
    cert = Certificate.load(row.crt)
    assert sorted(cert.names) == sorted(names)
    assert cert.md5_modulus == row.md5_modulus
    assert cert.cert.public_key().public_numbers() == key.public_key().public_numbers()
    verify_chain(cert, load_chain(row.ca))
    assert row.md5_ca == md5_ca(row.ca)
    assert row.ts_expire == cert.not_after
    assert row.count_fail_update == 0
    assert row.ts_last_update and row.ts_last_update > 1
    assert [e.kind for e in store.events(name)][:1] == ["issued"]
    return cert


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """BIND with every sub-zone above, a resolver following CNAMEs, and Pebble asking it."""
    workdir = tmp_path_factory.mktemp("renew-world")
    with build_bind(workdir / "bind") as bind, \
            resolving_pebble(workdir, bind, probe_name=PARENT) as (resolver, pebble):
        yield World(bind, pebble, workdir, resolver)
