"""Challenge records left behind are never quiet: stored, shown, mailed, exit 1, removed next run.

The parts are real (BIND, Pebble, nginx, the SQLite store, an SMTP server). The breakage is real
too, only its moment is chosen: a test issuer subclasses the built-in one and runs a step (stop
named, ``rndc freeze``, ``chattr +i`` on the challenge directory) after the CA has validated and
just before the issuer removes what it published.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import Mailbox
from click.testing import CliRunner
from lecentral_testing.ports import LOOPBACK
from renew_world import SPARE, World, add_row, make_config, open_store, write_toml
from webroot_world import SITES, WebWorld, leftovers
from webroot_world import add_row as add_web_row
from webroot_world import make_config as make_web_config

from lecentral.builtin.dns_subzone import DnsSubzoneIssuer
from lecentral.config import CentralConfig, DnsConfig, NotifyConfig
from lecentral.dns.challenge import DnsChallenges, PublishedTxt
from lecentral.hookspecs import hookimpl
from lecentral.http01.native import WebrootIssuer
from lecentral.http01.webroot import ChallengeDirs, ChallengeFiles
from lecentral.interfaces import Issuer
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewReport, RenewRequest
from lecentral.store.sql import SqlStore
from lecentral.types import IssuerContext, IssuerType

Step = Callable[[], None]


class StepBeforeRemoval(DnsChallenges):
    """The real DnsChallenges; ``step`` runs once, just before the first TXT is removed."""

    def __init__(self, dns: DnsConfig, step: Step) -> None:
        super().__init__(dns)
        self.step: Step | None = step

    def remove(self, record: PublishedTxt) -> bool:
        if self.step is not None:
            step, self.step = self.step, None
            step()
        return super().remove(record)


class StepBeforeFileRemoval(ChallengeDirs):
    """The real ChallengeDirs; ``step(directory)`` runs after the CA validated, before cleanup."""

    def __init__(self, step: Callable[[Path], None]) -> None:
        super().__init__()
        self.step = step

    @contextlib.contextmanager
    def open(self, webroot: Path) -> Iterator[ChallengeFiles]:
        with super().open(webroot) as files:
            yield files
            self.step(files.directory)


class Hooked:
    """A plugin registering the issuer ``hooked``: the built-in one with a step at removal."""

    def __init__(self, make: Callable[[IssuerContext], Issuer]) -> None:
        self.make = make

    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType(name="hooked", factory=self.make, description="test: a built-in "
                           "issuer with a step just before its cleanup")]


def dns_issuer(step: Step) -> Callable[[IssuerContext], Issuer]:
    def make(context: IssuerContext) -> Issuer:
        issuer = DnsSubzoneIssuer(context)
        issuer._dns = StepBeforeRemoval(context.config.dns, step)
        return issuer
    return make


def web_issuer(step: Callable[[Path], None]) -> Callable[[IssuerContext], Issuer]:
    def make(context: IssuerContext) -> Issuer:
        issuer = WebrootIssuer(context)
        issuer.dirs = StepBeforeFileRemoval(step)
        return issuer
    return make


def run_with(config: CentralConfig, store: SqlStore, make: Callable[[IssuerContext], Issuer],
             **request: Any) -> RenewReport:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(Hooked(make), name="hooked-issuer")
    return RenewJob(config, store, Registry(loaded)).run(RenewRequest(**{"once": True, **request}))


def txt(world: World, name: str) -> list[str]:
    return world.bind.txt_values(f"_acme-challenge.{name}")


@pytest.fixture
def mailed(dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> CentralConfig:
    """The dns_world config with the hooked issuer for DNS-01 rows and alerts mailed."""
    import dataclasses

    config = make_config(dns_world, tmp_path, dns01_issuer="hooked")
    return dataclasses.replace(config, notify=NotifyConfig(mail_to=["ops@example.test"],
                                                           smtp=f"{LOOPBACK}:{smtp[1]}"))


def test_named_stopped_after_publishing(dns_world: World, mailed: CentralConfig, tmp_path: Path,
                                        smtp: tuple[Mailbox, int],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """named stops once the CA has validated: the certificate is issued, the TXT stays. The run
    says so (report, event, mail, exit 1 from the CLI), and the next runs remove it once named is
    back; while it is down, each run tries again and fails loudly."""
    name = SPARE[5]
    store = open_store(mailed)
    add_row(store, [name])
    try:
        with caplog.at_level(logging.INFO):
            report = run_with(mailed, store, dns_issuer(dns_world.bind.stop))
        assert [(o.name, o.status) for o in report.final] == [(name, "issued")]
        row = store.get(name)
        assert row is not None and row.crt and row.count_fail_update == 0
        assert [e.kind for e in store.events(name)][:2] == ["leftover", "issued"]
        assert not report.ok
        (left,) = report.leftovers
        assert left.kind == "dns-txt" and left.name == name
        assert left.target == f"_acme-challenge.{name}." and left.data["zone"] == name
        assert f"{LOOPBACK}:{dns_world.bind.port}" in left.error and "is named running" in left.error
        assert [lo.id for lo in store.leftovers()] == [left.id]
        assert "leftover" in [e.kind for e in store.events(name)]
        subjects = [m["Subject"] for m in smtp[0].messages]
        assert any(s.endswith(f"{name}: challenge record left behind") for s in subjects), subjects
        assert any("left behind" in r.getMessage() and r.levelno == logging.ERROR
                   for r in caplog.records)

        # still down: the next run (the command) tries again, shows it, exits 1
        toml = str(write_toml(mailed, tmp_path / "lecentral.toml"))
        down = CliRunner().invoke(main(), ["--config", toml, "renew", "--once"])
        assert down.exit_code == 1, down.output
        assert "LEFTOVER" in down.output and f"_acme-challenge.{name}." in down.output
        assert "1 challenge record(s) left behind" in down.output
        assert [lo.attempts for lo in store.leftovers()] == [2]
    finally:
        dns_world.bind.start()
    value = left.data["value"]
    assert value in txt(dns_world, name)  # really still published

    up = CliRunner().invoke(main(), ["--config", toml, "renew", "--once", "--json"])
    assert up.exit_code == 0, up.output
    assert '"cleaned": [' in up.output and value in up.output
    assert value not in txt(dns_world, name)
    assert store.leftovers() == []
    assert store.events(name)[0].kind == "cleaned"
    store.close()


def main() -> Any:
    from lecentral.cli.central import main as cli

    return cli


def test_zone_frozen_in_the_middle_of_a_run(dns_world: World, mailed: CentralConfig,
                                            tmp_path: Path) -> None:
    """The zone is frozen after validation: REFUSED, said as "frozen, rndc thaw"; the next run
    while frozen fails again (attempts 2, an error alert); once thawed, it is removed."""
    name = SPARE[6]
    store = open_store(mailed)
    add_row(store, [name])
    try:
        report = run_with(mailed, store, dns_issuer(lambda: dns_world.bind.freeze(name)))
        assert report.final[0].status == "issued" and not report.ok
        (left,) = report.leftovers
        assert "frozen" in left.error and f"rndc thaw {name}" in left.error
        again = run_with(mailed, store, dns_issuer(lambda: None))
        assert [lo.attempts for lo in again.leftovers] == [2] and not again.ok
        assert again.cleaned == []
    finally:
        dns_world.bind.thaw(name)
    assert left.data["value"] in txt(dns_world, name)
    last = run_with(mailed, store, dns_issuer(lambda: None))
    assert last.ok and [lo.id for lo in last.cleaned] == [left.id] and last.leftovers == []
    assert left.data["value"] not in txt(dns_world, name)
    store.close()


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


def test_webroot_file_that_cannot_be_removed(web_world: WebWorld, store: SqlStore,
                                             tmp_path: Path) -> None:
    """The challenge directory becomes immutable (chattr +i: EPERM even for root) after the CA
    fetched the token: the file stays, is reported, and the next run removes it (and the
    directories lecentral created for it)."""
    webroot = web_world.webroot("one")
    assert leftovers(webroot) == []
    config = make_web_config(web_world, tmp_path, http01_issuer="hooked")
    add_web_row(store, SITES["one"], webroot=webroot)
    locked: list[Path] = []

    def lock(directory: Path) -> None:
        chattr("+i", directory)
        locked.append(directory)

    try:
        report = run_with(config, store, web_issuer(lock))
        assert report.final[0].status == "issued" and not report.ok
        (left,) = report.leftovers
        path = Path(left.target)
        assert left.kind == "http01-file" and path.parent == webroot / ".well-known/acme-challenge"
        assert path.exists() and "Operation not permitted" in left.error
        assert store.leftovers()[0].data["path"] == str(path)
    finally:
        for directory in locked:
            chattr("-i", directory)
    after = run_with(config, store, web_issuer(lambda d: None))
    assert after.ok and [lo.id for lo in after.cleaned] == [left.id]
    assert not path.exists() and leftovers(webroot) == []
    assert store.leftovers() == []


def test_leftover_rows_are_checked_before_anything_is_removed(tmp_path: Path) -> None:
    """lecentral_leftovers is database input: a path or TXT lecentral could not have written (an
    edited row) is refused, and nothing is deleted; so is a challenge directory reached through a
    symbolic link."""
    from lecentral.errors import LecentralError
    from lecentral.leftovers import DNS_TXT, HTTP01_FILE, Leftover
    from lecentral.renew.cleanup import clean

    config = CentralConfig()
    victim = tmp_path / "etc" / "token_like"
    victim.parent.mkdir()
    victim.write_text("precious")
    elsewhere = tmp_path / "real" / ".well-known" / "acme-challenge"
    elsewhere.mkdir(parents=True)
    (elsewhere / "tok").write_text("x")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / ".well-known").symlink_to(elsewhere.parent)
    cases = [
        (str(victim), "not a challenge file lecentral could have written"),
        (f"{tmp_path}/site/.well-known/acme-challenge/../../../etc/token_like", "not a challenge"),
        (f"{tmp_path}/site/.well-known/acme-challenge/tok", "symbolic link"),
    ]
    for path, words in cases:
        left = Leftover(HTTP01_FILE, "a.example.test", path, {"path": path}, "x", id=1)
        with pytest.raises(LecentralError, match=words):
            clean(left, config)
    assert victim.read_text() == "precious" and (elsewhere / "tok").exists()

    data = {"name": "a.example.test", "fqdn": "www.other.test.", "zone": "a.example.test",
            "server": "127.0.0.1:53", "key_name": "k", "value": "v"}
    with pytest.raises(LecentralError, match="not a TXT record lecentral could have written"):
        clean(Leftover(DNS_TXT, "a.example.test", data["fqdn"], data, "x", id=2), config)
    with pytest.raises(LecentralError, match="has no valid 'value'"):
        clean(Leftover(DNS_TXT, "a.example.test", "t", {**data, "value": 3}, "x", id=3), config)
