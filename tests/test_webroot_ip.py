"""IP-address certificates (RFC 8738) over HTTP-01, against real Pebble, nginx and BIND.

Pebble orders ``ip`` identifiers and validates them by HTTP-01 at the address itself (127.0.0.1,
on its httpPort, where nginx serves the ``ip`` site: ``127.0.0.1`` and ``ipmix.web.test`` from one
webroot; see webroot_world.py). Both issuers run: the native ``webroot`` and the real
certbot-webroot (certbot 5 orders IP identifiers from a CSR). The last test takes such a
certificate through ``lecentral add``, ``lecentral renew`` and the agent's files service.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from lecentral_testing.agent import AgentWorld
from lecentral_testing.tomlfile import write_toml as write_tables
from renew_world import assert_issued, renew_cli, run
from webroot_world import (
    ISSUERS,
    WebWorld,
    add_row,
    assert_failed_untouched,
    leftovers,
    make_config,
)

from lecentral.certificates import Certificate
from lecentral.store.sql import SqlStore

IP = "127.0.0.1"
MIX = "ipmix.web.test"


def ip_sans(cert: Certificate) -> list[str]:
    """The iPAddress subjectAltNames of ``cert``: an IP must be one, never a DNS name."""
    san = cert.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


@pytest.mark.parametrize("issuer", ISSUERS)
def test_ip_only_certificate(web_world: WebWorld, store: SqlStore, tmp_path: Path,
                             issuer: str) -> None:
    """A CSR naming only 127.0.0.1 (no CN): the row is named by the IP, Pebble validates the
    ``ip`` identifier at the address and issues a certificate with the iPAddress SAN."""
    webroot = web_world.webroot("ip")
    _, key = add_row(store, [IP], webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert [(o.name, o.status, o.issuer) for o in report.final] == [(IP, "issued", issuer)]
    cert = assert_issued(store, IP, [IP], key)
    assert ip_sans(cert) == [IP] and cert.covers(IP)
    assert leftovers(webroot) == []
    if issuer == "certbot-webroot":
        assert os.listdir(tmp_path / "certbot" / "runs") == []


@pytest.mark.parametrize("issuer", ISSUERS)
def test_ip_and_dns_name_in_one_certificate(web_world: WebWorld, store: SqlStore,
                                            tmp_path: Path, issuer: str) -> None:
    """One order with a ``dns`` and an ``ip`` identifier, both proved through one webroot."""
    webroot = web_world.webroot("ip")
    _, key = add_row(store, [MIX, IP], webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    assert [(o.name, o.status) for o in report.final] == [(MIX, "issued")], report.final
    cert = assert_issued(store, MIX, [MIX, IP], key)
    assert ip_sans(cert) == [IP] and cert.covers(MIX) and cert.covers(IP)
    assert leftovers(webroot) == []


@pytest.mark.parametrize("issuer", ISSUERS)
def test_an_ip_whose_web_server_does_not_serve_the_webroot(web_world: WebWorld, store: SqlStore,
                                                           tmp_path: Path, issuer: str) -> None:
    """The self-check connects to 127.0.0.1 itself (no DNS lookup of an IP) with Host 127.0.0.1:
    nginx serves the ``ip`` site's webroot there, not this one, so the CA is never asked."""
    elsewhere = tmp_path / "htdocs"
    elsewhere.mkdir()
    add_row(store, [IP], webroot=elsewhere)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    message = assert_failed_untouched(
        store, report, IP, f"{IP}: the web server at {IP}:{web_world.web.port} does not serve "
        f"the webroot {elsewhere}", f"GET http://{IP}:{web_world.web.port}/.well-known/"
        "acme-challenge/", "404", "the CA was not asked")
    assert "A or AAAA" not in message
    assert leftovers(elsewhere) == [] and leftovers(web_world.webroot("ip")) == []
    assert not (tmp_path / "acme" / "account.key").exists()  # no account key made: the CA was never contacted


