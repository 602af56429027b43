"""`lecentral dns check` against a real BIND primary + secondary with sub-zones broken on purpose.

Each broken sub-zone has one problem; the check must name it with FAIL or WARN and a fix, and
the exit status must say so (0 OK, 1 WARN, 2 FAIL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.bind import BindServer, new_tsig_secret
from lecentral_testing.ports import free_port

from lecentral.cli.central import main

GOOD, LAME, STALE, NOGRANT = "good.example.test", "lame.example.test", "stale.example.test", "nogrant.example.test"
BADSECRET, FROZEN, SLOW = "badsecret.example.test", "frozen.example.test", "slow.example.test"
CNAMED, DELEGATE = "cn.example.test", "delegate.example.test"
WRONG_SECRET = new_tsig_secret()


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    """Another named, authoritative for other.test only: listed as a nameserver, it is lame."""
    with BindServer(tmp_path_factory.mktemp("other"), parent="other.test") as server:
        yield server


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    server = BindServer(tmp_path_factory.mktemp("bind"), secondary=True, parent_records=[
        # the parent also delegates lame.example.test to ns3, which does not serve it
        f"{LAME}. IN NS ns3.example.test.", "ns3.example.test. IN A 127.0.0.1"])
    for zone in (GOOD, LAME, STALE, BADSECRET, FROZEN):
        server.add_subzone(zone)
    server.add_subzone(NOGRANT, grant_names=["_acme-challenge.elsewhere.example.test"])
    server.add_subzone(SLOW, soa_minimum=43200, ttl=43200)  # the seed's 12 hours
    server.add_subzone(DELEGATE, key_name="delegate-key", grant_names=[f"cn.{DELEGATE}"])
    server.add_subzone(CNAMED, records=[f"_acme-challenge CNAME cn.{DELEGATE}."])
    with server:
        yield server


@pytest.fixture(scope="module")
def config(bind: BindServer, other: BindServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lecentral.toml for the world."""
    workdir = tmp_path_factory.mktemp("config")
    wrong = workdir / "wrong.key"
    wrong.write_text(f'key "acme-update" {{ algorithm hmac-sha512; secret "{WRONG_SECRET}"; }};\n')
    wrong.chmod(0o600)
    path = workdir / "lecentral.toml"
    path.write_text(f"""
[dns]
server = "127.0.0.1:{bind.port}"
port = {bind.port}
tsig_key_file = "{bind.key_file('acme-update')}"
propagation_timeout = 5
propagation_interval = 0.05

[dns.nameserver_addresses]
"ns2.example.test" = "127.0.0.1:{bind.secondary_port}"
"ns3.example.test" = "127.0.0.1:{other.port}"

[dns.zones."{DELEGATE}"]
tsig_key_file = "{bind.key_file('delegate-key')}"

[dns.zones."{BADSECRET}"]
tsig_key_file = "{wrong}"
""")
    return path


def dns_check(config: Path, *args: str) -> tuple[Result, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["--config", str(config), "dns", "check", "--json", *args])
    return result, json.loads(result.stdout)


def findings(report: dict[str, Any], status: str) -> dict[str, str]:
    """check name -> message (+ fix) of the findings with ``status``."""
    return {f["check"]: f"{f['message']} || {f['fix']}" for f in report["findings"] if f["status"] == status}


def test_correct_subzone_is_all_ok(config: Path, bind: BindServer) -> None:
    result, (report,) = dns_check(config, GOOD)
    assert result.exit_code == 0, result.output
    assert report["status"] == "OK" and report["zone"] == GOOD
    assert set(findings(report, "OK")) == {"zone", "nameservers", "delegation", "update", "negative-ttl"}
    assert "ns1.example.test" in findings(report, "OK")["nameservers"]
    assert "ns2.example.test" in findings(report, "OK")["nameservers"]
    assert bind.txt_values(f"_acme-challenge.{GOOD}") == []  # the live test cleaned up


def test_text_output(config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config), "dns", "check", GOOD, SLOW])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{GOOD}: OK (zone {GOOD})"
    assert f"{SLOW}: WARN (zone {SLOW})" in lines
    assert any(line.strip().startswith("fix: set the SOA minimum") for line in lines)


