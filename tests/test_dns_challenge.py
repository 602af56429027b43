"""DNS-01 records against a real BIND primary + secondary: publish, wait, remove, and every error.

The world: named authoritative for example.test and one updatable sub-zone per name, each NS set
listing the primary and a secondary (``ns2``, reached through ``[dns] nameserver_addresses``
because both run on 127.0.0.1 at different ports).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.bind import BindServer, new_tsig_secret
from lecentral_testing.ports import free_port

from lecentral.config import DnsConfig, ZoneConfig
from lecentral.dns import update
from lecentral.dns.challenge import DnsChallenges, PublishedTxt
from lecentral.dns.tsig import TsigKey
from lecentral.dns.wire import Server
from lecentral.dns.zones import ChallengeTarget
from lecentral.errors import DnsError

A, B, C, F = "a.example.test", "b.example.test", "c.example.test", "f.example.test"
DELEGATE = "acme.example.test"
WRONG_SECRET = new_tsig_secret()


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    # ext.example.test is delegated to a server that is not ours: a referral, not an answer
    server = BindServer(tmp_path_factory.mktemp("bind"), secondary=True,
                        parent_records=["ext.example.test. IN NS ns.elsewhere.test."])
    server.add_subzone(A)
    server.add_subzone(B, key_name="b-key")
    server.add_subzone(F)
    # c's challenge is delegated by CNAME into a zone that only holds challenge records
    server.add_subzone(DELEGATE, key_name="delegate-key", grant_names=[f"c.{DELEGATE}"])
    server.add_subzone(C, records=[f"_acme-challenge CNAME c.{DELEGATE}."])
    server.add_key("stranger")
    with server:
        yield server


def make_config(bind: BindServer, **changes: Any) -> DnsConfig:
    """The [dns] table an operator would write for this world."""
    config = DnsConfig(
        server=f"127.0.0.1:{bind.port}",
        port=bind.port,
        tsig_key_file=str(bind.key_file("acme-update")),
        propagation_timeout=20.0,
        propagation_interval=0.05,
        nameserver_addresses={f"ns2.{bind.parent}": f"127.0.0.1:{bind.secondary_port}"}
        if bind.has_secondary else {},
        zones={
            zone: ZoneConfig(tsig_key_file=str(bind.key_file(key)))
            for zone, key in ((B, "b-key"), (DELEGATE, "delegate-key")) if zone in bind.subzones
        },
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture
def challenges(bind: BindServer) -> Iterator[DnsChallenges]:
    yield DnsChallenges(make_config(bind))
    # every test leaves the challenge records as it found them: empty
    for fqdn in (f"_acme-challenge.{A}", f"_acme-challenge.{B}", f"_acme-challenge.{F}", f"c.{DELEGATE}"):
        assert bind.txt_values(fqdn) == [], fqdn


def both(bind: BindServer, fqdn: str) -> tuple[list[str], list[str]]:
    """TXT values at ``fqdn`` on the primary and on the secondary."""
    return bind.txt_values(fqdn), bind.txt_values(fqdn, secondary=True)


def assert_no_secret(bind: BindServer, *texts: str) -> None:
    secrets = [*bind.tsig_keys.values(), WRONG_SECRET]
    for text in texts:
        for secret in secrets:
            assert secret not in text and secret[:16] not in text


def test_single_name(bind: BindServer, challenges: DnsChallenges, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    record = challenges.publish(A, "token-a")
    assert record == PublishedTxt(name=A, fqdn=f"_acme-challenge.{A}.", zone=A, server=f"127.0.0.1:{bind.port}",
                                  key_name="acme-update", value="token-a")
    challenges.wait_propagated([record])
    assert both(bind, record.fqdn) == (["token-a"], ["token-a"])
    challenges.remove(record)
    challenges.wait_removed([record])
    assert both(bind, record.fqdn) == ([], [])
    assert "added TXT _acme-challenge.a.example.test." in caplog.text
    assert_no_secret(bind, caplog.text, repr(record), repr(challenges.locate(A)))


def test_two_names_in_two_subzones_with_their_own_keys(bind: BindServer, challenges: DnsChallenges) -> None:
    records = [challenges.publish(A, "va"), challenges.publish(B, "vb")]
    assert [(r.zone, r.key_name) for r in records] == [(A, "acme-update"), (B, "b-key")]
    challenges.wait_propagated(records)
    assert both(bind, f"_acme-challenge.{B}.") == (["vb"], ["vb"])
    for record in records:
        challenges.remove(record)


def test_wildcard_and_apex_share_the_name_and_removal_is_exact(bind: BindServer, challenges: DnsChallenges) -> None:
    apex = challenges.publish(A, "apex-value")
    wild = challenges.publish(f"*.{A}", "wildcard-value")
    assert apex.fqdn == wild.fqdn == f"_acme-challenge.{A}."
    challenges.wait_propagated([apex, wild])
    assert both(bind, apex.fqdn) == (["apex-value", "wildcard-value"], ["apex-value", "wildcard-value"])
    challenges.remove(wild)
    challenges.wait_removed([wild])
    assert both(bind, apex.fqdn) == (["apex-value"], ["apex-value"])
    challenges.remove(apex)


def test_cname_delegated_challenge(bind: BindServer, challenges: DnsChallenges) -> None:
    record = challenges.publish(C, "vc")
    assert (record.fqdn, record.zone, record.key_name) == (f"c.{DELEGATE}.", DELEGATE, "delegate-key")
    assert challenges.locate(C).cname_chain == (f"_acme-challenge.{C}.",)
    challenges.wait_propagated([record])
    # what the CA follows: the CNAME, then the TXT at its target on every nameserver
    assert str(bind.query(f"_acme-challenge.{C}.").answer[0][0].target) == f"c.{DELEGATE}."
    assert both(bind, f"c.{DELEGATE}.") == (["vc"], ["vc"])
    challenges.remove(record)
    assert bind.txt_values(f"c.{DELEGATE}") == []


def test_wait_returns_only_once_a_lagging_secondary_catches_up(bind: BindServer, challenges: DnsChallenges) -> None:
    bind.hold_secondary()
    try:
        record = challenges.publish(A, "late")
        assert both(bind, record.fqdn) == (["late"], [])
        done: list[Any] = []
        waiter = threading.Thread(target=lambda: done.append(_run(challenges.wait_propagated, [record])))
        waiter.start()
        assert bind.txt_values(record.fqdn, secondary=True) == []
        # whenever the waiter returns, the secondary must have had the value by then
        bind.release_secondary()
        waiter.join(30)
        assert done == [None]
        assert both(bind, record.fqdn) == (["late"], ["late"])
    finally:
        bind.release_secondary()
        challenges.remove(record)
        challenges.wait_removed([record])


def _run(func: Any, *args: Any) -> Exception | None:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001  handed to the test thread
        return exc
    return None


def test_lagging_secondary_times_out_naming_it(bind: BindServer, caplog: pytest.LogCaptureFixture) -> None:
    challenges = DnsChallenges(make_config(bind, propagation_timeout=0.5))
    bind.hold_secondary()
    try:
        record = challenges.publish(A, "never-there")
        with caplog.at_level(logging.DEBUG), pytest.raises(DnsError) as info:
            challenges.wait_propagated([record])
        message = str(info.value)
        # the lagging list names ns2 and only ns2: the primary (ns1) serves the TXT
        lagging = re.search(r"after [0-9.]+s: (.*?)\. ", message)
        assert lagging is not None, message
        assert lagging.group(1) == f"ns2.example.test (127.0.0.1:{bind.secondary_port})"
        assert "lacks TXT 'never-there'" in message and "ns1.example.test" not in message
        assert "not answered" in message
        assert_no_secret(bind, message, caplog.text)
    finally:
        challenges.remove(record)
        bind.release_secondary()
    challenges.wait_removed([record])


def test_dead_nameserver_times_out_as_no_answer(bind: BindServer) -> None:
    """ns2 is pointed at a port nothing listens on: a nameserver that is down."""
    dead = f"127.0.0.1:{free_port(udp=True)}"
    challenges = DnsChallenges(make_config(bind, propagation_timeout=0.5,
                                           nameserver_addresses={"ns2.example.test": dead}))
    record = challenges.publish(A, "nobody-home")
    try:
        with pytest.raises(DnsError, match=f"ns2.example.test \\({dead}\\): no answer"):
            challenges.wait_propagated([record])
    finally:
        challenges.remove(record)
    assert bind.txt_values(record.fqdn) == []


def refused(bind: BindServer, challenges: DnsChallenges, name: str, caplog: pytest.LogCaptureFixture) -> str:
    """Publish must fail; returns the message after checking nothing was written and no secret shown."""
    with caplog.at_level(logging.DEBUG), pytest.raises(DnsError) as info:
        challenges.publish(name, "should-not-exist")
    message = str(info.value)
    assert_no_secret(bind, message, caplog.text, repr(info.value))
    for zone in (A, B, F):
        assert "should-not-exist" not in bind.txt_values(f"_acme-challenge.{zone}")
    return message


def key_file(tmp_path: Path, name: str, secret: str) -> str:
    path = tmp_path / f"{name}.key"
    path.write_text(f'key "{name}" {{ algorithm hmac-sha512; secret "{secret}"; }};\n')
    path.chmod(0o600)
    return str(path)


def test_wrong_secret(bind: BindServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(bind, tsig_key_file=key_file(tmp_path, "acme-update", WRONG_SECRET))
    message = refused(bind, DnsChallenges(config), A, caplog)
    assert f"TSIG key acme-update rejected by server 127.0.0.1:{bind.port} for zone {A} (BADSIG" in message
    assert "acme-update.key" in message  # says which file to fix


def test_unknown_key(bind: BindServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(bind, tsig_key_file=key_file(tmp_path, "nobody", WRONG_SECRET))
    message = refused(bind, DnsChallenges(config), A, caplog)
    assert f"TSIG key nobody rejected by server 127.0.0.1:{bind.port} for zone {A} (BADKEY" in message


def test_key_granted_for_another_zone(bind: BindServer, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(bind, zones={B: ZoneConfig(tsig_key_file=str(bind.key_file("acme-update")))})
    message = refused(bind, DnsChallenges(config), B, caplog)
    assert "(REFUSED)" in message
    assert f"update-policy does not grant key acme-update TXT at _acme-challenge.{B}. Add to zone" in message
    assert f"grant acme-update name _acme-challenge.{B}. TXT" in message  # named.conf: absolute
    assert ".." not in message


def test_key_granted_nothing(bind: BindServer, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(bind, tsig_key_file=str(bind.key_file("stranger")))
    assert "does not grant key stranger" in refused(bind, DnsChallenges(config), A, caplog)


def test_clock_skew(bind: BindServer, challenges: DnsChallenges, caplog: pytest.LogCaptureFixture,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """BADTIME from the real named. The only stand-in: this host's clock as dnspython's TSIG code
    reads it is moved an hour ahead (the system clock cannot be changed for a test)."""
    import time
    import types

    import dns.message

    skewed = types.SimpleNamespace(time=lambda: time.time() + 3600)
    monkeypatch.setattr(dns.message, "time", skewed)
    message = refused(bind, challenges, A, caplog)
    assert f"TSIG key acme-update rejected by server 127.0.0.1:{bind.port} for zone {A} (BADTIME" in message
    assert "chrony" in message


def test_frozen_zone(bind: BindServer, challenges: DnsChallenges, caplog: pytest.LogCaptureFixture) -> None:
    bind.freeze(F)
    try:
        message = refused(bind, challenges, F, caplog)
    finally:
        bind.thaw(F)
    assert f"It is frozen (run `rndc thaw {F}`" in message
    challenges.remove(challenges.publish(F, "after-thaw"))  # thawed: works again


def test_name_without_its_own_subzone(bind: BindServer, challenges: DnsChallenges,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """The challenge of a name with no sub-zone would go into the parent, a zone holding other
    names (hand-edited): refused before any update is sent, saying how to make the sub-zone.
    It used to be sent; with a key allowed to update the parent, BIND would have rewritten it."""
    serial = bind.serial("example.test")
    with pytest.raises(DnsError, match=r"plain.example.test has no sub-zone of its own: "
                                       r"_acme-challenge.plain.example.test is in zone example.test"
                                       r".*`lecentral dns zone plain.example.test`"):
        challenges.publish("plain.example.test", "x")
    assert bind.serial("example.test") == serial
    # named in [dns.zones], the parent is the operator's choice: then BIND decides (here: no)
    opted = DnsChallenges(make_config(bind, zones={"example.test": ZoneConfig(
        tsig_key_file=str(bind.key_file("acme-update")))}))
    assert opted.locate("plain.example.test").zone == "example.test"  # the parent: no update-policy
    assert "takes no dynamic updates" in refused(bind, opted, "plain.example.test", caplog)


def test_name_outside_every_zone_of_the_server(bind: BindServer, challenges: DnsChallenges) -> None:
    with pytest.raises(DnsError, match=f"DNS server 127.0.0.1:{bind.port} refused to answer .* serves no zone"):
        challenges.publish("www.elsewhere.test", "x")


def test_named_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lone = BindServer(tmp_path, subzones=[A])
    with lone:
        challenges = DnsChallenges(make_config(lone))
        record = challenges.publish(A, "orphan")
    with caplog.at_level(logging.DEBUG), pytest.raises(DnsError, match=f"127.0.0.1:{lone.port}.*is named running"):
        challenges.publish(A, "v")
    # the update itself (zone already known) fails as clearly, and remove() only logs
    target = ChallengeTarget(A, record.fqdn, A, Server("127.0.0.1", lone.port), _key(lone))
    with pytest.raises(DnsError, match=f"DNS server 127.0.0.1:{lone.port} unreachable while adding TXT"):
        update.add_txt(target, "v")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert challenges.remove(record) is False
    assert 'left behind: TXT _acme-challenge.a.example.test. "orphan"' in caplog.text
    assert "nsupdate" in caplog.text
    assert_no_secret(lone, caplog.text)


def _key(bind: BindServer) -> TsigKey:
    return TsigKey("acme-update", "hmac-sha512", bind.tsig_keys["acme-update"])


def test_concurrent_publish_from_many_threads(bind: BindServer, challenges: DnsChallenges) -> None:
    names = [A, f"*.{A}", B, C] * 4
    results: list[Any] = [None] * len(names)

    def work(i: int) -> None:
        try:
            results[i] = challenges.publish(names[i], f"value-{i}")
        except Exception as exc:  # noqa: BLE001  the assertion below shows it
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(r, PublishedTxt) for r in results), results
    challenges.wait_propagated(results)
    assert len(bind.txt_values(f"_acme-challenge.{A}")) == 8
    removers = [threading.Thread(target=challenges.remove, args=(r,)) for r in results]
    for thread in removers:
        thread.start()
    for thread in removers:
        thread.join(30)
    challenges.wait_removed(results)


def test_check_update_permission(bind: BindServer, challenges: DnsChallenges) -> None:
    """One UPDATE adding and deleting a test TXT: the zone is not changed at all (BIND keeps the
    serial: no journal write, no NOTIFY), and a key the zone does not grant is refused."""
    serial = bind.serial(B)
    record = challenges.check_update_permission(B)
    assert record.zone == B and record.value.startswith("lecentral-check-")
    assert bind.txt_values(f"_acme-challenge.{B}") == []
    assert bind.serial(B) == serial
    config = make_config(bind, zones={B: ZoneConfig(tsig_key_file=str(bind.key_file("acme-update")))})
    with pytest.raises(DnsError, match="does not grant key acme-update"):
        DnsChallenges(config).check_update_permission(B)
    assert bind.txt_values(f"_acme-challenge.{B}") == []
    assert bind.serial(B) == serial


def test_one_key_file_with_several_keys(bind: BindServer, tmp_path: Path) -> None:
    both_keys = tmp_path / "all.key"
    both_keys.write_text(bind.key_file("acme-update").read_text() + bind.key_file("b-key").read_text())
    both_keys.chmod(0o600)
    config = make_config(bind, tsig_key_file=str(both_keys), tsig_key_name="acme-update",
                         zones={B: ZoneConfig(tsig_key_name="b-key")})
    challenges = DnsChallenges(config)
    records = [challenges.publish(A, "from-a"), challenges.publish(B, "from-b")]
    assert [r.key_name for r in records] == ["acme-update", "b-key"]
    for record in records:
        challenges.remove(record)


def test_zone_on_another_primary(bind: BindServer, tmp_path: Path) -> None:
    """[dns.zones."Z"] server: names in Z are looked up and updated there, not on [dns] server."""
    with BindServer(tmp_path / "other", parent="other.test", subzones=["x.other.test"]) as other:
        config = make_config(bind, zones={"x.other.test": ZoneConfig(
            server=f"127.0.0.1:{other.port}", tsig_key_file=str(other.key_file("acme-update")))})
        challenges = DnsChallenges(config)
        record = challenges.publish("*.x.other.test", "elsewhere")
        assert (record.zone, record.server) == ("x.other.test", f"127.0.0.1:{other.port}")
        assert other.txt_values("_acme-challenge.x.other.test") == ["elsewhere"]
        challenges.remove(record)
        assert other.txt_values("_acme-challenge.x.other.test") == []


def test_zone_delegated_away_from_the_configured_server(challenges: DnsChallenges) -> None:
    with pytest.raises(DnsError, match=r"not authoritative for ext.example.test \(it delegates it to "
                                       r"ns.elsewhere.test\).*\[dns.zones.\"ext.example.test\"\] server"):
        challenges.publish("www.ext.example.test", "x")


def test_zones_are_found_once_per_pass(bind: BindServer) -> None:
    """A DnsChallenges keeps the zone it found for a name, so a certificate's zone test, publish
    and removal go to the same zone; after forget() (the next renew pass: a retry round) it
    looks again and sees a sub-zone made meanwhile. (The parent is named in [dns.zones] here:
    otherwise a name without a sub-zone of its own is refused, not located.)"""
    import secrets

    challenges = DnsChallenges(make_config(bind, zones={"example.test": ZoneConfig(
        tsig_key_file=str(bind.key_file("acme-update")))}))
    name = f"late-{secrets.token_hex(3)}.example.test"
    assert challenges.locate(name).zone == "example.test"  # no sub-zone yet: the parent's
    bind.add_subzone(name)
    assert challenges.locate(name).zone == "example.test"
    challenges.forget()
    assert challenges.locate(name).zone == name
    record = challenges.publish(name, "after-forget")
    challenges.wait_propagated([record])
    assert challenges.remove(record)
