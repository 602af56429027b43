"""``lecentral probe`` and ``lecentral endpoint`` against real daemons.

nginx (two server names on one port: the SNI sent is the certificate's name), Postfix
(smtp+starttls), Dovecot (imap+starttls, pop3+starttls), slapd through the lecentral-openldap
plugin (ldap+starttls, ldaps), a closed port and a listener that accepts and never answers; the
results saved, the fleet states judged and their changes mailed once (aiosmtpd catching the mail).

Two small Python listeners stand in where no daemon fits: :class:`TlsListener` serves a
certificate on 127.0.0.2 (the address of "the agent's host": nginx and the others listen on
127.0.0.1 only) or on a port chosen later in a test, and :class:`SilentListener` accepts TCP
connections and never says a word (a hung service). Both are real sockets: the probe dials them
exactly as it dials a daemon.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import Mailbox
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from lecentral_testing.daemons import (
    DovecotServer,
    NginxServer,
    PostfixServer,
    SlapdServer,
)
from lecentral_testing.daemons.certs import CertFiles
from lecentral_testing.pki import make_csr
from lecentral_testing.ports import free_port
from sqlalchemy import select

from lecentral.certificates import Certificate, Csr, now_ts
from lecentral.cli.central import main
from lecentral.errors import VerifyError
from lecentral.fleet.probe import probe, targets, with_sni
from lecentral.fleet.store import Deployment, FleetStore, ProbeResult, ProbeTarget, Run
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import Verifier
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.store.rows import CertRow
from lecentral.store.schema import probes, runs
from lecentral.store.sql import SqlStore
from lecentral.types import VerifierType

WWW = "www.example.test"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()  # with the entry points: lecentral-openldap brings ldap+starttls, ldaps


# --- helpers --------------------------------------------------------------------------------------


def register(store: SqlStore, name: str, cert: Path | bytes, key: Path) -> str:
    """A row for ``name`` holding ``cert`` (issued for ``key``), enabled; return its fingerprint."""
    pem = cert.read_bytes() if isinstance(cert, Path) else cert
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    csr, _ = make_csr([name], private)
    store.add(CertRow(name=name, csr=csr, md5_modulus=Csr.load(csr).md5_modulus, enable=True,
                      ts_expire=1, ts_last_update=1, count_fail_update=0))
    leaf = Certificate.load(pem)
    store.save_issued(name, pem, pem, leaf.not_after, now_ts())
    return leaf.fingerprint


def report(store: SqlStore, host: str, name: str, urls: list[str], entry: str = "e1") -> None:
    """What an agent on ``host`` writes after a run: one deployment with its verify URLs."""
    item = Deployment(name=name, entry=entry, service="nginx", installed_fp=None,
                      installed_not_after=None, served_fp=None, served_not_after=None,
                      served_names=None, served_key_md5=None, served_url=None, served_error=None,
                      ts_served=None, verify_urls=urls, paths=[], result="unchanged", message="")
    now = now_ts()
    FleetStore(store).report(host, [item], Run("agent", host, now, now, 0, {}), "test", now)


class TlsListener:
    """A TLS server on ``address:port`` presenting ``files``' certificate to every client."""

    def __init__(self, files: CertFiles, address: str = "127.0.0.1", port: int = 0) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(files.fullchain, files.key)
        self.sock = socket.create_server((address, port))
        self.address, self.port = address, self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(1)  # until the client closes
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class SilentListener:
    """Accepts connections and never sends a byte (a hung service)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def tls_listener() -> Iterator[Callable[..., TlsListener]]:
    started: list[TlsListener] = []

    def start(files: CertFiles, address: str = "127.0.0.1", port: int = 0) -> TlsListener:
        started.append(TlsListener(files, address, port))
        return started[-1]

    yield start
    for listener in started:
        listener.close()


# --- targets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,expected", [
    ("tls://127.0.0.1:443", f"tls://127.0.0.1:443?sni={WWW}"),
    ("smtp+starttls://mail:25?ehlo=a.test", f"smtp+starttls://mail:25?ehlo=a.test&sni={WWW}"),
    ("tls://127.0.0.1:443?sni=other.test", "tls://127.0.0.1:443?sni=other.test"),
    ("tls://127.0.0.1:443?sni=", "tls://127.0.0.1:443?sni="),  # "send none", said on purpose
])
def test_with_sni(url: str, expected: str) -> None:
    assert with_sni(url, WWW) == expected


def test_with_sni_leaves_a_wildcard_name_out() -> None:
    assert with_sni("tls://127.0.0.1:443", "*.example.test") == "tls://127.0.0.1:443"


def test_targets_from_reports_and_endpoints(store: SqlStore) -> None:
    fleet = FleetStore(store)
    report(store, "web1.example.test", WWW, ["tls://127.0.0.1:8443", "tls://[::1]:8443",
                                             "tls://www.example.test:443?sni=alt.example.test"])
    report(store, "web1.example.test", WWW, ["tls://localhost:8443"], entry="e2")  # same as 1st
    report(store, "web2.example.test", WWW, ["tls://127.0.0.1:8443"])
    report(store, "mail.example.test", "mail.example.test", ["smtp+starttls://127.0.0.1:25"])
    fleet.add_endpoint(WWW, "tls://lb.example.test:443?sni=www.example.test", "ops", now_ts())
    found = targets(fleet, [])
    assert found == [
        ProbeTarget("mail.example.test", "smtp+starttls://mail.example.test:25?sni=mail.example.test",
                    "agent"),
        ProbeTarget(WWW, "tls://lb.example.test:443?sni=www.example.test", "operator"),
        ProbeTarget(WWW, "tls://web1.example.test:8443?sni=www.example.test", "agent"),
        ProbeTarget(WWW, "tls://web2.example.test:8443?sni=www.example.test", "agent"),
        ProbeTarget(WWW, "tls://www.example.test:443?sni=alt.example.test", "agent"),
    ]
    assert [t.name for t in targets(fleet, ["mail.example.test"])] == ["mail.example.test"]
    # a report filed under another spelling (a hand insert) is probed for its certificate,
    # as the whole fleet's probe and view file it
    report(store, "web3.example.test", "MAIL.example.test", ["smtp+starttls://127.0.0.1:25"])
    assert [(t.name, t.url) for t in targets(fleet, ["mail.example.test"])] == [
        ("mail.example.test", "smtp+starttls://mail.example.test:25?sni=mail.example.test"),
        ("MAIL.example.test", "smtp+starttls://web3.example.test:25?sni=mail.example.test")]


# --- probing real daemons -----------------------------------------------------------------------


def by_url(results: list[ProbeResult]) -> dict[str, ProbeResult]:
    return {r.url: r for r in results}


def test_probe_every_scheme_against_real_daemons(
        registry: Registry, store: SqlStore, tls_daemon_factory: Callable[..., Any],
        cert_files_factory: Callable[..., CertFiles], postfix_server: PostfixServer,
        dovecot_server: DovecotServer, slapd_server: SlapdServer, silent: SilentListener) -> None:
    main_files, www = cert_files_factory(["localhost"]), cert_files_factory([WWW])
    nginx = tls_daemon_factory(NginxServer, cert=main_files.fullchain, key=main_files.key,
                               vhosts={WWW: (www.fullchain, www.key)})
    www_fp = register(store, WWW, www.cert, www.key)
    mail_fp = register(store, "smtp.example.test", postfix_server.cert, postfix_server.key)
    imap_fp = register(store, "imap.example.test", dovecot_server.cert, dovecot_server.key)
    ldap_fp = register(store, "ldap.example.test", slapd_server.cert, slapd_server.key)
    closed = free_port()
    report(store, "127.0.0.1", WWW, [nginx.verify_urls["https"], f"tls://127.0.0.1:{closed}",
                                     f"tls://127.0.0.1:{silent.port}"])
    report(store, "127.0.0.1", "smtp.example.test", [postfix_server.verify_urls["smtp"]])
    report(store, "127.0.0.1", "imap.example.test", [dovecot_server.verify_urls["imap"],
                                                     dovecot_server.verify_urls["pop3"]])
    report(store, "127.0.0.1", "ldap.example.test", [slapd_server.verify_urls["ldap"],
                                                     slapd_server.verify_urls["ldaps"]])
    FleetStore(store).add_endpoint(WWW, f"{nginx.verify_urls['https']}?sni=localhost", "ops", 1)

    results = probe(registry, targets(FleetStore(store)), timeout=2.0, workers=8)
    seen = by_url(results)
    assert len(results) == 9
    https = f"{nginx.verify_urls['https']}?sni={WWW}"
    # the certificate's name went out as SNI: nginx chose the www server, not its default one
    assert seen[https].fingerprint == www_fp and seen[https].error is None
    assert seen[https].names == [WWW] and seen[https].source == "agent"
    assert seen[https].key_md5 == Certificate.load(www.cert.read_bytes()).md5_modulus
    assert seen[https].not_after == Certificate.load(www.cert.read_bytes()).not_after
    # the operator's URL names its SNI: it is kept, and gets nginx's default server
    operator = seen[f"{nginx.verify_urls['https']}?sni=localhost"]
    assert operator.fingerprint == main_files.fingerprint() and operator.source == "operator"
    assert seen[f"{postfix_server.verify_urls['smtp']}?sni=smtp.example.test"].fingerprint == mail_fp
    for listener in ("imap", "pop3"):
        assert seen[f"{dovecot_server.verify_urls[listener]}?sni=imap.example.test"].fingerprint == imap_fp
    for listener in ("ldap", "ldaps"):
        assert seen[f"{slapd_server.verify_urls[listener]}?sni=ldap.example.test"].fingerprint == ldap_fp
    # unreachable endpoints are results, and the others were probed all the same
    refused = seen[f"tls://127.0.0.1:{closed}?sni={WWW}"]
    assert refused.fingerprint is None and refused.error is not None
    assert f"127.0.0.1:{closed}: connection refused" in refused.error
    hung = seen[f"tls://127.0.0.1:{silent.port}?sni={WWW}"]
    assert hung.fingerprint is None and hung.error is not None
    assert "timed out after 2s" in hung.error and "TLS handshake" in hung.error


def test_a_loopback_url_is_dialed_at_the_reporting_host(
        registry: Registry, store: SqlStore, cert_files_factory: Callable[..., CertFiles],
        tls_listener: Callable[..., TlsListener]) -> None:
    """The agent on 127.0.0.2 reports tls://localhost:PORT (its own view); nothing listens on
    127.0.0.1:PORT, so only a dial at the agent's address finds the certificate."""
    files = cert_files_factory([WWW])
    fp = register(store, WWW, files.cert, files.key)
    port = free_port(("127.0.0.1", "127.0.0.2"))
    tls_listener(files, "127.0.0.2", port)
    report(store, "127.0.0.2", WWW, [f"tls://localhost:{port}"])
    [result] = probe(registry, targets(FleetStore(store)), timeout=5.0, workers=4)
    assert result.url == f"tls://127.0.0.2:{port}?sni={WWW}"
    assert result.fingerprint == fp and result.error is None


