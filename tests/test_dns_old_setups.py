"""Day one on an existing DNS setup, against the real BIND (and Pebble) of the test world.

- TSIG keys made by old BIND's ``dnssec-keygen -a HMAC-SHA512 -n HOST NAME``: the
  ``K<name>.+165+<id>.private`` and ``.key`` files. Debian's BIND 9.18 dnssec-keygen no longer
  makes HMAC keys, so they are written here in the exact shape BIND up to 9.16 wrote them
  (dst_parse.c ``dst__privstruct_writefile``: ``Private-key-format: v1.3``, ``Algorithm: 165
  (HMAC_SHA512)``, ``Key: <base64>``, ``Bits: AAA=``, then the ``Created``/``Publish``/
  ``Activate`` dates; the ``.key``: the KEY record as ``dns_rdata_totext`` printed it, ``NAME. IN
  KEY 512 3 165 <base64 split into words>``), holding the secret named.conf of the world has.
- ``[dns] server`` naming a host (``localhost:PORT``), resolved once per run.
- A configuration whose TSIG key file does not exist yet: ``init`` and ``config show`` work, the
  commands that need the key say which step of the guide makes it, and change nothing.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from renew_world import (
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
    run,
    write_toml,
)

from lecentral.cli.central import main
from lecentral.config import CentralConfig, DnsConfig, ZoneConfig
from lecentral.dns import wire
from lecentral.dns.challenge import DnsChallenges
from lecentral.errors import ConfigError


def keygen_private(directory: Path, key_name: str, secret: str) -> Path:
    """The .private file old BIND's dnssec-keygen wrote for an HMAC-SHA512 key (mode 0600)."""
    path = directory / f"K{key_name}.+165+31042.private"
    path.write_text(f"Private-key-format: v1.3\nAlgorithm: 165 (HMAC_SHA512)\nKey: {secret}\nBits: AAA=\n"
                    f"Created: 20130611093512\nPublish: 20130611093512\nActivate: 20130611093512\n")
    path.chmod(0o600)
    return path


