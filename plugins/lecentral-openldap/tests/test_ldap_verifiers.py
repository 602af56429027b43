"""The ``ldap+starttls://`` and ``ldaps://`` verifiers this plugin brings (ldap3), against real slapd.

Moved here from the core's tests/test_verifiers.py when LDAP left the core: each scheme reports
the presented leaf, a restart and a TLS reload are seen, and every failure is a VerifyError naming
host:port and what went wrong. Without the plugin the schemes are an error saying what to install.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from lecentral_openldap.probe import SCHEMES
from lecentral_testing.daemons import PostfixServer, SlapdServer, TlsServer

from lecentral.errors import ConfigError, VerifyError
from lecentral.registry import Registry
from lecentral.verify import check_verify_url, parse_verify_url, presented_fingerprint


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def assert_verify_error(registry: Registry, url: str, *fragments: str, timeout: float = 10.0) -> str:
    with pytest.raises(VerifyError) as caught:
        presented_fingerprint(registry, url, timeout)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_plugin_registers_both_schemes(registry: Registry) -> None:
    assert {"ldap+starttls", "ldaps"} <= set(registry.verifiers.names())
    assert registry.verifiers.owner["ldaps"] == "openldap"


@pytest.mark.parametrize("listener,scheme", [("ldap", "ldap+starttls"), ("ldaps", "ldaps")])
def test_slapd_starttls_and_ldaps(registry: Registry, slapd_server: TlsServer,
                                  listener: str, scheme: str) -> None:
    url = slapd_server.verify_urls[listener]
    assert url.startswith(f"{scheme}://")
    assert presented_fingerprint(registry, url) == slapd_server.cert_fingerprint()


def test_new_certificate_presented_after_reload(registry: Registry, slapd_server: SlapdServer,
                                                cert_files_factory: Callable[..., Any]) -> None:
    old = slapd_server.cert_fingerprint()
    new = slapd_server.put_certificate(cert_files_factory(["renewed.example.test"]))
    assert new != old
    for url in slapd_server.verify_urls.values():  # the files changed; slapd serves what it loaded
        assert presented_fingerprint(registry, url) == old
    slapd_server.reload(expect=new)
    for url in slapd_server.verify_urls.values():
        assert presented_fingerprint(registry, url) == new


def test_slapd_restart_presents_new_certificate(registry: Registry, slapd_server: SlapdServer,
                                                cert_files_factory: Callable[..., Any]) -> None:
    new = slapd_server.put_certificate(cert_files_factory(["ldap2.example.test"], key_kind="rsa2048"))
    slapd_server.restart()
    for url in slapd_server.verify_urls.values():
        assert presented_fingerprint(registry, url) == new


def test_ldap_starttls_not_offered_without_tls(registry: Registry, tls_daemon_factory: Callable[..., Any]) -> None:
    slapd = tls_daemon_factory(SlapdServer, tls=False)
    assert_verify_error(registry, slapd.verify_urls["ldap"], f"127.0.0.1:{slapd.ports['ldap']}",
                        "StartTLS not offered", "unsupported extended operation")


def test_ldap_starttls_on_an_smtp_port(registry: Registry, postfix_server: PostfixServer) -> None:
    port = postfix_server.ports["smtp"]
    assert_verify_error(registry, f"ldap+starttls://127.0.0.1:{port}", f"127.0.0.1:{port}",
                        "is this port speaking LDAP?", timeout=3.0)


def test_connection_refused_names_host_and_port(registry: Registry) -> None:
    from lecentral_testing.ports import free_port

    port = free_port()
    assert_verify_error(registry, f"ldaps://127.0.0.1:{port}", f"127.0.0.1:{port}")


@pytest.mark.parametrize("url,port", [("ldap+starttls://h.example.test", 389), ("ldaps://h.example.test/", 636),
                                      ("LDAPS://h.example.test:6636", 6636)])
def test_default_ports(url: str, port: int) -> None:
    target = parse_verify_url(url, SCHEMES)
    assert (target.port, target.sni) == (port, "h.example.test")


@pytest.mark.parametrize("url,fragment", [
    ("ldaps://127.0.0.1:0", "port"),
    ("ldap+starttls://127.0.0.1?ehlo=x", "only for smtp+starttls"),
    ("ldaps://u:pw@127.0.0.1", "passwords"),
])
def test_malformed_ldap_urls_are_refused_at_load_and_at_install(registry: Registry, url: str,
                                                                fragment: str) -> None:
    with pytest.raises(ConfigError, match="verify URL") as caught:
        check_verify_url(registry, url)
    assert fragment in str(caught.value)
    assert_verify_error(registry, url, fragment)


@pytest.mark.parametrize("scheme", ["ldap+starttls", "ldaps"])
def test_without_the_plugin_the_scheme_names_the_package(scheme: str) -> None:
    core_only = Registry.load(entrypoints=False)
    url = f"{scheme}://127.0.0.1"
    with pytest.raises(ConfigError, match=re.escape(f"no verifier plugin named '{scheme}'") + ".*pip install lecentral-openldap"):
        check_verify_url(core_only, url)
    assert_verify_error(core_only, url, "pip install lecentral-openldap")