@pytest.mark.parametrize("url,fragment", [
    ("gopher://127.0.0.1:70", "no verifier plugin named 'gopher' is installed"),
    ("tls://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("tls://user:pw@mail.example.test:443", "user names and passwords have no place"),
    ("tls://127.0.0.1:443?cmd=x", "unknown parameter 'cmd'"),
])
def test_a_bad_url_in_the_database_is_an_error_result(registry: Registry, store: SqlStore,
                                                      url: str, fragment: str) -> None:
    """Reported URLs come from the agents' database users: checked before anything is dialed."""
    report(store, "web1.example.test", WWW, [url])
    [result] = probe(registry, targets(FleetStore(store)), timeout=1.0, workers=1)
    assert result.fingerprint is None and result.error is not None and fragment in result.error
    assert ":pw@" not in result.error and ":pw@" not in result.url  # the password is masked


class BrokenVerifier(Verifier):
    """``hang://`` ignores its timeout (waits on an event); ``crash://`` raises a bare RuntimeError."""

    release = threading.Event()

    def presented_certificate(self, url: str, timeout: float) -> bytes:
        if url.startswith("hang://"):
            self.release.wait(60)
            raise VerifyError(f"verify {url}: released")
        raise RuntimeError("the plugin fell over")


class BrokenPlugin:
    @hookimpl
    def lecentral_register_verifiers(self) -> list[VerifierType]:
        return [VerifierType("hang", BrokenVerifier), VerifierType("crash", BrokenVerifier)]


def test_a_broken_verifier_plugin_is_a_result_not_a_crash(store: SqlStore, tls_listener: Callable[..., TlsListener],
                                                          cert_files_factory: Callable[..., CertFiles]) -> None:
    """The one stand-in of this module: a verifier plugin that ignores its deadline and one that
    raises a bare exception. No real plugin behaves so (that is the point): it is the guard of
    the run that is tested, and a real TLS endpoint beside them is still probed."""
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(BrokenPlugin(), name="broken")
    registry = Registry(loaded)
    files = cert_files_factory([WWW])
    up = tls_listener(files)
    fleet = FleetStore(store)
    for url in ("hang://127.0.0.1:1", "crash://127.0.0.1:1", f"tls://127.0.0.1:{up.port}"):
        fleet.add_endpoint(WWW, url, "ops", 1)
    try:
        seen = by_url(probe(registry, targets(fleet), timeout=0.5, workers=3))
    finally:
        BrokenVerifier.release.set()
    assert "no answer within the 0.5s timeout (the verifier did not stop on time)" in \
        str(seen["hang://127.0.0.1:1"].error)
    assert seen["crash://127.0.0.1:1"].error == \
        "probe crash://127.0.0.1:1: RuntimeError: the plugin fell over"
    assert seen[f"tls://127.0.0.1:{up.port}"].fingerprint == files.fingerprint()


def test_probe_of_nothing_is_nothing(registry: Registry) -> None:
    assert probe(registry, [], timeout=1.0, workers=4) == []


# --- the CLI --------------------------------------------------------------------------------------


class Env:
    """A config (SQLite store of the ``store`` fixture, mail alerts to the SMTP catcher) and the CLI."""

    def __init__(self, tmp: Path, store: SqlStore, smtp: tuple[Mailbox, int]) -> None:
        self.store = store
        self.mailbox = smtp[0]
        self.config = tmp / "lecentral.toml"
        self.config.write_text(
            f'[database]\nurl = "sqlite:///{tmp}/lecentral.db"\n'
            f'[notify]\nmail_to = ["ops@example.test"]\nsmtp = "127.0.0.1:{smtp[1]}"\n'
            '[fleet]\nprobe_timeout = 2.0\nprobe_workers = 4\n')

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args])

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def probe_rows(self) -> list[dict[str, Any]]:
        with self.store.transaction("test") as conn:
            return [dict(r) for r in conn.execute(select(probes).order_by(probes.c.url)).mappings()]

    def runs(self) -> list[dict[str, Any]]:
        with self.store.transaction("test") as conn:
            return [dict(r) for r in conn.execute(select(runs).where(runs.c.kind == "probe")).mappings()]


