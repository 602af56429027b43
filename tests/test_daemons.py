"""The test daemons themselves: they stop cleanly, reload the way an admin would, and their config
tests catch what they catch (so plugin authors know what they can rely on)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.daemons import (
    ApacheServer,
    DovecotServer,
    NginxServer,
    PostfixServer,
    SlapdServer,
    TlsServer,
)
from lecentral_testing.daemons.base import group_members
from lecentral_testing.ports import port_is_free
from lecentral_testing.process import ServerStartError, run_tool

LAUNCHERS = [NginxServer, ApacheServer, PostfixServer, DovecotServer, SlapdServer]


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda cls: cls.kind)
def test_close_stops_every_process_and_frees_the_ports(launcher: type[TlsServer],
                                                       tls_daemon_factory: Callable[..., Any]) -> None:
    server = tls_daemon_factory(launcher)
    pid = server.pid
    assert pid is not None and server.running
    assert group_members(pid), "the daemon runs in a process group of its own"
    ports = list(server.ports.values())
    assert not any(port_is_free(port) for port in ports)
    server.close()
    assert not server.running
    assert group_members(pid) == []
    assert all(port_is_free(port) for port in ports)


def test_missing_certificate_file_is_refused_before_start(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match=r"certificate file .*nope\.crt does not exist"):
        NginxServer(tmp_path, cert=tmp_path / "nope.crt", key=tmp_path / "nope.key")


def test_reload_command_works_from_a_shell(nginx_server: NginxServer,
                                           cert_files_factory: Callable[..., Any]) -> None:
    """The agent runs ``reload = "..."`` through a shell: the string form must work as is."""
    new = nginx_server.put_certificate(cert_files_factory(["shell.example.test"]))
    subprocess.run(nginx_server.reload_command, shell=True, check=True, timeout=30)
    nginx_server.wait_presented(new)


def test_put_certificate_keeps_the_key_private(apache_server: ApacheServer,
                                               cert_files_factory: Callable[..., Any]) -> None:
    apache_server.put_certificate(cert_files_factory())
    assert stat.S_IMODE(apache_server.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(apache_server.cert.stat().st_mode) == 0o644
    assert not list(apache_server.key.parent.glob(".*.tmp")), "no temp file left behind"
    apache_server.reload(expect=apache_server.cert_fingerprint())


def test_nginx_config_test_catches_a_broken_certificate_and_reload_keeps_the_old_one(
        tls_daemon_factory: Callable[..., Any]) -> None:
    nginx = tls_daemon_factory(NginxServer)
    served = nginx.presented_fingerprint("https")
    nginx.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ServerStartError, match="test failed"):
        nginx.config_test()
    # nginx -s reload reads the config first: it fails, and the master keeps serving the old one.
    with pytest.raises(ServerStartError, match="cannot load certificate"):
        nginx.reload()
    assert nginx.presented_fingerprint("https") == served
    assert nginx.running


def test_stray_apache_started_by_a_graceful_reload_is_stopped_too(
        tls_daemon_factory: Callable[..., Any]) -> None:
    """A garbage certificate passes ``apache2 -t`` and the graceful restart kills Apache; a second
    ``apache2 -k graceful`` (an agent's rollback) then starts a detached Apache behind our back.
    close() must stop that one as well, or it would hold its port after the session."""
    apache = tls_daemon_factory(ApacheServer)
    good = apache.cert.read_bytes()
    apache.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    apache.config_test()  # passes: Apache only checks that the file exists
    run_tool(apache.reload_argv, what="graceful with a broken certificate")
    deadline = time.monotonic() + 10
    while apache.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not apache.running, "Apache exits when the graceful restart cannot load the certificate"
    apache.cert.write_bytes(good)
    assert "httpd not running, trying to start" in run_tool(apache.reload_argv, what="rollback graceful")
    apache.wait_presented(apache.cert_fingerprint())
    stray_group = os.getpgid(int(apache.pid_path.read_text()))
    port = apache.ports["https"]
    apache.close()
    assert group_members(stray_group) == []
    assert port_is_free(port)


def test_apache_config_test_catches_a_missing_certificate(tls_daemon_factory: Callable[..., Any]) -> None:
    apache = tls_daemon_factory(ApacheServer)
    apache.config_test()
    apache.cert.unlink()
    with pytest.raises(ServerStartError, match="SSLCertificateFile: file .* does not exist"):
        apache.config_test()


@pytest.mark.parametrize("fixture", ["postfix_server", "dovecot_server", "slapd_server"])
def test_config_tests_pass_on_the_running_config(request: pytest.FixtureRequest, fixture: str) -> None:
    server: TlsServer = request.getfixturevalue(fixture)
    server.config_test()


def test_slapd_answers_ldap3_with_starttls_and_cn_config_over_ldapi(slapd_server: SlapdServer) -> None:
    """What the openldap plugin needs: anonymous root DSE over StartTLS, cn=config as root via ldapi."""
    import ssl

    import ldap3

    tls = ldap3.Tls(validate=ssl.CERT_NONE)
    server = ldap3.Server("127.0.0.1", port=slapd_server.ports["ldap"], tls=tls, get_info=ldap3.NONE)
    with ldap3.Connection(server, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND) as conn:
        assert conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["namingContexts"])
        assert conn.entries[0].namingContexts.values == [slapd_server.suffix]
    out = run_tool(["ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", slapd_server.ldapi_url,
                    "-b", "cn=config", "-s", "base", "olcTLSCertificateFile"], what="ldapsearch")
    assert f"olcTLSCertificateFile: {slapd_server.cert}" in out.replace("\n ", "")  # unfold LDIF


def test_dovecot_and_postfix_never_touch_the_system_instances(dovecot_server: DovecotServer,
                                                              postfix_server: PostfixServer) -> None:
    assert not str(dovecot_server.base_dir).startswith("/run/dovecot")
    assert postfix_server.config_dir != Path("/etc/postfix")
    assert postfix_server.main_cf()["queue_directory"] != "/var/spool/postfix"
    assert os.path.exists(postfix_server.queue_dir / "pid" / "master.pid")
