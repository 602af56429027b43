"""`lecentral dns zone`: the files it writes, loaded into a fresh named, pass `dns check`, and a
certificate is then issued through that zone by Pebble; plus `dns check --all` over a store."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.bind import BindServer
from lecentral_testing.pki import make_csr
from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import Daemon, find_executable, start_retrying_ports

from lecentral.cli.central import main
from lecentral.dns.tsig import read_key_file

NAME = "shop.example.test"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def generate(out: Path) -> Path:
    """Run `dns zone` for NAME into ``out`` as an operator would; the zone file lives there too."""
    out.mkdir(parents=True, exist_ok=True)
    empty = out / "empty.toml"
    empty.write_text("")
    result = cli("--config", str(empty), "dns", "zone", NAME, "--ns", "ns1.example.test.", "--address", "127.0.0.1",
                 "--zone-file", str(out / f"db.{NAME}"), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("zone-out"))


def test_zone_files(generated: Path) -> None:
    key_file = generated / f"{NAME}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (key,) = read_key_file(key_file).values()
    assert (key.name, key.algorithm) == (NAME, "hmac-sha512")
    conf = (generated / f"named.conf.{NAME}").read_text()
    assert f"grant {NAME} name _acme-challenge.{NAME}. TXT;" in conf and key.secret not in conf
    zone = (generated / f"db.{NAME}").read_text()
    assert "300\t; minimum" in zone and "IN NS\tns1.example.test." in zone and "IN A\t127.0.0.1" in zone
    assert f"{NAME}.\tIN NS\tns1.example.test." in (generated / f"parent.{NAME}.txt").read_text()
    assert f'[dns.zones."{NAME}"]' in (generated / f"lecentral.{NAME}.toml").read_text()


def test_zone_refuses_to_overwrite(generated: Path) -> None:
    before = (generated / f"{NAME}.key").read_text()
    result = cli("--config", str(generated / "empty.toml"), "dns", "zone", NAME, "--ns", "ns1.example.test",
                 "--out", str(generated))
    assert result.exit_code != 0 and "already exist" in result.output and "nothing written" in result.output
    assert (generated / f"{NAME}.key").read_text() == before


def test_zone_printed_and_existing_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = cli("--config", str(empty), "dns", "zone", "www.example.test", "--key", "acme-update",
                 "--ns", "ns1.example.test", "--address", "192.0.2.7", "--address", "2001:db8::7")
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output  # an existing key: nothing secret to print
    assert "grant acme-update name _acme-challenge.www.example.test. TXT;" in result.output
    assert "IN AAAA\t2001:db8::7" in result.output and "rndc freeze www.example.test" in result.output
    bad = cli("--config", str(empty), "dns", "zone", "*.example.test", "--ns", "ns1.example.test")
    assert bad.exit_code == 2 and "without '*.'" in bad.output


def test_zone_defaults_from_the_parent(tmp_path: Path) -> None:
    """Without --ns and --address, the parent's primary and NAME's current A record are used."""
    with BindServer(tmp_path / "bind", parent_records=["moving.example.test. IN A 192.0.2.44"]) as bind:
        toml = tmp_path / "lecentral.toml"
        toml.write_text(f'[dns]\nserver = "127.0.0.1:{bind.port}"\n')
        result = cli("--config", str(toml), "dns", "zone", "moving.example.test")
    assert result.exit_code == 0, result.output
    assert "IN NS\tns1.example.test." in result.output and "IN A\t192.0.2.44" in result.output


def start_named(workdir: Path, generated: Path, *, delegate: bool = True) -> tuple[Daemon, int]:
    """A fresh named for example.test whose only other config is what `dns zone` wrote.

    ``delegate=False`` leaves the parent as it was: the operator forgot the NS records.
    """
    delegation = (generated / f"parent.{NAME}.txt").read_text() if delegate else ""
    (workdir / "example.test.db").write_text(
        "$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n"
        "@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\n" + delegation)
    named = find_executable("named", package="bind9")
    state: dict[str, object] = {}

    def attempt() -> None:
        import dns.message
        import dns.query

        port = free_port(udp=True)
        (workdir / "named.conf").write_text(
            f'options {{\n\tdirectory "{workdir}";\n\tpid-file none;\n\tsession-keyfile none;\n'
            f'\tlisten-on port {port} {{ {LOOPBACK}; }};\n\tlisten-on-v6 {{ none; }};\n\trecursion no;\n'
            f"\tdnssec-validation no;\n\tallow-transfer {{ 127.0.0.0/8; }};\n}};\n"
            f'include "{generated}/{NAME}.key";\ninclude "{generated}/named.conf.{NAME}";\n'
            f'zone "example.test" {{ type primary; file "example.test.db"; }};\n')
        daemon = Daemon("named-fresh", [named, "-g", "-4", "-n", "1", "-c", str(workdir / "named.conf")],
                        log_path=workdir / "named.log", cwd=workdir)
        query = dns.message.make_query(NAME, "SOA")
        daemon.start(lambda: bool(dns.query.udp(query, LOOPBACK, port=port, timeout=0.5).answer), timeout=30)
        state.update(daemon=daemon, port=port)

    start_retrying_ports(attempt)
    return state["daemon"], state["port"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def fresh(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """The fresh named, and a lecentral.toml made of [dns] plus the generated lines."""
    workdir = tmp_path_factory.mktemp("fresh-named")
    daemon, port = start_named(workdir, generated)
    toml = workdir / "lecentral.toml"
    toml.write_text(f'[dns]\nserver = "127.0.0.1:{port}"\nport = {port}\npropagation_timeout = 10\n'
                    f"propagation_interval = 0.05\n\n" + (generated / f"lecentral.{NAME}.toml").read_text())
    try:
        yield toml, port
    finally:
        daemon.stop()


def test_generated_zone_passes_dns_check(fresh: tuple[Path, int]) -> None:
    toml, _ = fresh
    result = cli("--config", str(toml), "dns", "check", "--json", NAME)
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert {f["check"]: f["status"] for f in report["findings"]} == {
        "zone": "OK", "nameservers": "OK", "delegation": "OK", "update": "OK", "negative-ttl": "OK"}


def test_missing_delegation_fails(tmp_path: Path) -> None:
    generated = generate(tmp_path / "out")  # its own zone file: one named per zone file and journal
    daemon, port = start_named(tmp_path, generated, delegate=False)
    try:
        toml = tmp_path / "lecentral.toml"
        toml.write_text(f'[dns]\nserver = "127.0.0.1:{port}"\nport = {port}\n\n'
                        + (generated / f"lecentral.{NAME}.toml").read_text())
        result = cli("--config", str(toml), "dns", "check", "--json", NAME)
    finally:
        daemon.stop()
    assert result.exit_code == 2, result.output
    (report,) = json.loads(result.stdout)
    (delegation,) = [f for f in report["findings"] if f["check"] == "delegation"]
    assert delegation["status"] == "FAIL"
    assert delegation["message"].startswith(f"no delegation of {NAME} in zone example.test on ns1.example.test")
    assert f"`{NAME}. IN NS <host>.`" in delegation["fix"]


def test_certificate_issued_through_the_generated_zone(fresh: tuple[Path, int], tmp_path: Path) -> None:
    from lecentral_testing.pebble import PebbleServer
    from lecentral_testing.resolver import ResolverServer

    toml, port = fresh
    resolver = ResolverServer(tmp_path / "resolver", port, probe_name=NAME).start()
    pebble = PebbleServer(tmp_path, dns_server=("127.0.0.1", resolver.port)).start()
    try:
        config = tmp_path / "lecentral.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n\n'
            f'[acme]\ndirectory = "{pebble.directory_url}"\nemail = "hostmaster@example.test"\n'
            f'account_key = "{tmp_path}/account.key"\nca_bundle = "{pebble.ca_bundle}"\npoll_timeout = 60\n\n'
            f'[renew]\ncsr_dir = "{tmp_path}/csr"\nstate_dir = "{tmp_path}/state"\n\n'
            + toml.read_text())
        csr_pem, _ = make_csr([NAME])
        (tmp_path / "shop.csr").write_bytes(csr_pem)
        for args in (["init"], ["add", NAME, "--csr", str(tmp_path / "shop.csr"), "--enable"],
                     ["renew", "--once", "--json", NAME]):
            result = cli("--config", str(config), *args)
            assert result.exit_code == 0, (args, result.output)
        assert [c["status"] for c in json.loads(result.stdout)["certificates"]] == ["issued"]
        shown = cli("--config", str(config), "show", NAME)
        assert "Pebble" in shown.output or "pebble" in shown.output.lower(), shown.output
    finally:
        pebble.stop()
        resolver.stop()


def test_check_all_enabled_dns_rows(fresh: tuple[Path, int], tmp_path: Path) -> None:
    toml, _ = fresh
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n\n' + toml.read_text())
    csr_pem, _ = make_csr([NAME])
    other_pem, _ = make_csr(["off.example.test"])
    (tmp_path / "a.csr").write_bytes(csr_pem)
    (tmp_path / "b.csr").write_bytes(other_pem)
    for args in (["init"], ["add", NAME, "--csr", str(tmp_path / "a.csr"), "--enable"],
                 ["add", "off.example.test", "--csr", str(tmp_path / "b.csr")]):  # disabled: not checked
        assert cli("--config", str(config), *args).exit_code == 0
    result = cli("--config", str(config), "dns", "check", "--all", "--json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == [NAME]


def test_check_all_reports_an_ip_address_in_a_dns_row(fresh: tuple[Path, int],
                                                      tmp_path: Path) -> None:
    """A DNS-01 row written past ``lecentral add`` with an IP address (RFC 8738: HTTP-01 only):
    a FAIL naming the row and what to change, no sub-zone looked up for the address."""
    from lecentral_testing.central import new_row

    from lecentral.store.sql import SqlStore

    toml, _ = fresh
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n\n' + toml.read_text())
    assert cli("--config", str(config), "init").exit_code == 0
    store = SqlStore(f"sqlite:///{tmp_path}/lecentral.db")
    try:
        store.add(new_row(make_csr([NAME, "192.0.2.7"])[0]))
    finally:
        store.close()
    result = cli("--config", str(config), "dns", "check", "--all", "--json")
    assert result.exit_code != 0
    [report] = json.loads(result.stdout)
    assert report["name"] == NAME and report["status"] == "FAIL"
    [finding] = report["findings"]
    assert finding["check"] == "row" and finding["status"] == "FAIL"
    assert (f"row {NAME} is invalid: {NAME}: the CSR asks for the IP address 192.0.2.7: IP "
            "addresses are proved by HTTP-01 only") in finding["message"]