@pytest.fixture
def env(tmp_path: Path, store: SqlStore, smtp: tuple[Mailbox, int]) -> Env:
    return Env(tmp_path, store, smtp)


def test_cli_probe_table_json_states_and_one_alert_per_change(
        env: Env, cert_files_factory: Callable[..., CertFiles],
        tls_listener: Callable[..., TlsListener]) -> None:
    files = cert_files_factory([WWW])
    fp = register(env.store, WWW, files.cert, files.key)
    up = tls_listener(files)
    port = free_port()  # nothing there yet
    report(env.store, "127.0.0.1", WWW, [f"tls://127.0.0.1:{up.port}"])
    assert env.run("endpoint", "add", WWW, f"tls://127.0.0.1:{port}").exit_code == 0
    served, down = f"tls://127.0.0.1:{up.port}?sni={WWW}", f"tls://127.0.0.1:{port}?sni={WWW}"

    first = env.run("probe")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["NAME", "URL", "STATE", "DETAIL"]
    assert any(line.split()[:3] == [WWW, served, "current"] for line in lines)
    assert any(line.split()[:3] == [WWW, down, "unreachable"] and "connection refused" in line
               for line in lines)
    assert env.mailbox.subjects() == [(f"[lecentral] WARNING: fleet: {WWW} on {down} is "
                                      "unreachable")]
    saved = {r["url"]: r for r in env.probe_rows()}
    assert saved[served]["fingerprint"] == fp and saved[served]["source"] == "agent"
    assert saved[down]["fingerprint"] is None and saved[down]["source"] == "operator"
    assert saved[down]["prober"] and saved[down]["ts"] > 0
    [run] = env.runs()
    assert run["exit_code"] == 0
    assert json.loads(run["counts"]) == {"endpoints": 2, "served": 1, "unreachable": 1, "pruned": 0}

    # the same again: no new alert
    data = env.json("probe")
    assert {e["url"]: e["state"] for e in data["endpoints"]} == {served: "current", down: "unreachable"}
    assert data["counts"]["unreachable"] == 1 and data["alerts_unsent"] == []
    assert len(env.mailbox.messages) == 1
    assert len(env.runs()) == 2

    # the service comes up: told once that it is current again
    tls_listener(files, port=port)
    again = env.json("probe", WWW)
    assert {e["url"]: e["state"] for e in again["endpoints"]} == {served: "current", down: "current"}
    [entry] = [e for e in again["endpoints"] if e["url"] == down]
    assert entry["fingerprint"] == fp and entry["names"] == [WWW] and entry["error"] is None
    assert env.mailbox.subjects()[1:] == [(f"[lecentral] INFO: fleet: {WWW} on {down} is "
                                          "current again")]
    body = env.mailbox.messages[1].get_payload(decode=True)
    assert isinstance(body, bytes) and b"was unreachable and is now current" in body


