"""ACME profiles (draft-ietf-acme-profiles) and ARI ``replaces`` (RFC 9773 §5) in newOrder.

Debian's Pebble (2.4) offers neither profiles nor ``renewalInfo``, and no other ACME server can
run here, so most of these tests stand in a minimal ACME server (:class:`StandInCa`: directory,
nonces, account, newOrder, one pre-validated authorization, finalize, certificate) for the CA.
It does not check JWS signatures; it reads their payloads, which is what these tests are about.
Everything on lecentral's side is real: the renew job, its SQLite store with the settings
table, the AcmeClient and the acme library's JWS, the CLI. The last test orders from the real
Pebble to show that a CA offering no profiles gets no ``profile`` field and the order goes on.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lecentral_testing.agent import PebbleOrders, TestCA
from lecentral_testing.central import new_row
from lecentral_testing.pki import make_csr

from lecentral.acme.client import AcmeClient, ari_cert_id
from lecentral.acme.orders import OrderOptions
from lecentral.certificates import Certificate, split_fullchain
from lecentral.cli.central import main
from lecentral.config import AcmeConfig, CentralConfig
from lecentral.errors import IssueError
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.store.sql import SqlStore
from lecentral.types import IssuerContext, IssuerType

NAME = "profiles.example.test"
#: the certificate lifetime the stand-in CA gives per profile (None: no profile asked)
LIFETIMES = {None: 90.0, "classic": 90.0, "shortlived": 160 / 24}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StandInCa:
    """A minimal ACME CA at ``/dir``; ``profiles`` (None: no ``meta.profiles``) and ``ari`` (a
    ``renewalInfo`` URL) shape its directory; ``orders`` keeps every newOrder payload;
    ``reject_replaces`` answers a newOrder carrying ``replaces`` with that problem."""

    def __init__(self, profiles: dict[str, str] | None, ari: bool = True) -> None:
        self.profiles = profiles
        self.ari = ari
        self.orders: list[dict[str, Any]] = []
        self.reject_replaces: tuple[int, str, str] | None = None
        self.ca = TestCA("stand-in profile CA")
        self.state: dict[int, dict[str, Any]] = {}
        ca = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any, ctype: str = "application/json",
                      location: str | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Replay-Nonce", _b64(secrets.token_bytes(16)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._send(200, b"")

            def do_GET(self) -> None:
                if self.path != "/dir":
                    self._send(404, b"")
                    return
                self._send(200, ca.directory())

            def do_POST(self) -> None:
                jws = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                payload = json.loads(_unb64(jws["payload"])) if jws["payload"] else None
                kind, _, number = self.path.strip("/").partition("/")
                status, body, ctype, location = ca.answer(kind, int(number or 0), payload)
                self._send(status, body, ctype, location)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def directory(self) -> dict[str, Any]:
        found: dict[str, Any] = {"newNonce": f"{self.url}/nonce", "newAccount": f"{self.url}/acct",
                                 "newOrder": f"{self.url}/new-order", "meta": {}}
        if self.profiles is not None:
            found["meta"]["profiles"] = self.profiles
        if self.ari:
            found["renewalInfo"] = f"{self.url}/ari"
        return found

    def _order(self, number: int) -> dict[str, Any]:
        state = self.state[number]
        body = {"status": state["status"], "identifiers": state["identifiers"],
                "authorizations": [f"{self.url}/authz/{number}"],
                "finalize": f"{self.url}/finalize/{number}"}
        if state.get("profile"):
            body["profile"] = state["profile"]
        if state["status"] == "valid":
            body["certificate"] = f"{self.url}/cert/{number}"
        return body

    def answer(self, kind: str, number: int, payload: Any) -> tuple[int, Any, str, str | None]:
        if kind == "acct":
            return 201, {"status": "valid"}, "application/json", f"{self.url}/acct/1"
        if kind == "new-order":
            self.orders.append(payload)
            if self.reject_replaces and "replaces" in payload:
                status, typ, detail = self.reject_replaces
                return status, {"type": f"urn:ietf:params:acme:error:{typ}", "detail": detail}, \
                    "application/problem+json", None
            number = len(self.orders)
            self.state[number] = {"status": "ready", "identifiers": payload["identifiers"],
                                  "profile": payload.get("profile")}
            return 201, self._order(number), "application/json", f"{self.url}/order/{number}"
        if kind == "authz":
            ident = self.state[number]["identifiers"][0]
            return 200, {"status": "valid", "identifier": ident, "challenges": []}, \
                "application/json", None
        if kind == "finalize":
            csr = x509.load_der_x509_csr(_unb64(payload["csr"]))
            pem = csr.public_bytes(serialization.Encoding.PEM)
            days = LIFETIMES[self.state[number].get("profile")]
            self.state[number].update(status="valid", crt=self.ca.sign(pem, days=days))
            return 200, self._order(number), "application/json", f"{self.url}/order/{number}"
        if kind == "order":
            return 200, self._order(number), "application/json", None
        if kind == "cert":
            chain = self.state[number]["crt"] + self.ca.pem
            return 200, chain, "application/pem-certificate-chain", None
        return 404, {"type": "about:blank"}, "application/problem+json", None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def offering() -> Iterator[StandInCa]:
    """A CA offering the profiles ``classic`` and ``shortlived``, and ARI."""
    ca = StandInCa({"classic": "the 90-day certificate", "shortlived": "160 hours"})
    yield ca
    ca.close()


@pytest.fixture
def plain() -> Iterator[StandInCa]:
    """A CA offering no profiles (its directory has no meta.profiles), with ARI."""
    ca = StandInCa(None)
    yield ca
    ca.close()


class PreValidatedIssuer(Issuer):
    """An issuer for a CA whose authorizations are valid already (the stand-in's): the
    dns-subzone issuer's ACME steps without its DNS part, through the run's real AcmeClient."""

    def __init__(self, context: IssuerContext) -> None:
        self.context = context

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        client = self.context.acme()
        order = client.new_order(csr.pem, csr.names)
        assert client.pending_challenges(order, "dns-01") == []
        crt, ca = split_fullchain(client.finalize(order).encode())
        return IssuedCertificate(crt=crt, ca=ca)


class Plugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType(name="pre-validated", factory=PreValidatedIssuer,
                           description="the stand-in CA's pre-validated orders")]


class World:
    """A SQLite store with one row and a renew job against ``ca``."""

    def __init__(self, ca: StandInCa, tmp_path: Path, profile: str = "") -> None:
        self.ca = ca
        self.tmp_path = tmp_path
        self.url = f"sqlite:///{tmp_path}/lecentral.db"
        self.store = SqlStore(self.url)
        self.store.init_schema()
        csr, _ = make_csr([NAME, f"www.{NAME}"])
        self.store.add(new_row(csr))
        base = CentralConfig()
        self.config = replace(
            base, acme=AcmeConfig(directory=f"{ca.url}/dir", account_key=str(tmp_path / "acct.key"),
                                  profile=profile, poll_timeout=10),
            renew=replace(base.renew, dns01_issuer="pre-validated", workers=1,
                          state_dir=str(tmp_path / "state")))
        loaded = get_plugin_manager(entrypoints=False)
        loaded.pm.register(Plugin(), name="test-profiles")
        self.registry = Registry(loaded)

    def renew(self, force: bool = False) -> Any:
        report = RenewJob(self.config, self.store, self.registry).run(
            RenewRequest(names=(NAME,), force=force, once=True))
        (outcome,) = report.final
        return outcome

    def cli(self, *args: str) -> Any:
        config = self.tmp_path / "lecentral.toml"
        config.write_text(f'[database]\nurl = "{self.url}"\n[acme]\ndirectory = "{self.ca.url}/dir"\n'
                          f'profile = "{self.config.acme.profile}"\n')
        return CliRunner().invoke(main, ["--config", str(config), *args])

    def lifetime_days(self) -> float:
        row = self.store.get(NAME)
        assert row is not None and row.crt
        cert = Certificate.load(row.crt)
        return (cert.not_after - cert.not_before) / 86400


def test_the_profile_is_sent_when_offered_and_shown(offering: StandInCa, tmp_path: Path) -> None:
    """[acme] profile classic; lecentral set NAME --profile shortlived wins for NAME: the order
    carries it, the CA's 160-hour certificate is saved, list/show say profile and lifetime."""
    world = World(offering, tmp_path, profile="classic")
    result = world.cli("set", NAME, "--profile", "shortlived")
    assert result.exit_code == 0, result.output
    assert "profile shortlived" in result.output
    assert world.store.profiles() == {NAME: "shortlived"}
    outcome = world.renew()
    assert outcome.status == "issued", outcome.message
    assert offering.orders[0]["profile"] == "shortlived"
    assert "replaces" not in offering.orders[0]  # a first issuance replaces nothing
    assert round(world.lifetime_days(), 1) == 6.7
    listed = world.cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.stdout)
    assert (item["profile"], item["profile_source"], item["lifetime_days"]) == \
        ("shortlived", "lecentral set", 6.7)
    table = world.cli("list")
    assert "PROFILE" in table.stdout and "shortlived" in table.stdout and "6.7" in table.stdout
    shown = world.cli("show", NAME)
    assert "profile           shortlived (lecentral set)" in shown.stdout
    assert "lifetime          6.7 days" in shown.stdout
    assert "settings" in shown.stdout and "profile shortlived" in shown.stdout  # the event

    # cleared: [acme] profile (classic) applies again
    cleared = world.cli("set", NAME, "--profile", "", "--json")
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.stdout) == {"name": NAME, "profile": None, "effective": "classic"}
    assert world.renew(force=True).status == "issued"
    assert offering.orders[-1]["profile"] == "classic"
    assert round(world.lifetime_days(), 1) == 90.0
    (item,) = json.loads(world.cli("list", "--json").stdout)
    assert (item["profile"], item["profile_source"], item["lifetime_days"]) == \
        ("classic", "[acme] profile", 90.0)
    world.store.close()


