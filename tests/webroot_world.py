"""The world the HTTP-01 tests share: BIND, nginx serving the sites' webroots, and Pebble.

Every name is a BIND sub-zone (apex A 127.0.0.1, TXT updatable for DNS-01); nginx serves each
site's names from its webroot on 127.0.0.1:<port>, and Pebble validates HTTP-01 at that port
(``httpPort``) after resolving the names through BIND. Session-scoped: each test uses its own
database and certbot state, and Pebble keeps no authorization between orders (PEBBLE_AUTHZREUSE=0),
so sites can be issued again and again. ``web_world`` is registered by conftest.py; the tests
import the helpers (:func:`make_config`, :func:`add_row`, :func:`assert_failed_untouched`, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import renew_world
from lecentral_testing.bind import BindServer
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK
from lecentral_testing.webroot import WebrootSites

from lecentral.certificates import is_ip
from lecentral.config import (
    AcmeConfig,
    CentralConfig,
    CertbotConfig,
    DatabaseConfig,
    DnsConfig,
    Http01Config,
    NotifyConfig,
    RenewConfig,
)
from lecentral.renew import RenewReport
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore

PARENT = "web.test"
#: site label -> the names nginx serves from its webroot
SITES = {
    "san": ["san-a.web.test", "san-b.web.test"],
    "one": ["one.web.test"],
    "wrong": ["wrong.web.test"],  # served from its own webroot; tests give the row another one
    "mix1": ["mix1.web.test"],
    "mix2": ["mix2a.web.test", "mix2b.web.test"],
    "shared": ["share1.web.test", "share2.web.test"],
    # RFC 8738: Pebble validates an IP identifier at the address itself (httpPort), Host the IP
    "ip": ["127.0.0.1", "ipmix.web.test"],
}
ISSUERS = ["webroot", "certbot-webroot"]
DNS_NAMES = ["dns1.web.test", "dns2.web.test"]
#: a name nginx redirects to another site's name (the site moved)
REDIRECTS = {"moved.web.test": "one.web.test"}


@dataclasses.dataclass
class WebWorld:
    bind: BindServer
    web: WebrootSites
    pebble: PebbleServer
    workdir: Path

    def webroot(self, site: str) -> Path:
        return self.web.webroot(site)


def make_config(world: WebWorld, tmp: Path, *, pebble: PebbleServer | None = None,
                http01_issuer: str = "webroot", self_check: bool = True,
                certbot_command: str = "certbot", **acme: Any) -> CentralConfig:
    """The lecentral.toml an operator would write for this world."""
    pebble = pebble or world.pebble
    (tmp / "acme").mkdir(mode=0o700, exist_ok=True)  # the state directory the package makes
    return CentralConfig(
        database=DatabaseConfig(url=f"sqlite:///{tmp}/lecentral.db"),
        acme=AcmeConfig(directory=pebble.directory_url, email="hostmaster@web.test",
                        account_key=str(tmp / "acme" / "account.key"),
                        ca_bundle=str(pebble.ca_bundle), poll_timeout=60, **acme),
        renew=RenewConfig(csr_dir=str(tmp / "csr"), retry_pause=0, workers=4,
                          http01_issuer=http01_issuer, state_dir=str(tmp / "state")),
        dns=DnsConfig(server=f"{LOOPBACK}:{world.bind.port}", port=world.bind.port,
                      tsig_key_file=str(world.bind.key_file("acme-update")),
                      propagation_timeout=10, propagation_interval=0.05),
        certbot=CertbotConfig(state_dir=str(tmp / "certbot"), command=certbot_command),
        http01=Http01Config(port=world.web.port, self_check=self_check),
        notify=NotifyConfig(),
    )


def add_row(store: Any, names: list[str], *, webroot: Path | str | None = None,
            certbot: bool = True) -> tuple[CertRow, Any]:
    """Insert a (by default certbot='Y') row as ``lecentral add`` does; returns (row, the server's key)."""
    return renew_world.add_row(store, names, certbot=certbot,
                               webroot_path=None if webroot is None else str(webroot))


def assert_failed_untouched(store: SqlStore, report: RenewReport, name: str, *words: str) -> str:
    """One failure for ``name`` whose message has ``words``; nothing stored, failure counted."""
    outcome = report.final[0]
    assert outcome.name == name and outcome.status == "failed", outcome
    for word in words:
        assert word in outcome.message, outcome.message
    row = store.get(name)
    assert row is not None and row.crt is None and row.ca is None and row.ts_expire == 1
    assert row.count_fail_update == 1
    events = store.events(name)
    assert events[0].kind == "failed" and events[0].message == outcome.message
    return outcome.message


def leftovers(root: Path) -> list[str]:
    """Everything under ``root`` (relative paths): a clean webroot has nothing."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="session")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    """BIND with every site's names, nginx serving their webroots, Pebble validating through both."""
    workdir = tmp_path_factory.mktemp("webroot-world")
    names = [n for site in SITES.values() for n in site if not is_ip(n)] + DNS_NAMES + list(REDIRECTS)
    sites = {label: (site, workdir / "sites" / label) for label, site in SITES.items()}
    with BindServer(workdir / "bind", parent=PARENT, subzones=names) as bind, \
            WebrootSites(workdir / "nginx", sites, REDIRECTS) as web, \
            PebbleServer(workdir / "pebble", dns_server=(LOOPBACK, bind.port),
                         http_port=web.port) as pebble:
        yield WebWorld(bind, web, pebble, workdir)
