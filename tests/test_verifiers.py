"""The verifiers against real daemons: each scheme reports the presented leaf, reloads are seen,
and every way a check can fail is a VerifyError that names host:port and what went wrong.

Failures come from real daemons too (misconfigured ones: ``misconfigured_postfix``); the one
stand-in is the scripted server injecting data after STARTTLS, whose docstring says why."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lecentral_testing.daemons import (
    DovecotServer,
    NginxServer,
    PostfixServer,
    TlsServer,
)
from lecentral_testing.ports import free_port

from lecentral.errors import ConfigError, VerifyError
from lecentral.registry import Registry
from lecentral.verify import check_verify_url, parse_verify_url, presented_fingerprint
from lecentral.verify.url import SCHEMES


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(entrypoints=False)


def fingerprint_of(registry: Registry, url: str, timeout: float = 10.0) -> str:
    return presented_fingerprint(registry, url, timeout)


# ------------------------------------------------------------------ every scheme, real daemon


def test_every_builtin_scheme_is_registered(registry: Registry) -> None:
    assert registry.verifiers.names() == sorted(SCHEMES)


def test_tls_reports_nginx_leaf(registry: Registry, nginx_server: NginxServer) -> None:
    url = nginx_server.verify_urls["https"]
    assert url.startswith("tls://127.0.0.1:")
    assert fingerprint_of(registry, url) == nginx_server.cert_fingerprint()


def test_https_alias_reports_apache_leaf(registry: Registry, apache_server: TlsServer) -> None:
    url = apache_server.verify_urls["https"]
    assert url.startswith("https://127.0.0.1:")
    assert fingerprint_of(registry, url) == apache_server.cert_fingerprint()


@pytest.mark.parametrize("listener,scheme", [("smtp", "smtp+starttls"), ("smtps", "smtps")])
def test_postfix_smtp_starttls_and_smtps(registry: Registry, postfix_server: TlsServer,
                                         listener: str, scheme: str) -> None:
    url = postfix_server.verify_urls[listener]
    assert url.startswith(f"{scheme}://")
    assert fingerprint_of(registry, url) == postfix_server.cert_fingerprint()


def test_smtp_ehlo_name_is_configurable(registry: Registry, tls_daemon_factory: Callable[..., Any]) -> None:
    postfix = tls_daemon_factory(PostfixServer, main_cf={
        "smtpd_delay_reject": "no",  # apply the HELO restriction at EHLO, not at RCPT TO
        "smtpd_helo_restrictions": "check_helo_access inline:{agent.example.test=OK}, reject",
    })
    url = postfix.verify_urls["smtp"]
    assert fingerprint_of(registry, f"{url}?ehlo=agent.example.test") == postfix.cert_fingerprint()
    assert_verify_error(registry, f"{url}?ehlo=other.example.test", f"127.0.0.1:{postfix.ports['smtp']}",
                        "EHLO other.example.test was refused: 5", "?ehlo=")


@pytest.mark.parametrize("listener,scheme", [
    ("imap", "imap+starttls"), ("imaps", "imaps"), ("pop3", "pop3+starttls"), ("pop3s", "pop3s"),
])
def test_dovecot_imap_and_pop3(registry: Registry, dovecot_server: TlsServer,
                               listener: str, scheme: str) -> None:
    url = dovecot_server.verify_urls[listener]
    assert url.startswith(f"{scheme}://")
    assert fingerprint_of(registry, url) == dovecot_server.cert_fingerprint()


# ------------------------------------------------------------------ new certificate, reload

#: slapd (ldap+starttls://, ldaps://): in lecentral-openldap's tests/test_ldap_verifiers.py
DAEMONS = ["nginx_server", "apache_server", "postfix_server", "dovecot_server"]


@pytest.mark.parametrize("daemon", DAEMONS)
def test_new_certificate_presented_after_reload(registry: Registry, request: pytest.FixtureRequest,
                                                cert_files_factory: Callable[..., Any],
                                                daemon: str) -> None:
    server: TlsServer = request.getfixturevalue(daemon)
    old = server.cert_fingerprint()
    new = server.put_certificate(cert_files_factory(["renewed.example.test"]))
    assert new != old
    if daemon != "postfix_server":  # smtpd processes started on demand read the files themselves
        # The files changed but the daemon still serves what it loaded: the reload is what counts.
        for url in server.verify_urls.values():
            assert fingerprint_of(registry, url) == old
    server.reload(expect=new)  # waits until every listener presents ``new``
    for url in server.verify_urls.values():
        assert fingerprint_of(registry, url) == new


def test_sni_selects_the_virtual_host(registry: Registry, tls_daemon_factory: Callable[..., Any],
                                      cert_files_factory: Callable[..., Any]) -> None:
    main, other = cert_files_factory(["localhost"]), cert_files_factory(["other.example.test"])
    nginx = tls_daemon_factory(NginxServer, cert=main.fullchain, key=main.key,
                               vhosts={"other.example.test": (other.fullchain, other.key)})
    url = nginx.verify_urls["https"]
    assert fingerprint_of(registry, url) == main.fingerprint()  # IP literal: no SNI sent
    assert fingerprint_of(registry, f"{url}?sni=other.example.test") == other.fingerprint()
    by_name = url.replace("127.0.0.1", "localhost")  # a host name is its own SNI
    assert fingerprint_of(registry, by_name) == main.fingerprint()


# ------------------------------------------------------------------ failures


def assert_verify_error(registry: Registry, url: str, *fragments: str, timeout: float = 10.0) -> str:
    with pytest.raises(VerifyError) as caught:
        presented_fingerprint(registry, url, timeout)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_connection_refused_names_host_and_port(registry: Registry) -> None:
    port = free_port()  # nothing listens there
    assert_verify_error(registry, f"tls://127.0.0.1:{port}", f"127.0.0.1:{port}", "connection refused")


def test_smtp_without_starttls(registry: Registry, postfix_server: Any) -> None:
    port = postfix_server.ports["plain"]
    assert_verify_error(registry, postfix_server.plain_url, f"127.0.0.1:{port}",
                        "STARTTLS not offered", "EHLO lists")


@pytest.fixture(scope="module")
def dovecot_without_tls(tmp_path_factory: pytest.TempPathFactory,
                        cert_files_factory: Callable[..., Any]) -> Iterator[DovecotServer]:
    files = cert_files_factory()
    with DovecotServer(tmp_path_factory.mktemp("dovecot-plain"), cert=files.fullchain,
                       key=files.key, tls=False) as server:
        yield server


@pytest.mark.parametrize("listener,what", [("imap", "STARTTLS not offered"), ("pop3", "STLS not offered")])
def test_imap_pop3_without_starttls(registry: Registry, dovecot_without_tls: DovecotServer,
                                    listener: str, what: str) -> None:
    url = dovecot_without_tls.verify_urls[listener]
    assert_verify_error(registry, url, f"127.0.0.1:{dovecot_without_tls.ports[listener]}", what)


def test_tls_on_a_plaintext_smtp_port(registry: Registry, postfix_server: TlsServer) -> None:
    port = postfix_server.ports["smtp"]
    assert_verify_error(registry, f"tls://127.0.0.1:{port}", f"127.0.0.1:{port}", "TLS handshake failed",
                        "STARTTLS")


@pytest.mark.parametrize("scheme,listener,expected", [
    ("smtp+starttls", "imap", "expected an SMTP reply"),
    ("pop3+starttls", "imap", "expected a POP3 greeting"),
    ("imap+starttls", "pop3", "expected an IMAP greeting"),
])
def test_wrong_protocol_on_the_port(registry: Registry, dovecot_server: TlsServer,
                                    scheme: str, listener: str, expected: str) -> None:
    port = dovecot_server.ports[listener]
    assert_verify_error(registry, f"{scheme}://127.0.0.1:{port}", f"127.0.0.1:{port}", expected)


def test_starttls_on_an_implicit_tls_port_times_out_with_a_hint(registry: Registry,
                                                                 postfix_server: TlsServer) -> None:
    port = postfix_server.ports["smtps"]
    assert_verify_error(registry, f"smtp+starttls://127.0.0.1:{port}", f"127.0.0.1:{port}",
                        "timed out", "SMTP greeting", "smtps://", timeout=1.0)


# ------------------------------------------------- misconfigured servers: a real Postfix


@pytest.fixture(scope="module")
def misconfigured_postfix(tmp_path_factory: pytest.TempPathFactory,
                          cert_files_factory: Callable[..., Any]) -> Iterator[PostfixServer]:
    """One throwaway Postfix for this module whose extra smtpd listeners are misconfigured the
    ways a real mail server gets misconfigured (the session ``postfix_server`` stays as it is):

    * ``wrong-key``: STARTTLS required, but the key does not match the certificate (the old key
      left beside a new certificate): smtpd disables TLS and answers STARTTLS with 454;
    * ``reject``: ``smtpd_client_restrictions = reject`` applied at connect time: a 554 greeting;
    * ``no-key``: STARTTLS offered, the key file is gone: smtpd loads no certificate and completes
      the handshake with an anonymous cipher;
    * ``silent``: ``sleep 60`` before the greeting (Postfix's pre-greeting pause): it accepts the
      connection and says nothing.
    """
    files, other = cert_files_factory(["mail.example.test"]), cert_files_factory(["old.example.test"])
    missing = tmp_path_factory.mktemp("postfix-no-key") / "deleted.key"
    at_connect = {"smtpd_delay_reject": "no"}  # client restrictions at the greeting, not at RCPT TO
    listeners = {
        "wrong-key": {"smtpd_tls_security_level": "encrypt",
                      "smtpd_tls_chain_files": f"{other.key}, {files.cert}"},
        "reject": {**at_connect, "smtpd_client_restrictions": "reject"},
        "no-key": {"smtpd_tls_chain_files": f"{missing}, {files.cert}"},
        "silent": {**at_connect, "smtpd_client_restrictions": "sleep 60"},
    }
    with PostfixServer(tmp_path_factory.mktemp("postfix-misconfigured"), cert=files.cert, key=files.key,
                       chain=files.chain, smtpd_listeners=listeners) as server:
        yield server


def listener(server: PostfixServer, name: str, scheme: str = "smtp+starttls") -> tuple[str, str]:
    """(verify URL with ``scheme``, ``127.0.0.1:PORT``) of one of ``server``'s listeners."""
    where = f"{server.address}:{server.ports[name]}"
    return f"{scheme}://{where}", where


def test_smtp_starttls_refused(registry: Registry, misconfigured_postfix: PostfixServer) -> None:
    url, where = listener(misconfigured_postfix, "wrong-key")
    assert_verify_error(registry, url, where,
                        "STARTTLS refused: 454 4.7.0 TLS not available due to local problem",
                        "TLS certificate settings")
    # refused for the reason we meant; postfix's log line may land a moment after the answer
    deadline = time.monotonic() + 10
    while "does not match" not in misconfigured_postfix.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "does not match" in misconfigured_postfix.log_tail(200)


def test_smtp_session_refused_with_554(registry: Registry, misconfigured_postfix: PostfixServer) -> None:
    url, where = listener(misconfigured_postfix, "reject")
    assert_verify_error(registry, url, where, "the SMTP server refused the session: 554 5.7.1",
                        "Client host rejected: Access denied", "client restrictions")


def test_tls_handshake_without_a_certificate(registry: Registry, misconfigured_postfix: PostfixServer) -> None:
    """A server that lost its key still speaks TLS: the verifier must say there is no certificate."""
    url, where = listener(misconfigured_postfix, "no-key")
    assert_verify_error(registry, url, where, "completed the TLS handshake without a certificate")


def test_silent_tls_server_times_out(registry: Registry, misconfigured_postfix: PostfixServer) -> None:
    url, where = listener(misconfigured_postfix, "silent", scheme="tls")
    assert_verify_error(registry, url, where, "timed out after 0.5s", "TLS handshake", timeout=0.5)


def test_silent_smtp_server_times_out_with_a_hint(registry: Registry,
                                                  misconfigured_postfix: PostfixServer) -> None:
    url, where = listener(misconfigured_postfix, "silent")
    assert_verify_error(registry, url, where, "timed out after 0.5s while reading the SMTP greeting",
                        "try tls://", timeout=0.5)


# ------------------------------------------------ an injecting server (no real daemon does this)


@pytest.fixture
def scripted_server() -> Iterator[Callable[[list[bytes]], int]]:
    """A TCP server on 127.0.0.1 that sends canned lines, one per line it receives.

    A stand-in, said so here, for the one case no real server here can be made to do: answer
    STARTTLS with 220 and then send more plaintext in the same packet, as a man in the middle
    injecting commands does (the STARTTLS injection bugs, CVE-2011-0411 and kin). Postfix, Dovecot
    and slapd never do; every other failure in this module is a real daemon's answer.
    """
    sockets: list[socket.socket] = []

    def serve(replies: list[bytes]) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sockets.append(listener)

        def run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(replies[0])
                    for reply in replies[1:]:
                        if not conn.recv(1024):
                            return
                        conn.sendall(reply)
                    while conn.recv(1024):  # then say nothing more until the client hangs up
                        pass
                except OSError:
                    pass

        threading.Thread(target=run, daemon=True).start()
        return int(listener.getsockname()[1])

    yield serve
    for sock in sockets:
        sock.close()


def test_data_injected_after_starttls_is_refused(registry: Registry,
                                                 scripted_server: Callable[[list[bytes]], int]) -> None:
    port = scripted_server([b"220 mx ESMTP\r\n", b"250-mx\r\n250 STARTTLS\r\n",
                            b"220 go ahead\r\n250 injected\r\n"])
    assert_verify_error(registry, f"smtp+starttls://127.0.0.1:{port}", f"127.0.0.1:{port}",
                        "sent data after agreeing to STARTTLS: '250 injected'")


def test_tls_failing_after_starttls_points_at_the_tls_side(
        registry: Registry, scripted_server: Callable[[list[bytes]], int]) -> None:
    """A service that agrees to STARTTLS and then does not speak TLS (a broken TLS set-up): the
    hint is about its TLS files, not "use +starttls://", which the URL already is. Scripted: the
    real daemons here either refuse STARTTLS (Postfix 454) or fail in a timing-dependent way."""
    port = scripted_server([b"220 mx ESMTP\r\n", b"250-mx\r\n250 STARTTLS\r\n",
                            b"220 go ahead\r\n", b"this is not TLS\r\n"])
    message = assert_verify_error(registry, f"smtp+starttls://127.0.0.1:{port}",
                                  f"127.0.0.1:{port}", "TLS handshake failed",
                                  "agreed to STARTTLS but its TLS failed")
    assert "takes smtp+starttls://" not in message


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize("url,port", [
    ("tls://h.example.test", 443), ("https://h.example.test", 443), ("smtps://h.example.test", 465),
    ("smtp+starttls://h.example.test", 25), ("imap+starttls://h.example.test", 143),
    ("imaps://h.example.test", 993), ("pop3+starttls://h.example.test", 110),
    ("pop3s://h.example.test", 995), ("imaps://h.example.test/", 993),
    ("SMTP+STARTTLS://h.example.test:587", 587),
])
def test_default_ports(url: str, port: int) -> None:
    target = parse_verify_url(url)
    assert target.port == port
    assert target.sni == "h.example.test"


def test_ipv6_and_sni_parameters() -> None:
    target = parse_verify_url("tls://[::1]:8443?sni=www.example.test")
    assert (target.host, target.port, target.sni, target.where) == ("::1", 8443, "www.example.test", "[::1]:8443")
    assert parse_verify_url("tls://127.0.0.1:443").sni is None


@pytest.mark.parametrize("url,fragment", [
    ("127.0.0.1:443", "expected SCHEME://HOST"),
    ("tls://127.0.0.1:0", "port"),
    ("tls://127.0.0.1:70000", "port"),
    ("tls://127.0.0.1:https", "port"),
    ("tls://user:pw@127.0.0.1:443", "passwords"),
    ("tls://127.0.0.1:443?snl=x", "unknown parameter 'snl'"),
    ("tls://127.0.0.1:443?ehlo=x", "only for smtp+starttls"),
    ("tls://127.0.0.1:443?sni=bad_name!", "not a host name"),
    ("tls://bad host:443", "not a host name"),
])
def test_malformed_urls(registry: Registry, url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="verify URL") as caught:
        check_verify_url(registry, url)
    assert fragment in str(caught.value)
    # At install time the same mistake is a VerifyError, so the agent rolls back.
    assert_verify_error(registry, url, fragment)


def test_unknown_scheme(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="no verifier plugin named 'gopher'"):
        check_verify_url(registry, "gopher://127.0.0.1:70")
    assert_verify_error(registry, "gopher://127.0.0.1:70", "gopher", "no verifier plugin")



@pytest.mark.parametrize("scheme", ["ldap+starttls", "ldaps"])
def test_ldap_is_not_in_the_core_and_says_which_plugin_brings_it(registry: Registry, scheme: str) -> None:
    """LDAP verification is lecentral-openldap's (ldap3); the core only knows where to send the user."""
    assert scheme not in SCHEMES
    with pytest.raises(ConfigError, match=re.escape(f"no verifier plugin named '{scheme}'") + ".*pip install lecentral-openldap"):
        check_verify_url(registry, f"{scheme}://127.0.0.1")
    assert_verify_error(registry, f"{scheme}://127.0.0.1", "pip install lecentral-openldap")


@pytest.mark.parametrize("url", [
    "tls://admin:s3cret-pw@127.0.0.1:443",
    "gopher://admin:s3cret-pw@127.0.0.1:70",
    "tls://admin:s3cret-pw@127.0.0.1:99999",
])
def test_a_password_in_a_verify_url_is_never_shown(registry: Registry, url: str) -> None:
    """A verify URL with ``user:password@`` is refused, at configuration load and when an install
    verifies, and the error (which goes to logs, mail and the agent's report) masks the password."""
    with pytest.raises(ConfigError) as loaded:
        check_verify_url(registry, url)
    with pytest.raises(VerifyError) as verified:
        presented_fingerprint(registry, url, 1.0)
    for error in (str(loaded.value), str(verified.value)):
        assert "s3cret-pw" not in error and "admin:***@127.0.0.1" in error