def test_certbot_that_cannot_order_ip_identifiers(web_world: WebWorld, store: SqlStore,
                                                  tmp_path: Path) -> None:
    """A stand-in for an old certbot (a shell script: certbot 2 cannot be installed next to the
    certbot 5 this suite runs, and the point is what lecentral does with its ``--help all``
    lacking ``--ip-address``): the row fails with a message naming the native issuer, certbot is
    never asked to issue, nothing is stored and the webroot is left clean."""
    calls = tmp_path / "calls"
    fake = tmp_path / "old-certbot"
    fake.write_text("#!/bin/sh\n"
                    f'echo "$@" >> {calls}\n'
                    'case "$1" in\n'
                    '  --version) echo "certbot 2.11.0" ;;\n'
                    '  --help) echo "  -d DOMAIN, --domains DOMAIN  Domain names to include." ;;\n'
                    '  *) echo "certonly must not run" >&2; exit 3 ;;\n'
                    "esac\n")
    fake.chmod(0o755)
    webroot = web_world.webroot("ip")
    add_row(store, [MIX, IP], webroot=webroot)
    config = make_config(web_world, tmp_path, http01_issuer="certbot-webroot",
                         certbot_command=str(fake))
    report = run(config, store)
    assert_failed_untouched(
        store, report, MIX, f"{MIX}: the CSR asks for the IP address {IP}, but certbot 2.11.0 "
        f"({fake}) cannot order IP address identifiers",
        'let the native issuer handle certbot rows ([renew] http01_issuer = "webroot")')
    assert calls.read_text().splitlines() == ["--help all", "--version"]
    assert leftovers(webroot) == []


def test_a_dns01_row_with_an_ip_in_the_database_is_invalid(web_world: WebWorld, store: SqlStore,
                                                           tmp_path: Path) -> None:
    """A row written past ``lecentral add`` (certbot='N' with an IP address): refused before
    any order, the reason says what to change, the row is left as it was."""
    add_row(store, [MIX, IP], certbot=False)
    before = store.get(MIX)
    report = run(make_config(web_world, tmp_path), store)
    outcome = report.final[0]
    assert outcome.status == "invalid", outcome
    assert (f"{MIX}: the CSR asks for the IP address {IP}: IP addresses are proved by HTTP-01 "
            "only (RFC 8738), never by DNS-01: add it with --certbot --webroot PATH") \
        in outcome.message
    assert store.get(MIX) == before
    assert not (tmp_path / "acme" / "account.key").exists()


def test_add_renew_and_the_agent_installs_an_ip_certificate(web_world: WebWorld,
                                                            tmp_path: Path) -> None:
    """The whole way: the server makes its key and a CSR for 127.0.0.1 and ipmix.web.test
    (lecentral-install csr's code), ``lecentral add 127.0.0.1 --certbot --webroot`` stores it,
    ``lecentral renew`` issues it by HTTP-01, and ``lecentral-install run`` installs it with the
    files service (the certificate covers the entry's name, the IP)."""
    from click.testing import CliRunner

    from lecentral.cli.central import main
    from lecentral.install.csr import KeySpec, make_csr

    config = make_config(web_world, tmp_path)
    toml = write_tables(tmp_path / "lecentral.toml", {
        "database": {"url": config.database.url},
        "acme": {"directory": config.acme.directory, "email": config.acme.email,
                 "account_key": config.acme.account_key, "ca_bundle": config.acme.ca_bundle},
        "renew": {"retry_pause": 0, "max_failures": 1, "workers": 1, "http01_issuer": "webroot",
                  "state_dir": config.renew.state_dir, "csr_dir": config.renew.csr_dir},
        "dns": {"server": config.dns.server, "port": config.dns.port,
                "tsig_key_file": config.dns.tsig_key_file},
        "http01": {"port": web_world.web.port},
    })
    agent = AgentWorld(tmp_path / "agent", db_url=config.database.url)
    try:
        key = agent.key_path(IP)
        csr, _ = make_csr(IP, [MIX], key, KeySpec("ec", curve="p256"), force=False)
        assert csr.names == [MIX, IP]  # no CN: an IP is never the CN
        csr_file = tmp_path / "server.csr"
        csr_file.write_bytes(csr.pem)
        cli = CliRunner()
        added = cli.invoke(main, ["--config", str(toml), "init"])
        assert added.exit_code == 0, added.output
        added = cli.invoke(main, ["--config", str(toml), "add", IP, "--csr", str(csr_file),
                                  "--certbot", "--webroot", str(web_world.webroot("ip")),
                                  "--enable"])
        assert added.exit_code == 0, added.output
        assert f"added {IP} ({MIX}, {IP}; EC secp256r1; certbot); enabled" in added.stdout
        renewed = renew_cli(toml)
        assert renewed.exit_code == 0, renewed.stderr
        assert renewed.outcome(IP)["status"] == "issued"

        agent.write_config(agent.entry(IP, service="files"))
        out = agent.run("run")
        assert out.exit_code == 0, out.stderr
        assert out.by_name(IP)["status"] == "installed"
        installed = Certificate.load((agent.ssl / "certs" / f"{IP}.crt").read_bytes())
        assert ip_sans(installed) == [IP] and installed.fingerprint == Certificate.load(
            agent.store.get(IP).crt or b"").fingerprint  # type: ignore[union-attr]
        assert installed.covers(IP)
        assert agent.run("run").by_name(IP)["status"] == "up-to-date"
    finally:
        agent.close()



