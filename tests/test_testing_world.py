"""The local ACME world (lecentral_testing) against the real servers: no mocks anywhere.

Each test proves one thing other tests rely on: Pebble over verified TLS, BIND's TSIG-guarded
sub-zones laid out like the seed's named.conf, the databases, and that stopping really stops.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import ssl
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lecentral_testing import (
    DEFAULT_KEY_NAME,
    AcmeWorld,
    BindServer,
    MariaDBServer,
    PebbleServer,
    PortClashError,
    PostgresServer,
    ServerStartError,
    free_port,
    port_is_free,
)
from lecentral_testing.bind import new_tsig_secret
from lecentral_testing.process import Daemon

from lecentral.store.schema import certs_ddl


def _update(bind: BindServer, zone: str, value: str, keyring: dict[dns.name.Name, dns.tsig.Key] | None) -> int:
    """Send an RFC 2136 update adding TXT ``value`` at _acme-challenge.ZONE; return the rcode."""
    update = dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA512)
    update.add(f"_acme-challenge.{zone}.", 60, "TXT", value)
    response = dns.query.tcp(update, bind.address, port=bind.port, timeout=5)
    return response.rcode()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- Pebble


def test_pebble_directory_answers_over_tls_verified_by_ca_bundle(pebble_server: PebbleServer) -> None:
    context = ssl.create_default_context(cafile=str(pebble_server.ca_bundle))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(pebble_server.directory_url, timeout=5) as response:
        directory = json.load(response)
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    assert pebble_server.directory_url.startswith("https://127.0.0.1:")


def test_pebble_tls_is_not_trusted_without_ca_bundle(pebble_server: PebbleServer) -> None:
    """The TLS certificate is ours, not a public one: without ca_bundle verification fails."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        opener.open(pebble_server.directory_url, timeout=5)


def test_pebble_roots_and_intermediates_chain(pebble_server: PebbleServer) -> None:
    root = x509.load_pem_x509_certificate(pebble_server.root_pem().encode())
    intermediate = x509.load_pem_x509_certificate(pebble_server.intermediate_pem().encode())
    intermediate.verify_directly_issued_by(root)


def test_pebble_with_eab_requires_external_account(tmp_path: Path) -> None:
    with PebbleServer(tmp_path, eab_required=True) as pebble:
        meta = json.loads(pebble.get(pebble.directory_url))["meta"]
        assert meta["externalAccountRequired"] is True
        assert list(pebble.eab_keys) == ["kid-1"]
        assert os.stat(pebble.dir / "pebble-config.json").st_mode & 0o077 == 0  # holds the MAC keys


def test_pebble_options_reach_pebble_and_a_killed_pebble_restarts_with_new_roots(tmp_path: Path) -> None:
    """va_sleep and config= are what Pebble logs it runs with; kill() is a SIGKILL (no clean
    shutdown), and start() brings Pebble back on the same ports with a new root."""
    with PebbleServer(tmp_path, va_sleep=2, config={"certificateValidityPeriod": 7200,
                                                    "domainBlocklist": ["blocked.example.test"]}) as pebble:
        log = (tmp_path / "pebble.log").read_text()
        assert "Setting maximum random VA sleep time to 2 seconds" in log
        assert "Using certificate validity period of 7200 seconds" in log
        config = json.loads((pebble.dir / "pebble-config.json").read_text())["pebble"]
        assert config["domainBlocklist"] == ["blocked.example.test"]
        root, port, pid = pebble.root_pem(), pebble.port, pebble.pid
        pebble.kill()
        assert not pebble.running and pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        pebble.start()
        assert pebble.port == port and pebble.root_pem() != root


@pytest.mark.parametrize(("options", "error"), [
    ({"config": {"domainBlockList": ["x.example.test"]}}, "domainBlockList not supported"),
    ({"config": {"listenAddress": "127.0.0.1:1"}}, "listenAddress not supported"),
    ({"va_sleep": 0}, "at least 1 second"),
])
def test_pebble_refuses_options_it_would_silently_ignore(tmp_path: Path, options: dict[str, object],
                                                         error: str) -> None:
    with pytest.raises(ValueError, match=error):
        PebbleServer(tmp_path / "p", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "p").exists()