def test_cli_probe_an_alert_not_sent_is_tried_again(
        env: Env, cert_files_factory: Callable[..., CertFiles]) -> None:
    files = cert_files_factory([WWW])
    register(env.store, WWW, files.cert, files.key)
    down = free_port()
    assert env.run("endpoint", "add", WWW, f"tls://127.0.0.1:{down}").exit_code == 0
    good = env.config.read_text()
    env.config.write_text(re.sub(r'smtp = "[^"]*"', f'smtp = "127.0.0.1:{free_port()}"', good))
    failed = env.run("probe", "--json")
    assert failed.exit_code == 1, failed.output
    data = json.loads(failed.stdout)
    assert data["endpoints"][0]["state"] == "unreachable" and len(data["alerts_unsent"]) == 1
    assert "alert not sent" in failed.stderr
    assert env.runs()[0]["exit_code"] == 0  # the probing itself went well
    env.config.write_text(good)
    assert env.run("probe").exit_code == 0
    assert env.mailbox.subjects() == [(f"[lecentral] WARNING: fleet: {WWW} on "
                                      f"tls://127.0.0.1:{down}?sni={WWW} is unreachable")]


def test_cli_probe_serves_another_key_is_a_mismatch(
        env: Env, cert_files_factory: Callable[..., CertFiles],
        tls_listener: Callable[..., TlsListener]) -> None:
    files, stranger = cert_files_factory([WWW]), cert_files_factory([WWW])
    register(env.store, WWW, files.cert, files.key)
    up = tls_listener(stranger)
    assert env.run("endpoint", "add", WWW, f"tls://127.0.0.1:{up.port}").exit_code == 0
    [entry] = env.json("probe")["endpoints"]
    assert entry["state"] == "mismatch" and "another key" in entry["detail"]
    assert env.mailbox.subjects() == [(f"[lecentral] ERROR: fleet: {WWW} on {entry['url']} "
                                      "is serving a mismatching certificate")]


