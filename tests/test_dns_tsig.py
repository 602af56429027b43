"""BIND key files, server addresses and certificate names: parsing without ever echoing a secret."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from lecentral.config import DnsConfig, ZoneConfig
from lecentral.dns.tsig import (
    KeyFiles,
    parse_key_text,
    parse_private_text,
    read_key_file,
)
from lecentral.dns.wire import Server, forget_resolved, parse_server, resolve_server
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
    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # a run reads it several times: said once
        assert read_key_file(path)["k"].secret == SECRET
    assert "readable by every user" not in caplog.text
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


# --- dnssec-keygen files (BIND up to 9.16) --------------------------------------------------------
# Debian's BIND 9.18 dnssec-keygen no longer makes HMAC keys, so the files are written here in the
# exact shape old BIND wrote them: dst_api.c / dst_parse.c (dst__privstruct_writefile) wrote the
# .private as "Tag: value" lines, "Private-key-format: v1.2" (BIND 9.3-9.6) or "v1.3" (9.7+, with
# the Created/Publish/Activate dates), "Algorithm: N (NAME)", "Key: <base64>", "Bits: AAA=";
# the .key is the KEY record as dns_rdata_totext printed it: owner, IN, KEY, flags 512 (-n HOST),
# protocol 3, algorithm, the base64 split into words by a space.


def keygen_private(secret: str = SECRET, number: int = 165, label: str = "HMAC_SHA512",
                   version: str = "v1.3") -> str:
    dates = "Created: 20140312101515\nPublish: 20140312101515\nActivate: 20140312101515\n"
    return (f"Private-key-format: {version}\nAlgorithm: {number} ({label})\nKey: {secret}\nBits: AAA=\n"
            + (dates if version == "v1.3" else ""))


def keygen_record(name: str, secret: str = SECRET, number: int = 165) -> str:
    return f"{name}. IN KEY 512 3 {number} {secret[:56]} {secret[56:]}\n"


@pytest.mark.parametrize(("number", "label", "algorithm", "version"), [
    (157, "HMAC_MD5", "hmac-md5", "v1.2"), (161, "HMAC_SHA1", "hmac-sha1", "v1.3"),
    (162, "HMAC_SHA224", "hmac-sha224", "v1.3"), (163, "HMAC_SHA256", "hmac-sha256", "v1.2"),
    (164, "HMAC_SHA384", "hmac-sha384", "v1.3"), (165, "HMAC_SHA512", "hmac-sha512", "v1.3"),
])
def test_dnssec_keygen_private_files(tmp_path: Path, number: int, label: str, algorithm: str,
                                     version: str) -> None:
    path = write(tmp_path / f"Kacme-update.+{number}+04711.private",
                 keygen_private(number=number, label=label, version=version))
    (key,) = read_key_file(path).values()
    assert (key.name, key.algorithm, key.secret, key.source) == ("acme-update", algorithm, SECRET, str(path))
    assert key.dnspython_key().name.to_text() == "acme-update."


def test_dnssec_keygen_key_files(tmp_path: Path) -> None:
    path = write(tmp_path / "Ksvc.example.test.+163+12345.key", keygen_record("Svc.Example.Test", number=163))
    (key,) = read_key_file(path).values()
    assert (key.name, key.algorithm, key.secret) == ("svc.example.test", "hmac-sha256", SECRET)
    # with a TTL, comments, and the record in parentheses over several lines, as zone files allow
    other = write(tmp_path / "old.key", f"; made in 2012\nk2. 3600 IN KEY 512 3 165 (\n {SECRET[:40]}\n"
                                        f" {SECRET[40:]} ) ; the secret\n")
    assert read_key_file(other)["k2"].secret == SECRET


def test_hmac_md5_keys_sign_and_verify() -> None:
    """BIND's hmac-md5 is HMAC-MD5.SIG-ALG.REG.INT on the wire; dnspython must sign with it.
    (The test world's named only defines hmac-sha512 keys, so the signature is verified by
    dnspython's own TSIG check of the message, the same code that checks named's answers.)"""
    import dns.message
    import dns.update

    key = parse_private_text(keygen_private(number=157, label="HMAC_MD5", version="v1.2"), "k",
                             "Kold.+157+00042.private")["old"]
    message = dns.update.UpdateMessage("a.example.test.", keyring=key.dnspython_key())
    wire = message.to_wire()
    parsed = dns.message.from_wire(wire, keyring=key.dnspython_key())
    assert parsed.had_tsig and parsed.keyalgorithm.to_text() == "hmac-md5.sig-alg.reg.int."


@pytest.mark.parametrize(("filename", "text", "message"), [
    ("Kk.+165+00001.private", keygen_private().replace("Algorithm: 165 (HMAC_SHA512)\n", ""),
     "no 'Algorithm:' line"),
    ("Kk.+008+00001.private", keygen_private(number=8, label="RSASHA256"),
     "algorithm 8 is not a TSIG \\(HMAC\\) algorithm"),
    ("Kk.+165+00001.private", keygen_private(secret=SECRET[:-3] + "!!"), "'Key:' is missing or not valid base64"),
    ("Kk.+165+00001.private", keygen_private().replace(f"Key: {SECRET}\n", ""), "'Key:' is missing"),
    ("Kk.+165+00001.private", keygen_private(version="v2.0"), "Private-key-format 'v2.0'"),
    ("Kk.+165+00001.private", keygen_private() + SECRET + "\n", "expected 'Tag: value'"),
    ("Kk.+163+00001.private", keygen_private(), "the file name says algorithm 163"),
    ("acme.private", keygen_private(), "cannot tell the key's name"),
    ("k.key", keygen_record("k", secret=SECRET[:-3] + "!!"), "key data is missing or not valid base64"),
    ("k.key", keygen_record("k", number=8), "algorithm 8 is not a TSIG"),
])
def test_corrupt_dnssec_keygen_files_name_the_file_not_the_secret(tmp_path: Path, filename: str, text: str,
                                                                  message: str) -> None:
    path = write(tmp_path / filename, text)
    with pytest.raises(ConfigError, match=message) as info:
        read_key_file(path)
    assert str(path) in str(info.value)
    assert SECRET[:20] not in str(info.value) and SECRET[-20:] not in str(info.value)


def test_a_missing_key_file_says_which_step_makes_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        KeyFiles().pick(str(tmp_path / "tsig.key"), "", "a.example.test", "[dns]")
    assert str(info.value).startswith(f"TSIG key file {tmp_path}/tsig.key ([dns] tsig_key_file) does not exist yet")
    assert f"tsig-keygen -a hmac-sha512 KEYNAME > {tmp_path}/tsig.key" in str(info.value)
    assert 'docs/dns.md, step 1, "The TSIG key"' in str(info.value)


@pytest.mark.parametrize(
    ("text", "server"),
    [("127.0.0.1:5353", Server("127.0.0.1", 5353)), ("[::1]:5300", Server("::1", 5300)), ("::1", Server("::1", 53)),
     ("localhost:5300", Server("127.0.0.1", 5300)), ("LOCALHOST.", Server("127.0.0.1", 53))],
)
def test_resolve_server_takes_addresses_and_host_names(text: str, server: Server) -> None:
    """``localhost`` is 127.0.0.1 in this machine's /etc/hosts (the system resolver answers)."""
    forget_resolved()
    assert resolve_server(text, "[dns] server") == server