def test_acme_world_issues_a_certificate_over_dns01(acme_world: AcmeWorld, acme_name: str) -> None:
    """End to end through the real parts: Pebble validates a TXT it reads from our BIND."""
    import josepy as jose
    from acme import challenges, client, crypto_util, messages

    pebble, bind = acme_world.pebble, acme_world.bind
    account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = client.ClientNetwork(account_key, alg=jose.ES256, verify_ssl=str(pebble.ca_bundle))  # type: ignore[arg-type]
    network.session.trust_env = False  # no proxy between us and 127.0.0.1
    acme = client.ClientV2(client.ClientV2.get_directory(pebble.directory_url, network), network)
    network.account = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    cert_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = cert_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    order = acme.new_order(crypto_util.make_csr(key_pem, [acme_name]))
    for authorization in order.authorizations:
        challenge = next(c for c in authorization.body.challenges if isinstance(c.chall, challenges.DNS01))
        assert _update(bind, acme_name, challenge.chall.validation(account_key), bind.keyring()) == dns.rcode.NOERROR
        acme.answer_challenge(challenge, challenge.chall.response(account_key))
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=30)
    order = acme.poll_and_finalize(order, deadline)
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == [acme_name]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(pebble.intermediate_pem().encode()))


# ----------------------------------------------------------------------------- BIND