def test_lame_delegation(config: Path, other: BindServer) -> None:
    result, (report,) = dns_check(config, LAME)
    assert result.exit_code == 2
    delegation = findings(report, "FAIL")["delegation"]
    assert "ns3.example.test" in delegation
    messages = [f["message"] for f in report["findings"] if f["status"] == "FAIL"]
    assert f"lame delegation: ns3.example.test (127.0.0.1:{other.port}) does not serve the zone " \
           f"authoritatively (lame)" in messages
    assert "update" in findings(report, "OK")  # the zone itself works


def test_secondary_with_a_stale_serial(config: Path, bind: BindServer) -> None:
    from lecentral.config import load_central
    from lecentral.dns.challenge import DnsChallenges

    bind.hold_secondary()
    try:
        challenges = DnsChallenges(load_central(str(config)).dns)
        record = challenges.publish(STALE, "bump-the-serial")
        challenges.remove(record)  # primary serial +2, the held secondary still has the old one
        primary = bind.serial(STALE)
        result, (report,) = dns_check(config, "--timeout", "0.5", STALE)
    finally:
        bind.release_secondary()
    assert result.exit_code == 2
    failed = findings(report, "FAIL")
    assert f"ns2.example.test (127.0.0.1:{bind.secondary_port}): serial {primary - 2}, the primary has {primary}" \
        in failed["nameservers"]
    assert "rndc refresh" in failed["nameservers"]
    assert "ns2.example.test" in failed["update"]  # the test TXT never reached it
    assert bind.txt_values(f"_acme-challenge.{STALE}") == []


def test_key_without_the_update_grant(config: Path) -> None:
    result, (report,) = dns_check(config, NOGRANT)
    assert result.exit_code == 2
    assert "update-policy does not grant key acme-update" in findings(report, "FAIL")["update"]


def test_wrong_secret(config: Path, bind: BindServer) -> None:
    result, (report,) = dns_check(config, BADSECRET)
    assert result.exit_code == 2
    message, fix = findings(report, "FAIL")["update"].split(" || ")
    assert message.startswith(f"TSIG key acme-update rejected by server 127.0.0.1:{bind.port} for "
                              f"zone {BADSECRET} (BADSIG: the secret in ")
    assert message.endswith(" differs from the server's)"), message  # the fix is not said twice
    assert fix == "copy the key clause from the server's named.conf into the key file"
    text = CliRunner().invoke(main, ["--config", str(config), "dns", "check", BADSECRET])
    assert text.exit_code == 2
    lines = text.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.lstrip().startswith("FAIL  update"))
    assert lines[failed + 1].strip() == f"fix: {fix}", text.stdout  # docs/dns.md's promise
    for secret in [WRONG_SECRET, *bind.tsig_keys.values()]:
        assert secret not in result.output + text.output


def test_every_fail_and_warn_has_a_fix_line(config: Path, bind: BindServer) -> None:
    """docs/dns.md promises a `fix:` line for each problem: every FAIL and WARN of the broken
    sub-zones of this module has one."""
    names = [BADSECRET, NOGRANT, LAME, SLOW, FROZEN]
    bind.freeze(FROZEN)
    try:
        result, reports = dns_check(config, *names)
    finally:
        bind.thaw(FROZEN)
    assert result.exit_code == 2
    problems = [(r["name"], f) for r in reports for f in r["findings"] if f["status"] != "OK"]
    assert {name for name, _ in problems} == set(names)
    for name, finding in problems:
        assert finding["fix"], (name, finding)


def test_frozen_zone(config: Path, bind: BindServer) -> None:
    bind.freeze(FROZEN)
    try:
        result, (report,) = dns_check(config, FROZEN)
    finally:
        bind.thaw(FROZEN)
    assert result.exit_code == 2
    assert f"rndc thaw {FROZEN}" in findings(report, "FAIL")["update"]


def test_twelve_hour_negative_ttl_warns(config: Path) -> None:
    result, (report,) = dns_check(config, SLOW)
    assert result.exit_code == 1
    assert report["status"] == "WARN"
    warning = findings(report, "WARN")["negative-ttl"]
    assert "43200 s (12 hours" in warning and "rndc freeze slow.example.test" in warning