def test_no_profile_asked_sends_none(offering: StandInCa, tmp_path: Path) -> None:
    world = World(offering, tmp_path)
    assert world.renew().status == "issued"
    assert "profile" not in offering.orders[0]
    (item,) = json.loads(world.cli("list", "--json").stdout)
    assert (item["profile"], item["lifetime_days"]) == (None, 90.0)
    world.store.close()


def test_an_unknown_profile_fails_naming_the_offered_ones(offering: StandInCa,
                                                         tmp_path: Path) -> None:
    """Nothing is ordered, the failure is recorded with the offered profiles, the row keeps
    whatever it had."""
    world = World(offering, tmp_path)
    world.store.set_profile(NAME, "tlsserver")
    before = world.store.get(NAME)
    outcome = world.renew()
    assert outcome.status == "failed"
    assert ("offers no ACME profile 'tlsserver' (from lecentral set profiles.example.test "
            "--profile); it offers: classic (the 90-day certificate), shortlived (160 hours)"
            ) in outcome.message
    assert offering.orders == []
    after = world.store.get(NAME)
    assert after is not None and before is not None
    assert (after.crt, after.count_fail_update) == (before.crt, 1)
    assert "offers no ACME profile 'tlsserver'" in world.store.events(NAME)[0].message
    world.store.close()