def test_signed_update_is_accepted_and_served(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    name = acme_world.new_name()
    assert _update(bind_server, name, "token-1", bind_server.keyring()) == dns.rcode.NOERROR
    response = bind_server.query(f"_acme-challenge.{name}", "TXT")
    assert response.flags & dns.flags.AA
    assert [b"".join(rd.strings) for rrset in response.answer for rd in rrset] == [b"token-1"]
    # Over TCP with a plain dnspython query as well, the way a propagation check asks.
    query = dns.message.make_query(f"_acme-challenge.{name}", "TXT")
    assert dns.query.tcp(query, "127.0.0.1", port=bind_server.port, timeout=5).answer


def test_unsigned_update_is_refused(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    name = acme_world.new_name()
    assert _update(bind_server, name, "unsigned", keyring=None) == dns.rcode.REFUSED
    assert bind_server.txt_values(f"_acme-challenge.{name}") == []


def test_update_with_wrong_secret_is_rejected(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    name = acme_world.new_name()
    wrong = dns.tsigkeyring.from_text({DEFAULT_KEY_NAME: (dns.tsig.HMAC_SHA512, new_tsig_secret())})
    # BIND answers NOTAUTH/BADSIG, unsigned: dnspython reports that as a TSIG error.
    with pytest.raises((dns.tsig.PeerBadSignature, dns.tsig.PeerError)):
        _update(bind_server, name, "forged", wrong)
    assert bind_server.txt_values(f"_acme-challenge.{name}") == []


def test_each_subzone_accepts_only_its_own_key(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    own = acme_world.new_name(key_name="own-key")
    assert _update(bind_server, own, "other-key", bind_server.keyring()) == dns.rcode.REFUSED
    assert _update(bind_server, own, "own-key", bind_server.keyring("own-key")) == dns.rcode.NOERROR
    assert bind_server.tsig_keys["own-key"] != bind_server.tsig_keys[DEFAULT_KEY_NAME]


def test_zone_granting_another_name_refuses_its_own_challenge(bind_server: BindServer) -> None:
    zone = bind_server.add_subzone("misgranted.example.test", grant_names=["_acme-challenge.elsewhere.example.test"])
    assert "grant acme-update name _acme-challenge.elsewhere.example.test TXT;" in zone.update_policy
    assert _update(bind_server, zone.name, "x", bind_server.keyring()) == dns.rcode.REFUSED


def test_named_conf_has_the_seed_layout(bind_server: BindServer, acme_name: str) -> None:
    conf = (bind_server.dir / "named.conf").read_text()
    block = re.search(rf'zone "{re.escape(acme_name)}" \{{(.*?)\n\}};', conf, re.DOTALL)
    assert block is not None
    assert "type master;" in block[1] and "allow-query { any; };" in block[1]
    assert f"update-policy {{ grant acme-update name _acme-challenge.{acme_name} TXT; }};" in block[1]
    assert 'algorithm hmac-sha512;' in conf
    assert stat.S_IMODE(os.stat(bind_server.dir / "named.conf").st_mode) == 0o600


def test_parent_delegates_each_subzone_with_glue(bind_server: BindServer, acme_name: str) -> None:
    parent = dns.zone.from_xfr(dns.query.xfr(bind_server.address, bind_server.parent, port=bind_server.port))
    label = acme_name.removesuffix(f".{bind_server.parent}")
    ns = parent.get_rdataset(label, "NS")
    assert ns is not None
    assert {rd.target.derelativize(parent.origin).to_text() for rd in ns} == {f"ns1.{bind_server.parent}."}
    glue = parent.get_rdataset("ns1", "A")
    assert glue is not None and [rd.address for rd in glue] == ["127.0.0.1"]
    # And the sub-zone itself: its own apex NS and the A record HTTP-01 tests resolve.
    assert [rd.address for rrset in bind_server.query(acme_name, "A").answer for rd in rrset] == ["127.0.0.1"]


def test_subzone_negative_ttl_is_small_by_default_and_configurable(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    def negative_ttl(name: str) -> int:
        response = bind_server.query(f"nothing.{name}", "TXT")
        assert response.rcode() == dns.rcode.NXDOMAIN
        soa = response.authority[0]
        return min(soa.ttl, soa[0].minimum)

    assert negative_ttl(acme_world.new_name()) == 60
    assert negative_ttl(acme_world.new_name(soa_minimum=43200, ttl=43200)) == 43200


def test_cname_to_a_delegate_zone(bind_server: BindServer) -> None:
    delegate = "acme-delegate.example.test"
    bind_server.add_subzone(delegate, key_name="delegate-key", grant_names=[f"x.{delegate}"])
    bind_server.add_subzone("x.example.test", records=[f"_acme-challenge CNAME x.{delegate}."])
    answer = bind_server.query("_acme-challenge.x.example.test", "TXT").answer
    assert str(answer[0][0].target) == f"x.{delegate}."
    update = dns.update.UpdateMessage(delegate, keyring=bind_server.keyring("delegate-key"), keyalgorithm=dns.tsig.HMAC_SHA512)
    update.add(f"x.{delegate}.", 60, "TXT", "via-cname")
    assert dns.query.tcp(update, bind_server.address, port=bind_server.port, timeout=5).rcode() == dns.rcode.NOERROR
    assert bind_server.txt_values(f"x.{delegate}") == ["via-cname"]


def test_freeze_refuses_updates_until_thaw(bind_server: BindServer, acme_world: AcmeWorld) -> None:
    name = acme_world.new_name()
    assert _update(bind_server, name, "before", bind_server.keyring()) == dns.rcode.NOERROR
    bind_server.freeze(name)
    try:
        # Frozen: the journal is in the file, which an operator may now edit.
        assert '"before"' in bind_server.zone_file(name).read_text()
        assert _update(bind_server, name, "frozen", bind_server.keyring()) == dns.rcode.REFUSED
    finally:
        bind_server.thaw(name)
    assert _update(bind_server, name, "after", bind_server.keyring()) == dns.rcode.NOERROR
    assert bind_server.txt_values(f"_acme-challenge.{name}") == ["after", "before"]


def test_key_file_is_in_tsig_keygen_format_and_private(bind_server: BindServer) -> None:
    path = bind_server.key_file(DEFAULT_KEY_NAME)
    secret = bind_server.tsig_keys[DEFAULT_KEY_NAME]
    assert path.read_text() == f'key "{DEFAULT_KEY_NAME}" {{\n\talgorithm hmac-sha512;\n\tsecret "{secret}";\n}};\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyError, match="no TSIG key named"):
        bind_server.key_file("no-such-key")


def test_secondary_follows_the_primary_and_can_lag(tmp_path: Path) -> None:
    with BindServer(tmp_path, subzones=["www.example.test"], secondary=True) as bind:
        zone = "www.example.test"
        ns = bind.query(zone, "NS", secondary=True).answer[0]
        assert {str(rd.target) for rd in ns} == {"ns1.example.test.", "ns2.example.test."}
        assert bind.servers == [("127.0.0.1", bind.port), ("127.0.0.1", bind.secondary_port)]

        assert _update(bind, zone, "one", bind.keyring()) == dns.rcode.NOERROR
        assert _wait_for(lambda: bind.txt_values(f"_acme-challenge.{zone}", secondary=True) == ["one"])

        bind.hold_secondary()
        assert _update(bind, zone, "two", bind.keyring()) == dns.rcode.NOERROR
        time.sleep(0.3)  # NOTIFY would have arrived by now (notify-delay 0): the secondary is stale
        assert bind.txt_values(f"_acme-challenge.{zone}", secondary=True) == ["one"]
        assert (bind.serial(zone, secondary=True) or 0) < (bind.serial(zone) or 0)

        bind.release_secondary()
        assert bind.txt_values(f"_acme-challenge.{zone}", secondary=True) == ["one", "two"]

        bind.stop_secondary()
        with pytest.raises(dns.exception.Timeout):
            bind.query(zone, "SOA", secondary=True, timeout=0.3)
        bind.start_secondary()
        assert bind.serial(zone, secondary=True) == bind.serial(zone)


# ------------------------------------------------------------------------ databases


def test_mariadb_application_user_has_real_grants(mariadb_server: MariaDBServer, mariadb_url: str) -> None:
    # the seed's own CREATE TABLE, as lecentral ships it
    mariadb_server.execute(certs_ddl("mysql"), database=sa.make_url(mariadb_url).database)
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO certs (name, csr, md5_modulus) VALUES ('a.example.test', 'x', 'm')"))
            assert connection.execute(sa.text("SELECT enable FROM certs")).scalar_one() == "Y"
    finally:
        engine.dispose()
    wrong = sa.create_engine(mariadb_url.replace(f":{mariadb_server.password}@", ":not-the-password@"))
    with pytest.raises(sa.exc.OperationalError, match="Access denied"):
        wrong.connect()
    root = sa.create_engine(mariadb_server.root_url)
    try:
        with root.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        root.dispose()


def test_each_test_gets_its_own_empty_database(mariadb_url: str, postgres_url: str, sqlite_url: str) -> None:
    for url in (mariadb_url, postgres_url, sqlite_url):
        engine = sa.create_engine(url)
        try:
            assert sa.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    assert sa.make_url(mariadb_url).database != "lecentral"


def test_postgres_accepts_the_application_user(postgres_server: PostgresServer, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (a int)"))
            assert connection.execute(sa.text("SELECT current_user")).scalar_one() == postgres_server.user
    finally:
        engine.dispose()
    assert postgres_server.url.startswith("postgresql+psycopg://lecentral:")


# ------------------------------------------------------------------- stop and start


def _assert_gone(pid: int | None, port: int) -> None:
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert port_is_free(port)


def test_stopping_bind_and_pebble_frees_ports_and_pids(tmp_path: Path) -> None:
    with AcmeWorld.create(tmp_path, subzones=["www.example.test"]) as world:
        bind_pid, pebble_pid = world.bind.pid, world.pebble.pid
        ports = [world.bind.port, world.bind.rndc_port, world.pebble.port, world.pebble.management_port]
    _assert_gone(bind_pid, ports[0])
    _assert_gone(pebble_pid, ports[2])
    assert port_is_free(ports[0], udp=True)
    assert all(port_is_free(port) for port in ports)


@pytest.mark.parametrize("server_fixture", ["mariadb_server", "postgres_server"])
def test_database_goes_down_and_comes_back_with_its_data(request: pytest.FixtureRequest, server_fixture: str) -> None:
    server: MariaDBServer | PostgresServer = request.getfixturevalue(server_fixture)
    name = f"t_downup_{server_fixture}"
    url = server.create_database(name)
    try:
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE kept (a int)"))
            connection.execute(sa.text("INSERT INTO kept VALUES (42)"))
        engine.dispose()
        pid, port = server.pid, server.port
        server.stop()
        try:
            _assert_gone(pid, port)
            with pytest.raises(sa.exc.OperationalError):
                sa.create_engine(url).connect()
        finally:
            server.start()
        assert server.port == port and server.pid != pid
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT a FROM kept")).scalar_one() == 42
        engine.dispose()
    finally:
        server.drop_database(name)


# ---------------------------------------------------------------- process helper


def test_daemon_that_exits_reports_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('config line 3: unknown option'); raise SystemExit(3)"]
    daemon = Daemon("broken", argv, log_path=tmp_path / "broken.log")
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*unknown option"):
        daemon.start(lambda: False, timeout=10)
    assert not daemon.running


def test_daemon_never_ready_is_stopped_after_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"]
    daemon = Daemon("sleepy", argv, log_path=tmp_path / "sleepy.log")
    with pytest.raises(ServerStartError, match=r"(?s)not ready after 1s.*sleeping"):
        daemon.start(lambda: False, timeout=1)
    assert not daemon.running
    assert daemon.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(daemon.pid, 0)


def test_free_ports_are_distinct_and_loopback_only() -> None:
    ports = {free_port(udp=True) for _ in range(20)}
    assert len(ports) == 20 and all(port_is_free(port, udp=True) for port in ports)
    with pytest.raises(ValueError, match="loopback"):
        free_port(["192.0.2.1"])


def test_daemon_that_lost_its_port_fails_fast_as_a_port_clash(tmp_path: Path) -> None:
    """named keeps running without the socket it could not bind; the log says why."""
    argv = [sys.executable, "-c", "print('bind: address already in use', flush=True); import time; time.sleep(60)"]
    daemon = Daemon("clash", argv, log_path=tmp_path / "clash.log")
    started = time.monotonic()
    with pytest.raises(PortClashError):
        daemon.start(lambda: False, timeout=30)
    assert time.monotonic() - started < 10 and not daemon.running


def test_bind_retries_with_new_ports_when_its_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another suite grabbing the port between free_port() and named's bind: named really fails to
    bind (we hold the port), the launcher picks new ports. Only the port choice is steered."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    choices = iter([busy])
    real_free_port = free_port

    def first_busy(*args: object, **kwargs: object) -> int:
        return next(choices, None) or real_free_port(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("lecentral_testing.bind.free_port", first_busy)
    try:
        with BindServer(tmp_path, subzones=["www.example.test"]) as bind:
            assert bind.port != busy
            assert bind.serial("www.example.test") == 1
        assert "address in use" in (tmp_path / "named.log").read_text()
    finally:
        taken.close()