def test_cli_probe_prunes_only_on_a_full_run(env: Env, cert_files_factory: Callable[..., CertFiles],
                                             tls_listener: Callable[..., TlsListener]) -> None:
    files = cert_files_factory([WWW])
    register(env.store, WWW, files.cert, files.key)
    register(env.store, "other.example.test", files.cert, files.key)
    up = tls_listener(files)
    report(env.store, "127.0.0.1", WWW, [f"tls://127.0.0.1:{up.port}"])
    report(env.store, "127.0.0.1", "other.example.test", [f"tls://127.0.0.1:{up.port}"])
    assert len(env.json("probe")["endpoints"]) == 2
    report(env.store, "127.0.0.1", WWW, [])  # the agent no longer reports that URL
    named = env.json("probe", "other.example.test")
    assert [e["name"] for e in named["endpoints"]] == ["other.example.test"]
    assert len(env.probe_rows()) == 2  # a partial run forgets nothing
    full = env.json("probe")
    assert full["counts"]["pruned"] == 1
    assert [r["name"] for r in env.probe_rows()] == ["other.example.test"]


def test_cli_probe_refusals(env: Env) -> None:
    unknown = env.run("probe", "nope.example.test")
    assert unknown.exit_code == 1
    assert "no certificate named 'nope.example.test' in the database" in unknown.stderr
    bad = env.run("probe", "--timeout", "0")
    assert bad.exit_code == 2 and "--timeout must be more than 0" in bad.stderr
    assert env.runs() == [] and env.probe_rows() == []  # nothing recorded
    empty = env.run("probe")
    assert empty.exit_code == 0 and "no endpoints to probe" in empty.stdout