def keygen_key(directory: Path, key_name: str, secret: str) -> Path:
    """The .key file beside it: the KEY record (for an HMAC key it holds the secret too)."""
    path = directory / f"K{key_name}.+165+31042.key"
    path.write_text(f"{key_name}. IN KEY 512 3 165 {secret[:56]} {secret[56:]}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def fresh_resolution() -> Iterator[None]:
    """Each test is a run of its own: host names resolved by another test are forgotten."""
    wire.forget_resolved()
    yield
    wire.forget_resolved()


def dns_config(world: World, **changes: Any) -> DnsConfig:
    return dataclasses.replace(DnsConfig(server=f"127.0.0.1:{world.bind.port}", port=world.bind.port,
                                         tsig_key_file=world.key_file("acme-update"),
                                         propagation_timeout=10, propagation_interval=0.05), **changes)


def publish_and_remove(config: DnsConfig, world: World, name: str) -> str:
    """Add a TXT for ``name`` through ``config``, see it served, remove it, see it gone; the
    primary the record went to."""
    challenges = DnsChallenges(config)
    record = challenges.publish(name, "old-setup-value")
    try:
        challenges.wait_propagated([record])
        assert world.bind.txt_values(f"_acme-challenge.{name}") == ["old-setup-value"]
    finally:
        assert challenges.remove(record)
    challenges.wait_removed([record])
    assert world.bind.txt_values(f"_acme-challenge.{name}") == []
    return record.server


def test_renew_with_a_dnssec_keygen_private_key_and_a_host_named_primary(
        dns_world: World, tmp_path: Path, store: Any) -> None:
    """The whole DNS-01 path: signed updates with the .private key, sent to ``localhost:PORT``,
    and the certificate issued by Pebble."""
    zone = new_zone(dns_world, "keygen")
    private = keygen_private(tmp_path, "acme-update", dns_world.bind.tsig_keys["acme-update"])
    base = make_config(dns_world, tmp_path)
    config = dataclasses.replace(base, dns=dataclasses.replace(
        base.dns, server=f"localhost:{dns_world.bind.port}", tsig_key_file=str(private)))
    _, key = add_row(store, [zone])
    report = run(config, store)
    assert [(o.name, o.status) for o in report.final] == [(zone, "issued")], report.final[0].message
    assert_issued(store, zone, [zone], key)
    assert dns_world.bind.txt_values(f"_acme-challenge.{zone}") == []


def test_a_dnssec_keygen_key_file_signs_updates_of_its_zone(dns_world: World, tmp_path: Path) -> None:
    """The .key file alone, for a sub-zone of its own key (``[dns.zones."Z"]``)."""
    zone = new_zone(dns_world, "keyrec", key_name="legacy-2012")
    key_file = keygen_key(tmp_path, "legacy-2012", dns_world.bind.tsig_keys["legacy-2012"])
    config = dns_config(dns_world, zones={zone: ZoneConfig(tsig_key_file=str(key_file))})
    assert DnsChallenges(config).locate(zone).key.name == "legacy-2012"
    publish_and_remove(config, dns_world, zone)


def test_a_host_named_primary_is_resolved_once_per_run(dns_world: World,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``getaddrinfo`` is wrapped only to count the calls (the real system resolver answers)."""
    calls: list[Any] = []
    real = socket.getaddrinfo

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    zone = new_zone(dns_world, "byname")
    config = dns_config(dns_world, server=f"LocalHost:{dns_world.bind.port}")
    first = publish_and_remove(config, dns_world, zone)
    second = publish_and_remove(config, dns_world, zone)  # another DnsChallenges of the same run
    assert first == second == f"127.0.0.1:{dns_world.bind.port}"  # records keep the address used
    assert calls.count("localhost") == 1


@pytest.mark.parametrize(("table", "setting"), [
    ('[dns]\nserver = "no-such-primary.invalid:53"\n', "[dns] server"),
    ('[dns.zones."x.example.test"]\nserver = "no-such-primary.invalid"\n',
     '[dns.zones."x.example.test"] server'),
])
def test_an_unresolvable_primary_names_the_setting(tmp_path: Path, table: str,
                                                   setting: str) -> None:
    """``lecentral dns check`` with a primary whose name does not resolve: the lookup goes to the
    system resolver, here one on 127.0.0.1 that nothing serves (tests/loopback_resolver.py)."""
    from loopback_resolver import run_with_loopback_resolver

    config = tmp_path / "lecentral.toml"
    config.write_text(table)
    done = run_with_loopback_resolver([str(Path(sys.executable).parent / "lecentral"), "--config",
                                       str(config), "dns", "check", "x.example.test"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{setting} = 'no-such-primary.invalid" in done.stderr, done.stderr
    assert "cannot resolve no-such-primary.invalid through the system resolver" in done.stderr


def test_a_bad_host_is_refused_before_any_lookup(dns_world: World) -> None:
    with pytest.raises(ConfigError, match=r"\[dns\] server = 'dns_1 .example.com:53': the host must be an IP "
                                          r"address or a host name"):
        DnsChallenges(dns_config(dns_world, server="dns_1 .example.com:53"))


# --- a key file that does not exist yet ------------------------------------------------------------


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def assert_says_which_step(text: str, missing: Path) -> None:
    assert f"TSIG key file {missing} ([dns] tsig_key_file) does not exist yet" in text
    assert f"tsig-keygen -a hmac-sha512 KEYNAME > {missing}" in text
    assert 'docs/dns.md, step 1, "The TSIG key"' in text


@pytest.fixture
def keyless(dns_world: World, tmp_path: Path) -> tuple[CentralConfig, Path, Path]:
    """A configuration naming a TSIG key file not made yet: (config, its toml, the missing key)."""
    missing = tmp_path / "etc" / "tsig.key"
    base = make_config(dns_world, tmp_path)
    config = dataclasses.replace(base, dns=dataclasses.replace(base.dns, tsig_key_file=str(missing),
                                                               zones={}))
    return config, write_toml(config, tmp_path / "lecentral.toml"), missing


def test_init_and_config_show_work_before_the_key_exists(keyless: tuple[CentralConfig, Path, Path]) -> None:
    _, toml, missing = keyless
    result = cli(toml, "init")
    assert result.exit_code == 0, result.output
    assert "created tables" in result.output
    shown = cli(toml, "config", "show", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["dns"]["tsig_key_file"] == str(missing)
    assert not missing.exists()


def test_dns_check_without_the_key_says_which_step_makes_it(
        dns_world: World, keyless: tuple[CentralConfig, Path, Path]) -> None:
    _, toml, missing = keyless
    zone = new_zone(dns_world, "nokey")
    serial = dns_world.bind.serial(zone)
    result = cli(toml, "dns", "check", zone)
    assert result.exit_code == 2, result.output
    assert_says_which_step(result.output, missing)
    assert dns_world.bind.serial(zone) == serial  # no update was sent


def test_renew_without_the_key_blocks_the_row_and_changes_nothing(
        dns_world: World, keyless: tuple[CentralConfig, Path, Path]) -> None:
    """The missing key is the run's configuration problem (exit 2, said once), not the row's:
    the row is blocked, its failure count and event log untouched."""
    config, _, missing = keyless
    zone = new_zone(dns_world, "nokeyrenew")
    serial = dns_world.bind.serial(zone)
    store = open_store(config)
    try:
        add_row(store, [zone])
        before = store.get(zone)
        report = run(config, store)
        outcome = report.final[0]
        assert outcome.status == "blocked"
        (problem,) = report.problems
        assert problem.names == [zone] and problem.exit_code == 2
        assert_says_which_step(problem.message, missing)
        after = store.get(zone)
        assert before is not None and after is not None and not after.crt
        assert after == before
        assert [e.kind for e in store.events(zone)] == ["added"]
    finally:
        store.close()
    assert dns_world.bind.serial(zone) == serial
    assert not missing.exists()