def test_an_order_without_the_ip_identifier_is_refused(web_world: WebWorld, tmp_path: Path) -> None:
    """What an acme library that cannot order IP addresses would do (order the DNS names only),
    played with a real Pebble order for a CSR without the IP: refused, naming the address and the
    library to upgrade; an order from the CSR with the IP holds its ``ip`` identifier."""
    from lecentral_testing.pki import make_csr

    from lecentral.acme.client import AcmeClient
    from lecentral.errors import IssueError
    from lecentral.http01.native import check_ip_identifiers

    client = AcmeClient(make_config(web_world, tmp_path).acme, workers=1)
    try:
        with_ip = client.new_order(make_csr([MIX, IP])[0], [MIX, IP])
        check_ip_identifiers(with_ip, [IP])
        dns_only = client.new_order(make_csr([MIX])[0], [MIX])
        with pytest.raises(IssueError) as info:
            check_ip_identifiers(dns_only, [IP])
        assert (f"the order {dns_only.uri} has no ip identifier for {IP}: the installed acme "
                "library (") in str(info.value)
        assert "does not order IP addresses (RFC 8738); upgrade it" in str(info.value)
    finally:
        client.close()


@pytest.mark.parametrize("issuer", ISSUERS)
@pytest.mark.parametrize("cn, sans", [(IP, [IP]), (MIX.upper(), [MIX, IP])],
                         ids=["ip-cn", "cn-in-another-case"])
def test_the_cn_among_the_sans_is_ordered_once(web_world: WebWorld, store: SqlStore,
                                               tmp_path: Path, issuer: str, cn: str,
                                               sans: list[str]) -> None:
    """A CN repeated among the SANs is one name: an IP CN the ``ip`` identifier of its iPAddress
    SAN, a CN in capitals the DNS name (DNS names compare case-insensitively)."""
    from ipaddress import ip_address

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    from lecentral_testing.central import new_row
    from lecentral_testing.pki import make_key

    key = make_key()
    pem = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.IPAddress(ip_address(n)) if n == IP else x509.DNSName(n) for n in sans]),
               critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    row = new_row(pem, certbot=True, webroot_path=str(web_world.webroot("ip")))
    store.add(row)
    report = run(make_config(web_world, tmp_path, http01_issuer=issuer), store)
    if issuer == "certbot-webroot" and cn == IP:  # certbot orders a CN as a DNS name: told first
        assert_failed_untouched(
            store, report, row.name, f"{IP}: the CSR's CN is the IP address {IP}, which certbot "
            "--csr orders as a DNS name and refuses", "make a CSR without a CN, the address in "
            f"subjectAltName only (lecentral-install csr {IP} --key PATH does), or let the "
            "native issuer", 'http01_issuer = "webroot"')
        assert not (tmp_path / "certbot" / "runs").exists()  # certbot never ran
        return
    assert [(o.name, o.status) for o in report.final] == [(row.name, "issued")], report.final
    cert = assert_issued(store, row.name, sans, key)
    assert ip_sans(cert) == [IP] and all(cert.covers(n) for n in sans)
    assert leftovers(web_world.webroot("ip")) == []