def test_cli_endpoint_add_list_remove(env: Env, cert_files_factory: Callable[..., CertFiles]) -> None:
    files = cert_files_factory([WWW])
    register(env.store, WWW, files.cert, files.key)
    url = "imap+starttls://mail.example.test:143"
    added = env.run("endpoint", "add", WWW, url)
    assert added.exit_code == 0 and f"endpoint {url}?sni={WWW} added" in added.stdout
    twice = env.run("endpoint", "add", WWW.upper(), url)
    assert twice.exit_code == 0 and "was there already" in twice.stdout
    [item] = env.json("endpoint", "list")
    assert item["name"] == WWW and item["url"] == f"{url}?sni={WWW}" and item["added_by"]
    assert env.json("endpoint", "list", WWW) == [item]
    table = env.run("endpoint", "list").stdout
    assert table.split()[:4] == ["NAME", "URL", "ADDED", "(UTC)"] and f"{url}?sni={WWW}" in table

    removed = env.run("endpoint", "remove", WWW, url)  # as typed: the stored one has ?sni=
    assert removed.exit_code == 0 and "removed" in removed.stdout
    assert env.json("endpoint", "list") == []
    gone = env.run("endpoint", "remove", WWW, url)
    assert gone.exit_code == 1
    assert f"{WWW} has no endpoint '{url}' (see lecentral endpoint list {WWW})" in gone.stderr

    # one endpoint, one spelling: the scheme's default port is written out, either way works
    added = env.run("endpoint", "add", WWW, "tls://lb.example.test")
    assert f"endpoint tls://lb.example.test:443?sni={WWW} added" in added.stdout
    assert "was there already" in env.run("endpoint", "add", WWW, "tls://lb.example.test:443").stdout
    assert env.run("endpoint", "remove", WWW, "tls://lb.example.test:443").exit_code == 0


@pytest.mark.parametrize("name,url,code,fragment", [
    (WWW, "gopher://mail.example.test:70", 2, "no verifier plugin named 'gopher' is installed"),
    (WWW, "tls://mail.example.test:70000", 2, "the port must be a number from 1 to 65535"),
    (WWW, "mail.example.test:443", 2, "expected SCHEME://HOST[:PORT]"),
    ("nope.example.test", "tls://mail.example.test:443", 1, "no certificate named 'nope.example.test'"),
])
def test_cli_endpoint_add_refusals_write_nothing(env: Env, cert_files_factory: Callable[..., CertFiles],
                                                 name: str, url: str, code: int, fragment: str) -> None:
    files = cert_files_factory([WWW])
    register(env.store, WWW, files.cert, files.key)
    result = env.run("endpoint", "add", name, url)
    assert result.exit_code == code and fragment in result.stderr, result.output
    assert env.json("endpoint", "list") == []


def test_cli_endpoint_of_an_unknown_name(env: Env) -> None:
    for args in (["remove", "nope.example.test", "tls://x.example.test"], ["list", "nope.example.test"]):
        result = env.run("endpoint", *args)
        assert result.exit_code == 1 and "no certificate named 'nope.example.test'" in result.stderr