def test_a_ca_offering_no_profiles_gets_no_profile_field(plain: StandInCa, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    world = World(plain, tmp_path, profile="shortlived")
    assert world.renew().status == "issued"
    assert "profile" not in plain.orders[0]
    assert any(r.levelname == "WARNING" and "offers no ACME profiles: ordering" in r.getMessage()
               for r in caplog.records), caplog.text  # asked for, not applied: said loudly
    world.store.close()


def test_a_renewal_sends_replaces(offering: StandInCa, tmp_path: Path) -> None:
    world = World(offering, tmp_path)
    assert world.renew().status == "issued"
    first = world.store.get(NAME)
    assert first is not None and first.crt
    assert world.renew(force=True).status == "issued"
    assert offering.orders[1]["replaces"] == ari_cert_id(first.crt)
    assert len(offering.orders) == 2
    world.store.close()


def test_replaces_only_to_a_ca_offering_ari(tmp_path: Path) -> None:
    """RFC 9773: replaces goes only to a CA whose directory has renewalInfo."""
    ca = StandInCa(None, ari=False)
    try:
        world = World(ca, tmp_path)
        assert world.renew().status == "issued"
        assert world.renew(force=True).status == "issued"
        assert [o.get("replaces") for o in ca.orders] == [None, None]
        world.store.close()
    finally:
        ca.close()


@pytest.mark.parametrize("problem", [
    (409, "alreadyReplaced", "the certificate was already replaced by another order"),
    (400, "malformed", "cannot find the certificate named in replaces"),
])
def test_a_rejected_replaces_is_dropped_and_the_order_made_again(
        offering: StandInCa, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        problem: tuple[int, str, str]) -> None:
    world = World(offering, tmp_path)
    assert world.renew().status == "issued"
    first = world.store.get(NAME)
    assert first is not None and first.crt
    offering.reject_replaces = problem
    outcome = world.renew(force=True)
    assert outcome.status == "issued", outcome.message
    replaced_id = ari_cert_id(first.crt)
    assert [o.get("replaces") for o in offering.orders] == [None, replaced_id, None]
    warning = [r for r in caplog.records if r.levelname == "WARNING"
               and "rejected replaces" in r.getMessage()]
    assert len(warning) == 1
    assert f"replaces={replaced_id} ({problem[1]}: {problem[2]})" in warning[0].getMessage()
    world.store.close()


def test_another_order_problem_is_not_retried(offering: StandInCa, tmp_path: Path) -> None:
    """Only a problem about replaces gets the second order; a rate limit fails the renewal,
    once, with the CA's words, and the stored certificate stays."""
    world = World(offering, tmp_path)
    assert world.renew().status == "issued"
    first = world.store.get(NAME)
    assert first is not None
    offering.reject_replaces = (429, "rateLimited", "too many certificates for this name")
    outcome = world.renew(force=True)
    assert outcome.status == "failed"
    assert "the CA answered rateLimited: too many certificates for this name" in outcome.message
    assert len(offering.orders) == 2
    after = world.store.get(NAME)
    assert after is not None and after.crt == first.crt
    world.store.close()


def test_set_refuses_a_bad_profile_and_an_unknown_name(offering: StandInCa, tmp_path: Path) -> None:
    world = World(offering, tmp_path)
    bad = world.cli("set", NAME, "--profile", "short lived;")
    assert bad.exit_code == 2 and "is not a valid ACME profile name" in bad.stderr
    unknown = world.cli("set", "nope.example.test", "--profile", "shortlived")
    assert unknown.exit_code == 1 and "no certificate named" in unknown.stderr
    nothing = world.cli("set", NAME)
    assert nothing.exit_code == 2 and "give --profile" in nothing.stderr
    assert world.store.profiles() == {}
    world.store.close()


def test_a_bad_profile_in_the_database_fails_only_that_certificate(offering: StandInCa,
                                                                  tmp_path: Path) -> None:
    """A value written into lecentral_cert_settings by hand is validated before any order."""
    from sqlalchemy import text

    world = World(offering, tmp_path)
    with world.store.engine.begin() as conn:
        conn.execute(text("INSERT INTO lecentral_cert_settings (name, profile, ts_changed) "
                          "VALUES (:n, 'x y', 1)"), {"n": NAME})
    outcome = world.renew()
    assert outcome.status == "failed"
    assert "lecentral_cert_settings holds an invalid ACME profile" in outcome.message
    assert offering.orders == []
    (item,) = json.loads(world.cli("list", "--json").stdout)
    assert any("invalid ACME profile" in note for note in item["notes"])
    world.store.close()


def test_a_bad_acme_profile_in_the_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "lecentral.toml"
    config.write_text('[acme]\nprofile = "no spaces please"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "config", "show"])
    assert result.exit_code == 2
    assert "acme.profile = 'no spaces please' is not valid" in result.stderr


def test_pebble_offers_no_profiles_and_the_order_goes_on(pebble_orders: PebbleOrders,
                                                        tmp_path: Path) -> None:
    """The real Pebble (2.4: no meta.profiles, no renewalInfo): with [acme] profile set and a
    certID to replace, the newOrder carries neither field and Pebble issues. The JWS payloads
    are read by wrapping the client's own signing step (it still signs and sends them)."""
    pebble = pebble_orders.client
    client = AcmeClient(AcmeConfig(directory=pebble.directory_url, ca_bundle=pebble.config.ca_bundle,
                                   account_key=str(tmp_path / "acct.key"), profile="shortlived",
                                   poll_timeout=30), workers=1)
    sent: list[tuple[str, Any]] = []
    wrap = client.net._wrap_in_jws

    def recording(obj: Any, nonce: str, url: str) -> Any:
        sent.append((url, obj.to_json() if obj is not None else None))
        return wrap(obj, nonce, url)

    client.net._wrap_in_jws = recording  # type: ignore[method-assign]
    try:
        assert client.offered_profiles == {} and not client.offers_ari
        csr, _ = make_csr(["pebble-profile.example.test"])
        order = client.new_order(csr, ["pebble-profile.example.test"],
                                 OrderOptions(profile="shortlived", replaces="aaaa.bbbb"))
        (payload,) = [p for url, p in sent if url == client.acme.directory["newOrder"]]
        assert "profile" not in payload and "replaces" not in payload
        for challenge in client.pending_challenges(order, "dns-01"):
            client.answer(challenge)
        client.wait_authorizations(order)
        crt, _ = split_fullchain(client.finalize(order).encode())
        assert Certificate.load(crt).names == ["pebble-profile.example.test"]
    finally:
        client.close()


def test_the_unknown_profile_error_without_a_renew_run(offering: StandInCa, tmp_path: Path) -> None:
    """AcmeClient.new_order itself (what plugins call) refuses an unknown profile."""
    client = AcmeClient(AcmeConfig(directory=f"{offering.url}/dir",
                                   account_key=str(tmp_path / "acct.key")), workers=1)
    csr, _ = make_csr(["x.example.test"])
    with pytest.raises(IssueError, match=r"offers no ACME profile 'tlsserver' \(from \[acme\] "
                                         r"profile\); it offers: classic"):
        client.new_order(csr, ["x.example.test"], OrderOptions(profile="tlsserver"))
    assert offering.orders == []
    client.close()


def test_certbot_rows_get_the_profile_by_the_same_rules(offering: StandInCa, plain: StandInCa,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """certbot orders itself: the certbot-webroot issuer checks the profile against the CA's
    directory (the stand-in's, read for real over HTTP) and passes it as --required-profile;
    an unknown one is refused naming the offered ones; a CA with none gets none, said."""
    from lecentral.acme.orders import OrderOptions, ordering_with
    from lecentral.config import AcmeConfig, CentralConfig
    from lecentral.errors import IssueError
    from lecentral.http01.certbot import CertbotWebrootIssuer

    def issuer(ca: StandInCa) -> CertbotWebrootIssuer:
        return CertbotWebrootIssuer(CentralConfig(acme=AcmeConfig(directory=f"{ca.url}/dir")))

    with ordering_with(OrderOptions(profile="shortlived", profile_source="lecentral set")):
        profile = issuer(offering)._profile()
        assert profile == "shortlived"
        argv = issuer(offering).argv(Path("/w"), Path("/r"), Path("/s"), profile)
        assert argv[argv.index("--required-profile") + 1] == "shortlived"
        caplog.set_level("WARNING")
        assert issuer(plain)._profile() is None
        assert "offers no ACME profiles: certbot orders without" in caplog.text
    with ordering_with(OrderOptions(profile="nope", profile_source="lecentral set")), \
            pytest.raises(IssueError, match="offers no ACME profile 'nope'.*it offers: .*shortlived"):
        issuer(offering)._profile()
    assert "--required-profile" not in issuer(plain).argv(Path("/w"), Path("/r"), Path("/s"))