def test_cname_delegated_challenge(config: Path) -> None:
    result, (report,) = dns_check(config, CNAMED)
    assert result.exit_code == 0, result.output
    assert report["zone"] == DELEGATE
    assert f"via CNAME _acme-challenge.{CNAMED}." in findings(report, "OK")["zone"]


def test_name_without_a_zone_and_several_names(config: Path, bind: BindServer) -> None:
    result, reports = dns_check(config, GOOD, "www.elsewhere.test")
    assert result.exit_code == 2
    assert [r["status"] for r in reports] == ["OK", "FAIL"]
    assert findings(reports[1], "FAIL")["zone"] == (
        f"DNS server 127.0.0.1:{bind.port} refused to answer for _acme-challenge.www.elsewhere.test: "
        "it serves no zone enclosing it; point [dns] server (or a "
        '[dns.zones."ZONE"] server) at the primary that serves it || point [dns] server at the '
        "primary of the zone above www.elsewhere.test; if that zone is on no server lecentral may "
        "update, create a sub-zone for it on one with `lecentral dns zone www.elsewhere.test --ns "
        "HOST` and delegate it")


def test_dns_zone_whose_parent_the_server_does_not_serve(config: Path, bind: BindServer,
                                                         tmp_path: Path) -> None:
    """`lecentral dns zone` asks [dns] server for the parent's primary: when it serves no such
    zone, the error says how to give it (--ns) and never to run `lecentral dns zone` again."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--config", str(config), "dns", "zone", "www.elsewhere.test",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: cannot find the parent zone's primary of www.elsewhere.test ")
    assert (f"(DNS server 127.0.0.1:{bind.port} refused to answer for elsewhere.test: it serves no "
            "zone enclosing it; point [dns] server (or a [dns.zones.\"ZONE\"] server) "
            "at the primary that serves it); pass --ns HOST") in " ".join(result.stderr.split())
    assert "lecentral dns zone" not in error and ".." not in error
    assert not out.exists()


def test_a_keygen_file_with_the_wrong_algorithm_is_a_key_problem(config: Path, bind: BindServer,
                                                                 tmp_path: Path) -> None:
    """K*.+157+*.private holding algorithm 165: the fix is the key file, not a sub-zone."""
    key = tmp_path / "Kacme-update.+157+00042.private"
    key.write_text("Private-key-format: v1.3\nAlgorithm: 165 (HMAC_SHA512)\n"
                   f"Key: {new_tsig_secret()}\n")
    key.chmod(0o600)
    toml = tmp_path / "lecentral.toml"
    toml.write_text(config.read_text().replace(f'"{bind.key_file("acme-update")}"', f'"{key}"', 1))
    result, (report,) = dns_check(toml, GOOD)
    assert result.exit_code == 2, result.output
    message, fix = findings(report, "FAIL")["zone"].split(" || ")
    assert "the file name says algorithm 157, its 'Algorithm:' line 165" in message
    assert fix == ('fix the key file or the setting the error names (TSIG keys: docs/dns.md, "The '
                   'TSIG key"), then check again')


def test_resolver_view(config: Path, bind: BindServer, tmp_path: Path) -> None:
    from lecentral_testing.resolver import ResolverServer

    resolver = ResolverServer(tmp_path / "resolver", bind.port).start()
    try:
        result, (report,) = dns_check(config, "--resolver", f"127.0.0.1:{resolver.port}", GOOD)
        dead = f"127.0.0.1:{free_port(udp=True)}"
        result_dead, (report_dead,) = dns_check(config, "--resolver", dead, GOOD)
    finally:
        resolver.stop()
    assert result.exit_code == 0, result.output
    assert f"resolver 127.0.0.1:{resolver.port} sees {GOOD} NS ns1.example.test, ns2.example.test" in \
        findings(report, "OK")["resolver"]
    assert result_dead.exit_code == 1 and dead in findings(report_dead, "WARN")["resolver"]


def test_usage_errors(config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config), "dns", "check"])
    assert result.exit_code == 2 and "name at least one NAME, or --all" in result.output
