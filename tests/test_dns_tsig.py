"""BIND key files, server addresses and certificate names: parsing without ever echoing a secret."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from lecentral.config import DnsConfig, ZoneConfig
from lecentral.dns.tsig import KeyFiles, parse_key_text, read_key_file
from lecentral.dns.wire import Server, parse_server
from lecentral.dns.zones import ZoneLocator, challenge_name, clean_name
from lecentral.errors import ConfigError, DnsError

SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0hISE="
OTHER = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI="


def key_clause(name: str, secret: str = SECRET, algorithm: str = "hmac-sha512") -> str:
    return f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_tsig_keygen_output_parses() -> None:
    keys = parse_key_text(key_clause("acme-update"), "k.key")
    key = keys["acme-update"]
    assert (key.name, key.algorithm, key.secret) == ("acme-update", "hmac-sha512", SECRET)
    assert SECRET not in repr(key) and SECRET not in str(key)
    assert key.dnspython_key().name.to_text() == "acme-update."


def test_several_keys_comments_and_other_statements() -> None:
    text = (
        "# written by tsig-keygen\n// another comment\n/* block\n comment */\n"
        + key_clause("one") + 'options { directory "/var/cache/bind"; };\n'
        + key_clause("Two.", OTHER, "HMAC-SHA256")
    )
    keys = parse_key_text(text, "k.key")
    assert sorted(keys) == ["one", "two"]
    assert keys["two"].algorithm == "hmac-sha256" and keys["two"].secret == OTHER


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key clause found"),
        ('key "k" { algorithm hmac-sha512; };', "secret is missing or not valid base64"),
        (f'key "k" {{ algorithm hmac-sha512; secret "{SECRET[:-3]}!!"; }};', "not valid base64"),
        (f'key "k" {{ algorithm hmac-foo; secret "{SECRET}"; }};', "algorithm 'hmac-foo'"),
        (f'key "k" {{ secret "{SECRET}"; }};', "algorithm missing"),
        (f'key "k" {{ algorithm hmac-sha512; secret "{SECRET}" }};', "expected ';'"),
        (f'key "k" {{ algorithm hmac-sha512; secret "{SECRET}"; }}', "file ends"),
        (f'key "k" {{ algorithm hmac-sha512; secret "{SECRET}"; owner x; }};', "unknown option 'owner'"),
        (key_clause("k") + key_clause("k", OTHER), "defined twice"),
    ],
)
def test_bad_key_files_name_the_problem_not_the_secret(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_key_text(text, "/etc/lecentral/k.key")
    assert "/etc/lecentral/k.key" in str(info.value)
    assert SECRET not in str(info.value) and SECRET[:20] not in str(info.value)
    assert OTHER not in str(info.value)


def test_missing_unreadable_and_world_readable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_key_file(tmp_path / "none.key")
    path = write(tmp_path / "k.key", key_clause("k"))
    path.chmod(0o644)
    with caplog.at_level(logging.DEBUG):
        assert read_key_file(path)["k"].secret == SECRET
    assert "readable by every user" in caplog.text and SECRET not in caplog.text
    if os.geteuid() != 0:  # root reads anything; the message is then unreachable
        path.chmod(0)
        with pytest.raises(ConfigError, match="not readable"):
            read_key_file(path)


def test_key_files_cache_reloads_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "k.key", key_clause("k"))
    files = KeyFiles()
    assert files.keys(str(path))["k"].secret == SECRET
    write(path, key_clause("k", OTHER) + "\n")  # another size, so the stamp changes even within one mtime tick
    assert files.keys(str(path))["k"].secret == OTHER


def test_pick_a_key_for_a_zone(tmp_path: Path) -> None:
    one = write(tmp_path / "one.key", key_clause("only"))
    many = write(tmp_path / "many.key", key_clause("a.example.test") + key_clause("other", OTHER))
    files = KeyFiles()
    assert files.pick(str(one), "", "x.example.test", "[dns]").name == "only"
    assert files.pick(str(many), "", "a.example.test", "[dns]").name == "a.example.test"
    assert files.pick(str(many), "other", "a.example.test", "[dns]").name == "other"
    with pytest.raises(ConfigError, match="several keys .* tsig_key_name in \\[dns\\]"):
        files.pick(str(many), "", "b.example.test", "[dns]")
    with pytest.raises(ConfigError, match="key nope is not in"):
        files.pick(str(many), "nope", "b.example.test", "[dns]")


def test_zone_overrides_choose_key_and_server(tmp_path: Path) -> None:
    default = write(tmp_path / "default.key", key_clause("default"))
    special = write(tmp_path / "special.key", key_clause("special", OTHER))
    both = write(tmp_path / "both.key", key_clause("k1") + key_clause("k2", OTHER))
    dns = DnsConfig(server="127.0.0.1:5300", tsig_key_file=str(default), zones={
        "svc.example.test": ZoneConfig(tsig_key_file=str(special), server="127.0.0.2:5301"),
        "Named.Example.Test.": ZoneConfig(tsig_key_file=str(both), tsig_key_name="k2"),
    })
    locator = ZoneLocator(dns)
    assert locator.key_for("a.example.test").name == "default"
    assert locator.key_for("svc.example.test").name == "special"
    assert locator.key_for("named.example.test").name == "k2"
    assert locator.server_for("svc.example.test") == Server("127.0.0.2", 5301)
    assert locator.server_for("a.example.test") == Server("127.0.0.1", 5300)
    with pytest.raises(ConfigError, match="no TSIG key configured for zone a.example.test"):
        ZoneLocator(DnsConfig()).key_for("a.example.test")


@pytest.mark.parametrize(
    ("text", "server"),
    [("127.0.0.1:5353", Server("127.0.0.1", 5353)), ("192.0.2.1", Server("192.0.2.1", 53)),
     ("[::1]:5300", Server("::1", 5300)), ("::1", Server("::1", 53))],
)
def test_parse_server(text: str, server: Server) -> None:
    assert parse_server(text, "[dns] server") == server


@pytest.mark.parametrize("text", ["ns1.example.test:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]x", ""])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"\[dns\] server"):
        parse_server(text, "[dns] server")


def test_certificate_names() -> None:
    assert challenge_name("A.Example.Test.") == "_acme-challenge.a.example.test."
    assert challenge_name("*.a.example.test") == "_acme-challenge.a.example.test."
    assert clean_name(" www.example.test ") == "www.example.test"
    for bad in ["a b.example.test", 'x";.example.test', "*.*.example.test", "a..example.test", "-a.example.test", ""]:
        with pytest.raises(DnsError, match="not a valid DNS name"):
            clean_name(bad)
