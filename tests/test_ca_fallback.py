"""CA fallback: ``[[acme.ca]]`` lists CAs in order; a failure that is the CA's sends the order to
the next CA in the same run, a failure that is ours does not.

Real parts throughout: the session's BIND and resolver (``dns_world``), Pebbles of this module
(each with its own directory, account and CA roots, and its own TLS certificate as ``ca_bundle``),
and ``lecentral renew --json`` / ``list`` / ``show`` run in-process. A CA "down" is a Pebble that
was started and stopped (its port refuses connections); a CA "returning errors" is a Pebble with
``PEBBLE_WFE_NONCEREJECT=100``: it refuses every nonce, so every request is a ``badNonce``, still
one after lecentral's bounded retries.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK
from lecentral_testing.tomlfile import write_toml as write_tables
from renew_world import (
    BADSECRET,
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
    renew_cli,
)

from lecentral.certificates import Certificate, load_chain
from lecentral.cli.central import main
from lecentral.config import CentralConfig, build, masked
from lecentral.errors import ConfigError

#: what Pebble logs for every newOrder request
NEW_ORDER = "/order-plz"


def start_pebble(dns_world: World, workdir: Path, **options: Any) -> PebbleServer:
    return PebbleServer(workdir, dns_server=(LOOPBACK, dns_world.resolver.port), **options).start()


@pytest.fixture(scope="module")
def backup(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """The second CA of the list: a healthy Pebble of its own."""
    with start_pebble(dns_world, tmp_path_factory.mktemp("backup-pebble")) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def down(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> PebbleServer:
    """A CA that is down: a Pebble started (so its directory URL and TLS files are real), then
    stopped; nothing listens on its port any more."""
    pebble = start_pebble(dns_world, tmp_path_factory.mktemp("down-pebble"))
    pebble.stop()
    return pebble


@pytest.fixture(scope="module")
def failing(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A CA answering errors: Pebble rejecting every nonce (badNonce to every POST)."""
    with start_pebble(dns_world, tmp_path_factory.mktemp("failing-pebble"),
                      env={"PEBBLE_WFE_NONCEREJECT": "100"}) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def blocked_name(dns_world: World) -> str:
    """A real, updatable sub-zone that the ``strict`` Pebble refuses to issue for (policy)."""
    return new_zone(dns_world, "fbblocked")