@pytest.mark.parametrize(("text", "message"), [
    ("127.0.0.1:0", "the port must be a number"), ("dns.example.test:x", "the port must be a number"),
    ("[::1]x", r"expected \[IPv6\]:port"), ("", "must be an IP address or a host name"),
    ("a b.example.test:53", "must be an IP address or a host name"),
    ("a:b:c", "must be an IP address or a host name"),
])
def test_resolve_server_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_server(text, '[dns.zones."z.example.test"] server')
    assert str(info.value).startswith(f'[dns.zones."z.example.test"] server = {text!r}')


def test_an_unresolvable_name_is_said_clearly(tmp_path: Path) -> None:
    """The lookup really goes to the system resolver, here one on 127.0.0.1 that nothing
    serves (tests/loopback_resolver.py): no query leaves the machine."""
    from loopback_resolver import run_with_loopback_resolver

    code = ("from lecentral.dns.wire import resolve_server\n"
            "from lecentral.errors import ConfigError\n"
            "try:\n    resolve_server('nowhere.invalid:53', '[dns] server')\n"
            "except ConfigError as exc:\n    print(exc)\n")
    done = run_with_loopback_resolver([sys.executable, "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[dns] server = 'nowhere.invalid:53': cannot resolve "
                                  "nowhere.invalid through the system resolver"), done.stdout