@pytest.fixture(scope="module")
def strict(dns_world: World, blocked_name: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A healthy CA whose policy refuses ``blocked_name`` (rejectedIdentifier)."""
    with start_pebble(dns_world, tmp_path_factory.mktemp("strict-pebble"),
                      config={"domainBlocklist": [blocked_name]}) as pebble:
        yield pebble


class FailingOrders:
    """A stand-in ACME CA whose account registration works and whose every newOrder fails with
    ``answer`` (status, content type, body, headers). A stand-in because no real CA can be made
    to answer serverInternal, rateLimited or a proxy's 502 page at newOrder on demand; plain HTTP,
    which the ACME client accepts as it does HTTPS. ``orders`` counts the newOrders it refused."""

    def __init__(self, answer: tuple[int, str, bytes, dict[str, str]]) -> None:
        self.orders = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, ctype: str,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
                self.send_header("Replay-Nonce", nonce)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:
                self._send(200, b"", "application/json")

            def do_GET(self) -> None:
                base = stand_in.url
                self._send(200, json.dumps({"newNonce": f"{base}/nonce", "newAccount": f"{base}/acct",
                                            "newOrder": f"{base}/new-order", "meta": {}}).encode(),
                           "application/json")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/acct":
                    self._send(201, json.dumps({"status": "valid"}).encode(), "application/json",
                               {"Location": f"{stand_in.url}/acct/1"})
                    return
                stand_in.orders += 1
                status, ctype, body, headers = answer
                self._send(status, body, ctype, headers)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def problem(code: str, detail: str) -> bytes:
    return json.dumps({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail}).encode()


def ca_entry(name: str, pebble: PebbleServer, tmp: Path) -> dict[str, Any]:
    return {"name": name, "directory": pebble.directory_url, "email": "hostmaster@example.test",
            "account_key": str(tmp / "acme" / f"{name}.key"), "ca_bundle": str(pebble.ca_bundle)}


def fallback_toml(config: CentralConfig, path: Path, cas: list[dict[str, Any]]) -> Path:
    """The operator's lecentral.toml with ``[[acme.ca]]`` entries instead of the [acme] CA."""
    return write_tables(path, {
        "database": {"url": config.database.url},
        "acme": {"poll_timeout": 60, "ca": cas},
        "renew": {"retry_pause": 0, "max_failures": 1, "workers": 2,
                  "state_dir": config.renew.state_dir},
        "dns": {"server": config.dns.server, "port": config.dns.port,
                "tsig_key_file": config.dns.tsig_key_file, "propagation_timeout": 10.0,
                "propagation_interval": 0.05,
                "zones": {zone: {"tsig_key_file": conf.tsig_key_file}
                          for zone, conf in config.dns.zones.items()}},
    })


def cli_json(toml: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--config", str(toml), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def log_size(pebble: PebbleServer) -> int:
    path = pebble.workdir / "pebble.log"
    return path.stat().st_size if path.exists() else 0


def log_since(pebble: PebbleServer, offset: int) -> str:
    return (pebble.workdir / "pebble.log").read_bytes()[offset:].decode(errors="replace")


def issued_by(pebble: PebbleServer, crt: bytes, ca: bytes) -> None:
    """The leaf and the chain stored are ``pebble``'s: its intermediate signed the leaf."""
    intermediate = Certificate.load(pebble.intermediate_pem().encode())
    assert Certificate.load(crt).issuer == intermediate.subject
    assert next(c.subject for c in load_chain(ca)) == intermediate.subject


# --- the configuration ---------------------------------------------------------------------------


def test_the_ca_list_is_read_in_order_and_the_single_form_stays(tmp_path: Path) -> None:
    """``[[acme.ca]]`` entries, in order, each its own account; ``[acme] profile`` and
    ``poll_timeout`` stay shared (an entry's profile overrides). Without entries the single
    ``[acme]`` CA is the one CA, named "default"."""
    table = {"acme": {"profile": "classic", "poll_timeout": 30, "ca": [
        {"name": "le", "directory": "https://le.test/dir", "account_key": "/k/le.key"},
        {"name": "other", "directory": "https://other.test/dir", "account_key": "/k/o.key",
         "eab_kid": "kid", "eab_hmac_key": "c2VjcmV0LXZhbHVlLW5ldmVyLXNob3du", "profile": "tls"},
    ]}}
    config = build(CentralConfig, table, "", "x.toml")
    cas = config.acme.authorities()
    assert [(n, a.directory, a.account_key, a.profile, a.poll_timeout) for n, a in cas] == [
        ("le", "https://le.test/dir", "/k/le.key", "classic", 30),
        ("other", "https://other.test/dir", "/k/o.key", "tls", 30)]
    assert cas[1][1].eab_hmac_key == "c2VjcmV0LXZhbHVlLW5ldmVyLXNob3du"
    assert config.acme.first().directory == "https://le.test/dir"
    shown = json.dumps(masked(config))
    assert "c2VjcmV0LXZhbHVlLW5ldmVyLXNob3du" not in shown and "********" in shown

    single = build(CentralConfig, {"acme": {"directory": "https://one.test/dir"}}, "", "x.toml")
    assert [(n, a.directory) for n, a in single.acme.authorities()] == [
        ("default", "https://one.test/dir")]


@pytest.mark.parametrize(("acme", "message"), [
    ({"directory": "https://one.test/dir",
      "ca": [{"name": "a", "directory": "https://a.test/dir", "account_key": "/k/a"}]},
     ("x.toml: [acme] directory and [[acme.ca]] both say which CA to use; with [[acme.ca]] "
     "entries, move it into the entries")),
    ({"ca": [{"name": "a", "directory": "https://a.test/dir", "account_key": "/k/a"},
             {"name": "a", "directory": "https://b.test/dir", "account_key": "/k/b"}]},
     "x.toml: acme.ca[1].name = 'a' is used by an earlier [[acme.ca]] entry; each CA needs its own"),
    ({"ca": [{"name": "a", "directory": "https://a.test/dir", "account_key": "/k/a"},
             {"name": "b", "directory": "https://b.test/dir", "account_key": "/k/a"}]},
     "x.toml: acme.ca[1].account_key = '/k/a' is used by an earlier [[acme.ca]] entry"),
    ({"ca": [{"name": "a", "account_key": "/k/a"}]},
     "x.toml: acme.ca[0].directory is required in every [[acme.ca]] entry"),
    ({"ca": [{"name": "a b", "directory": "https://a.test/dir", "account_key": "/k/a"}]},
     "x.toml: acme.ca[0].name = 'a b' is not valid (letters, digits"),
    ({"ca": [{"name": "a", "directory": "https://a.test/dir", "account_key": "/k/a",
              "eab_hmac_key": 12345678}]},
     "x.toml: acme.ca[0].eab_hmac_key must be str"),
    ({"ca": {"name": "a"}}, "x.toml: acme.ca must be a list of CaConfig"),
])
def test_ambiguous_or_wrong_ca_lists_are_config_errors(acme: dict[str, Any], message: str) -> None:
    """Both forms at once, a name or an account key twice, a missing key: ConfigError naming
    the key; a secret's value is never quoted."""
    with pytest.raises(ConfigError) as caught:
        build(CentralConfig, {"acme": acme}, "", "x.toml")
    assert message in str(caught.value)
    assert "12345678" not in str(caught.value)


# --- fallback in a renew run ------------------------------------------------------------------


def test_a_ca_that_is_down_falls_back_to_the_next(dns_world: World, down: PebbleServer,
                                                  backup: PebbleServer, tmp_path: Path) -> None:
    """The first CA refuses connections: the second issues in the same run; the certificate and
    chain stored are the second CA's, its name is recorded and shown by renew, list, show and
    the issued event; the run says why the first was passed over."""
    name = new_zone(dns_world, "fbdown")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    _, key = add_row(store, [name])
    toml = fallback_toml(config, tmp_path / "lecentral.toml",
                         [ca_entry("primary", down, tmp_path), ca_entry("backup", backup, tmp_path)])
    offset = log_size(backup)

    result = renew_cli(toml, "--once")

    assert result.exit_code == 0, result.data
    outcome = result.outcome(name)
    assert outcome["status"] == "issued" and outcome["issuer_ca"] == "backup"
    assert outcome["message"].startswith("issued by CA backup, valid until ")
    assert f"CA primary ({down.directory_url}): reading the ACME directory: cannot reach" \
        in outcome["message"]
    assert "trying CA backup next" in result.stderr
    assert NEW_ORDER in log_since(backup, offset)
    assert_issued(store, name, [name], key)
    row = store.get(name)
    assert row is not None and row.crt and row.ca
    issued_by(backup, row.crt, row.ca)
    assert store.issuing_cas() == {name: ("backup", backup.directory_url)}
    assert store.events(name)[0].message.startswith(
        f"issued by CA backup ({backup.directory_url}), expires at ")
    listed = {i["name"]: i for i in cli_json(toml, "list")}
    assert listed[name]["issuer_ca"] == "backup"
    assert listed[name]["issuer_ca_directory"] == backup.directory_url
    assert cli_json(toml, "show", name)["issuer_ca"] == "backup"
    shown = CliRunner().invoke(main, ["--config", str(toml), "show", name])
    assert f"issuing CA        backup ({backup.directory_url})" in shown.stdout
    store.close()


def test_a_ca_answering_errors_falls_back_to_the_next(dns_world: World, failing: PebbleServer,
                                                     backup: PebbleServer, tmp_path: Path) -> None:
    """The first CA answers badNonce to every request, also after lecentral's retries: that is
    the CA's failure; the second issues."""
    name = new_zone(dns_world, "fberr")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    _, key = add_row(store, [name])
    toml = fallback_toml(config, tmp_path / "lecentral.toml",
                         [ca_entry("primary", failing, tmp_path), ca_entry("backup", backup, tmp_path)])

    result = renew_cli(toml, "--once")

    assert result.exit_code == 0, result.data
    outcome = result.outcome(name)
    assert outcome["status"] == "issued" and outcome["issuer_ca"] == "backup"
    assert "CA primary" in outcome["message"] and "the CA answered badNonce" in outcome["message"]
    assert_issued(store, name, [name], key)
    row = store.get(name)
    assert row is not None and row.crt and row.ca
    issued_by(backup, row.crt, row.ca)
    assert store.issuing_cas()[name][0] == "backup"
    store.close()


@pytest.mark.parametrize(("answer", "said"), [
    ((500, "application/problem+json", problem("serverInternal", "the database is down"), {}),
     "the CA answered serverInternal: the database is down"),
    ((429, "application/problem+json", problem("rateLimited", "too many new orders"),
      {"Retry-After": "3600"}),
     "the CA answered rateLimited: too many new orders; retry after "),
    ((502, "text/html", b"<html><body>502 Bad Gateway</body></html>", {}),
     "answered HTTP 502 without a problem document (the CA's side is failing)"),
], ids=["serverInternal", "rateLimited", "http-502"])
def test_an_order_the_ca_fails_goes_to_the_next_ca(
        dns_world: World, backup: PebbleServer, tmp_path: Path,
        answer: tuple[int, str, bytes, dict[str, str]], said: str) -> None:
    """The first CA takes the account but fails the newOrder (the CA's failure): the TXT records
    were never published there, the second CA issues in the same run."""
    name = new_zone(dns_world, "fborder")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    _, key = add_row(store, [name])
    stand_in = FailingOrders(answer)
    try:
        first = {"name": "primary", "directory": f"{stand_in.url}/dir",
                 "account_key": str(tmp_path / "acme" / "primary.key")}
        toml = fallback_toml(config, tmp_path / "lecentral.toml",
                             [first, ca_entry("backup", backup, tmp_path)])
        result = renew_cli(toml, "--once")
    finally:
        stand_in.close()

    assert result.exit_code == 0, result.data
    assert stand_in.orders == 1
    outcome = result.outcome(name)
    assert outcome["status"] == "issued" and outcome["issuer_ca"] == "backup"
    assert f"CA primary ({stand_in.url}/dir): creating the order for {name}: " in outcome["message"]
    assert said in outcome["message"]
    assert_issued(store, name, [name], key)
    assert store.issuing_cas()[name] == ("backup", backup.directory_url)
    store.close()


def test_every_ca_failing_fails_naming_each(dns_world: World, down: PebbleServer,
                                           failing: PebbleServer, tmp_path: Path) -> None:
    """No CA of the list can issue: the certificate fails once, the message says what each CA
    answered; the row is unchanged but for the failure count, nothing recorded as issuer."""
    name = new_zone(dns_world, "fbnone")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    before = store.get(name)
    toml = fallback_toml(config, tmp_path / "lecentral.toml",
                         [ca_entry("primary", down, tmp_path), ca_entry("second", failing, tmp_path)])

    result = renew_cli(toml, "--once")

    assert result.exit_code == 1
    outcome = result.outcome(name)
    assert outcome["status"] == "failed" and outcome["count_fail_update"] == 1
    assert outcome["issuer_ca"] is None
    assert f"CA primary ({down.directory_url}): reading the ACME directory: cannot reach" \
        in outcome["message"]
    assert f"CA second ({failing.directory_url}):" in outcome["message"]
    assert "badNonce" in outcome["message"]
    after = store.get(name)
    assert after is not None and before is not None
    assert after.crt == before.crt and after.ca == before.ca and after.count_fail_update == 1
    assert store.issuing_cas() == {}
    assert store.events(name)[0].kind == "failed"
    store.close()


def test_a_dns_failure_is_ours_and_not_tried_at_the_next_ca(
        dns_world: World, backup: PebbleServer, failing: PebbleServer, tmp_path: Path) -> None:
    """The TSIG key of the name's zone is refused (our DNS): the certificate fails at the first
    CA and the second is never asked for an order (nor an account)."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [BADSECRET])
    toml = fallback_toml(config, tmp_path / "lecentral.toml",
                         [ca_entry("primary", backup, tmp_path), ca_entry("second", failing, tmp_path)])
    offset = log_size(failing)

    result = renew_cli(toml, "--once", BADSECRET)

    assert result.exit_code == 1
    outcome = result.outcome(BADSECRET)
    assert outcome["status"] == "failed" and outcome["issuer_ca"] is None
    assert outcome["message"].startswith(f"CA primary ({backup.directory_url}): ")
    assert outcome["message"].endswith("(not the CA's failure: not tried at the next CA)")
    assert "CA second" not in outcome["message"] and "trying CA" not in result.stderr
    assert log_since(failing, offset) == ""
    store.close()


def test_a_policy_refusal_is_ours_and_not_tried_at_the_next_ca(
        dns_world: World, strict: PebbleServer, blocked_name: str, backup: PebbleServer,
        tmp_path: Path) -> None:
    """The first CA refuses the name (rejectedIdentifier: its policy about our name): not
    retried at the second CA, which gets no order; the TXT records are gone."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [blocked_name])
    toml = fallback_toml(config, tmp_path / "lecentral.toml",
                         [ca_entry("primary", strict, tmp_path), ca_entry("backup", backup, tmp_path)])
    offset = log_size(backup)

    result = renew_cli(toml, "--once", blocked_name)

    assert result.exit_code == 1
    outcome = result.outcome(blocked_name)
    assert outcome["status"] == "failed"
    assert outcome["message"].startswith(f"CA primary ({strict.directory_url}): creating the "
                                         f"order for {blocked_name}: the CA answered "
                                         "rejectedIdentifier")
    assert outcome["message"].endswith("(not the CA's failure: not tried at the next CA)")
    assert "CA backup" not in outcome["message"] and "trying CA" not in result.stderr
    assert NEW_ORDER not in log_since(backup, offset)
    assert dns_world.bind.txt_values(f"_acme-challenge.{blocked_name}") == []
    store.close()


def test_the_issued_hook_hears_the_issuing_ca(dns_world: World, down: PebbleServer,
                                             backup: PebbleServer, tmp_path: Path) -> None:
    """``lecentral_cert_issued`` gets ``issuer_ca``; a handler written before it existed (without
    the argument) is still called."""
    import dataclasses

    from renew_world import run

    from lecentral.config import CaConfig
    from lecentral.hookspecs import hookimpl
    from lecentral.registry import Registry

    heard: list[tuple[str, Any]] = []

    class Recorder:
        @hookimpl
        def lecentral_cert_issued(self, name: str, issuer_ca: str | None) -> None:
            heard.append((name, issuer_ca))

    class OldHandler:
        @hookimpl
        def lecentral_cert_issued(self, name: str, ts_expire: int) -> None:
            heard.append((name, "old"))

    name = new_zone(dns_world, "fbhook")
    config = make_config(dns_world, tmp_path)
    cas = [CaConfig(name="primary", directory=down.directory_url,
                    account_key=str(tmp_path / "acme" / "primary.key"), ca_bundle=str(down.ca_bundle)),
           CaConfig(name="backup", directory=backup.directory_url,
                    account_key=str(tmp_path / "acme" / "backup.key"),
                    ca_bundle=str(backup.ca_bundle))]
    config = dataclasses.replace(config, acme=dataclasses.replace(
        config.acme.__class__(poll_timeout=60), ca=cas))
    store = open_store(config)
    add_row(store, [name])
    registry = Registry.load(entrypoints=False)
    registry.loaded.pm.register(Recorder(), name="recorder")
    registry.loaded.pm.register(OldHandler(), name="old-handler")

    outcome = run(config, store, registry).final[0]

    assert outcome.status == "issued" and outcome.issuer_ca == "backup"
    assert sorted(heard) == sorted([(name, "backup"), (name, "old")])
    store.close()


def test_account_commands_choose_the_ca_by_name(tmp_path: Path) -> None:
    """``lecentral account show --ca NAME``: an unknown NAME is a usage error listing the CAs."""
    toml = write_tables(tmp_path / "lecentral.toml", {"acme": {"ca": [
        {"name": "le", "directory": "https://le.test/dir", "account_key": str(tmp_path / "le.key")},
        {"name": "backup", "directory": "https://b.test/dir",
         "account_key": str(tmp_path / "b.key")}]}})
    result = CliRunner().invoke(main, ["--config", str(toml), "account", "show", "--ca", "nope"])
    assert result.exit_code == 2
    assert "--ca nope: no such CA in [[acme.ca]] (configured: le, backup)" in result.stderr
    # the named CA's key is the one looked for (none yet: show never creates one)
    result = CliRunner().invoke(main, ["--config", str(toml), "account", "show", "--ca", "backup"])
    assert result.exit_code == 2 and str(tmp_path / "b.key") in result.stderr


def test_the_spool_keeps_the_issuing_ca(tmp_path: Path) -> None:
    """A certificate spooled because its save failed keeps its issuing CA for the run that saves
    it; a spool file of an older release (no issuer_ca) still reads, with none."""
    from lecentral_testing.pki import make_csr, make_self_signed

    from lecentral.certificates import Csr
    from lecentral.renew.spool import CertSpool

    spool = CertSpool(str(tmp_path / "state"))
    csr_pem, key = make_csr(["spooled.example.test"])
    crt, _ = make_self_signed(["spooled.example.test"], key)
    put = spool.put("spooled.example.test", crt, crt, Csr.load(csr_pem).der, 5, "dns-subzone", 4,
                    ("backup", "https://b.test/dir"))
    assert spool.read(put.path).issuer_ca == ("backup", "https://b.test/dir")
    data = json.loads(put.path.read_text())
    del data["issuer_ca"]
    put.path.write_text(json.dumps(data))
    assert spool.read(put.path).issuer_ca is None


def test_every_cas_eab_secret_is_redacted(tmp_path: Path) -> None:
    """The renew run's redactor hides the EAB HMAC key of every CA of the list, not only one."""
    from lecentral.config import AcmeConfig, CaConfig
    from lecentral.renew.context import Redactor

    cas = [CaConfig(name="a", directory="https://a.test/dir", account_key="/k/a",
                    eab_kid="ka", eab_hmac_key="first-secret-value"),
           CaConfig(name="b", directory="https://b.test/dir", account_key="/k/b",
                    eab_kid="kb", eab_hmac_key="second-secret-value")]
    redact = Redactor(CentralConfig(acme=AcmeConfig(ca=cas)))
    assert redact("a first-secret-value and a second-secret-value") == "a ******** and a ********"
