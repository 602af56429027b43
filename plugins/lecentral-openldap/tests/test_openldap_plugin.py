"""The ``openldap`` service plugin against Debian's real slapd on 127.0.0.1.

Each test starts its own slapd (:class:`~lecentral_testing.daemons.slapd.SlapdServer`: its own
cn=config made with slapadd, LDAP and LDAPS on dynamic ports, an ldapi socket) reading the files
the agent writes, and drives the real ``lecentral-install run`` through the service contract
(:mod:`lecentral_testing.service_contract`) plus the cases specific to slapd. ``reload`` is a
real restart, what ``systemctl restart slapd`` does (there is no systemd here): stop slapd by its
pid file, start it again in its forking mode, which exits non-zero if slapd does not come up
(:mod:`lecentral_testing.daemons.forking`). ``check`` is ``slaptest -u -F`` and ``slapd_d`` the
test instance's cn=config directory; the rest are the plugin's defaults or the contract's paths.

Certificates are signed by :class:`~lecentral_testing.agent.TestCA` for a key made on "the
server"; slapd runs as root here (pytest's temp dirs are 0700) but the key is root:openldap 0640,
as the plugin requires.
"""

from __future__ import annotations

import grp
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lecentral_openldap.cnconfig import read_tls_attributes
from lecentral_openldap.plugin import OpenLdapOptions
from lecentral_testing.agent import dump_toml
from lecentral_testing.daemons.forking import live_pid, restart_argv, stop_by_pid_file
from lecentral_testing.daemons.slapd import SlapdServer
from lecentral_testing.process import find_executable
from lecentral_testing.service_contract import (
    Contract,
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)

from lecentral.install.config import load_install
from lecentral.registry import Registry

NAME = ServiceContract.contract_name
ADMIN_PASSWORD = "s3cret-Admin-pw"  # a bind password that must never show up in any output


def share_key_with_openldap(key: Path) -> None:
    """root:openldap 0640, Debian's way of letting slapd read its key."""
    os.chown(key, 0, grp.getgrnam("openldap").gr_gid)
    key.chmod(0o640)


class SlapdHarness(ServiceHarness):
    """slapd reading the contract's cert, key and chain; ``reload`` restarts it by pid file."""

    service = "openldap"
    server: SlapdServer

    def start(self, files: ContractFiles) -> None:
        share_key_with_openldap(files.key)
        self.server = SlapdServer(self.workdir, cert=files.cert, key=files.key, chain=files.chain).start()

    def stop(self) -> None:
        try:
            stop_by_pid_file(self.server.pid_path, str(self.server.config_dir))
        finally:
            self.server.close()

    @property
    def restart_command(self) -> str:
        server = self.server
        urls = [f"{scheme}://{server.address}:{server.ports[name]}/"
                for name, scheme in (("ldap", "ldap"), ("ldaps", "ldaps"))]
        argv = [find_executable("slapd", package="slapd"), "-F", str(server.config_dir),
                "-h", " ".join([*urls, server.ldapi_url])]
        return shlex.join(restart_argv(server.pid_path, str(server.config_dir), argv,
                                       self.workdir / "restart.log"))

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        return {"check": self.server.check_command, "reload": self.restart_command,
                "fullchain": "", "verify": [f"{url}?sni={NAME}" for url in self.server.verify_urls.values()],
                "options": {"slapd_d": str(self.server.config_dir)}}

    def break_config(self) -> None:
        with (self.server.config_dir / "cn=config.ldif").open("a") as ldif:
            ldif.write("olcThreads: notanumber\n")  # slaptest: unable to parse as int

    def slapd_pid(self) -> int | None:
        return live_pid(self.server.pid_path, str(self.server.config_dir))

    def ldapmodify(self, ldif: str) -> None:
        """Change cn=config over ldapi as root (SASL EXTERNAL), as a Debian admin does."""
        subprocess.run([find_executable("ldapmodify", package="ldap-utils"), "-Q", "-Y", "EXTERNAL",
                        "-H", self.server.ldapi_url], input=ldif, text=True, check=True,
                       capture_output=True)


class TestOpenldap(ServiceContract):
    """The service contract (first install, renewal after a restart, broken config and failed
    verification rolled back), plus slapd's own ways of going wrong."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return SlapdHarness(tmp_path / "slapd")

    @staticmethod
    def slapd(contract: Contract) -> SlapdHarness:
        harness = contract.harness
        assert isinstance(harness, SlapdHarness)
        return harness

    def test_renewal_restarts_slapd(self, contract: Contract) -> None:
        """The renewal is served by a new slapd process (a restart, not a reload); the run says
        it checked the bind and the root DSE."""
        self.first_install(contract)
        pid = self.slapd(contract).slapd_pid()
        renewed = contract.world.issue(contract.name, days=60)

        out = contract.world.run("-v", "run", "--json")

        assert out.by_name(contract.name)["status"] == "installed", out.stderr
        assert self.slapd(contract).slapd_pid() not in (None, pid)
        assert "anonymous bind, root DSE" in out.stderr
        contract.wait_presented(renewed.fingerprint)

    def test_reload_through_cn_config_instead_of_a_restart(self, contract: Contract) -> None:
        """``reload`` may re-set the olcTLS* attributes with ldapmodify over ldapi instead of
        restarting: slapd reloads its TLS context in place (same process) and the checks pass."""
        harness = self.slapd(contract)
        self.first_install(contract)
        pid = harness.slapd_pid()
        renewed = contract.world.issue(contract.name, days=60)
        contract.write_config(reload=harness.server.reload_command)

        assert contract.run()["status"] == "installed"
        assert harness.slapd_pid() == pid
        contract.wait_presented(renewed.fingerprint)

    def test_configured_bind_dn_and_password(self, contract: Contract) -> None:
        """With bind_dn and bind_password, the check binds as that DN (after StartTLS) and reads
        the root DSE; the password appears nowhere in the output."""
        harness = self.slapd(contract)
        harness.ldapmodify(f"dn: olcDatabase={{1}}mdb,cn=config\nchangetype: modify\n"
                           f"replace: olcRootPW\nolcRootPW: {ADMIN_PASSWORD}\n")
        leaf = contract.world.issue(contract.name, days=30)
        options = {"slapd_d": str(harness.server.config_dir), "bind_dn": f"cn=admin,{harness.server.suffix}",
                   "bind_password": ADMIN_PASSWORD}
        contract.write_config(options=options)

        out = contract.world.run("-vv", "run", "--json")

        assert out.by_name(contract.name)["status"] == "installed", out.stderr
        assert f"bind as cn=admin,{harness.server.suffix}, root DSE" in out.stderr
        assert ADMIN_PASSWORD not in out.stdout + out.stderr
        contract.wait_presented(leaf.fingerprint)

    def test_wrong_bind_password_rolls_back_before_the_restart(self, contract: Contract) -> None:
        """A wrong password is a configuration error: caught against the running slapd before
        the restart, so the previous files come back, slapd is not restarted, and the alert
        names the DN and the option to fix, never the password."""
        first = self.first_install(contract)
        harness = self.slapd(contract)
        harness.ldapmodify(f"dn: olcDatabase={{1}}mdb,cn=config\nchangetype: modify\n"
                           f"replace: olcRootPW\nolcRootPW: {ADMIN_PASSWORD}\n")
        contract.world.issue(contract.name, days=60)
        before, pid = contract.snapshot(), harness.slapd_pid()
        wrong = "wrong-" + ADMIN_PASSWORD
        contract.write_config(options={"slapd_d": str(harness.server.config_dir),
                                       "bind_dn": f"cn=admin,{harness.server.suffix}",
                                       "bind_password": wrong})

        out = contract.world.run("-vv", "run", "--json")
        result = out.by_name(contract.name)

        assert result["status"] == "rolled-back", result
        assert "invalidCredentials" in result["message"] and "bind_password" in result["message"]
        assert "nothing was restarted" in result["message"]
        assert wrong not in out.stdout + out.stderr
        assert contract.snapshot() == before
        assert harness.slapd_pid() == pid
        contract.wait_presented(first.fingerprint)

    def test_cn_config_naming_another_key_rolls_back_before_the_restart(self, contract: Contract) -> None:
        """cn=config (edited since slapd last started) pairs the certificate with a key that does
        not match the new certificate: slapd would not start, so nothing is restarted."""
        first = self.first_install(contract)
        harness = self.slapd(contract)
        contract.world.issue(contract.name, days=60)
        other_key = contract.files.key.with_name("other.key")
        contract.world.add("other.example.test", key="rsa2048", key_path=other_key)
        ldif = harness.server.config_dir / "cn=config.ldif"
        unfolded = ldif.read_text().replace("\n ", "")  # slapd folds long values (RFC 2849)
        assert f"olcTLSCertificateKeyFile: {contract.files.key}\n" in unfolded
        ldif.write_text(unfolded.replace(f"olcTLSCertificateKeyFile: {contract.files.key}\n",
                                         f"olcTLSCertificateKeyFile: {other_key}\n"))
        before, pid = contract.snapshot(), harness.slapd_pid()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert f"the key {other_key}, which does not match the new certificate" in result["message"]
        assert contract.snapshot() == before
        assert harness.slapd_pid() == pid
        contract.wait_presented(first.fingerprint)

    def test_cn_config_naming_another_certificate_is_refused(self, contract: Contract) -> None:
        """slapd loads a certificate file this entry does not write: installing would change
        nothing slapd serves. Rolled back with the ldapmodify to fix it, nothing restarted."""
        contract.world.issue(contract.name, days=30)
        harness = self.slapd(contract)
        elsewhere = contract.files.cert.with_name("elsewhere.crt")
        contract.write_config(cert=str(elsewhere))
        pid = harness.slapd_pid()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert f"loads the certificate {contract.files.cert}, not this entry's {elsewhere}" in result["message"]
        assert "olcTLSCertificateFile" in result["message"]
        assert not elsewhere.exists()  # first install rolled back: the file it created is gone
        assert harness.slapd_pid() == pid

    def test_activation_failing_after_the_restart_is_rolled_back(self, contract: Contract) -> None:
        """The reload command exits non-zero after restarting slapd on the new files (as
        ``systemctl restart`` does when the unit does not come up; simulated here by a script
        that fails once). The previous files come back, slapd is restarted on them and is
        checked to serve the previous certificate again."""
        first = self.first_install(contract)
        harness = self.slapd(contract)
        contract.world.issue(contract.name, days=60)
        before = contract.snapshot()
        marker, fails_once = harness.workdir / "fail-once", harness.workdir / "fails-once.sh"
        fails_once.write_text(f"#!/bin/sh\n[ -e {marker} ] || exit 0\nrm -f {marker}\n"
                              "echo 'Job for slapd.service failed because the control process exited "
                              "with error code.' >&2\nexit 1\n")
        fails_once.chmod(0o755)
        marker.touch()
        contract.write_config(reload=f"sh -c {shlex.quote(harness.restart_command + ' && ' + str(fails_once))}")

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert "Job for slapd.service failed" in result["message"]
        assert "serves the previous certificate again" in result["message"]
        assert contract.snapshot() == before
        contract.wait_presented(first.fingerprint)

    def test_world_readable_key_is_refused_before_anything(self, contract: Contract) -> None:
        """A key readable by every user is reported as a configuration error; nothing written."""
        contract.world.issue(contract.name, days=30)
        contract.files.key.chmod(0o644)
        before, pid = contract.snapshot(), self.slapd(contract).slapd_pid()
        contract.write_config()

        result = contract.run()

        assert result["status"] == "failed"
        assert f"chmod o-rwx {contract.files.key}" in result["message"]
        assert contract.snapshot() == before
        assert self.slapd(contract).slapd_pid() == pid

    def test_key_slapd_cannot_read_is_refused_before_anything(self, contract: Contract) -> None:
        """root:root 0600: slapd (group openldap) could not read it after the restart."""
        contract.world.issue(contract.name, days=30)
        os.chown(contract.files.key, 0, 0)
        contract.files.key.chmod(0o600)
        before = contract.snapshot()
        contract.write_config()

        result = contract.run()

        assert result["status"] == "failed"
        assert f"chgrp openldap {contract.files.key} && chmod 0640" in result["message"]
        assert contract.snapshot() == before


def test_two_line_entry_gets_debian_defaults(tmp_path: Path) -> None:
    """``name`` and ``service`` are enough: slapd's files under /etc/ldap/tls, slaptest,
    systemctl restart slapd, StartTLS on 389 and LDAPS on 636 with the name as SNI."""
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": "ldap.example.com", "service": "openldap"}]))

    loaded = load_install(str(config), Registry.load())

    assert not loaded.broken, loaded.broken
    entry = loaded.certs[0]
    assert (entry.key, entry.cert, entry.chain, entry.fullchain) == (
        "/etc/ldap/tls/ldap.example.com.key", "/etc/ldap/tls/ldap.example.com.crt",
        "/etc/ldap/tls/ldap.example.com.ca", "")
    assert entry.check == "slaptest -u -F /etc/ldap/slapd.d"
    assert entry.reload == "systemctl restart slapd"
    assert entry.verify == ["ldap+starttls://127.0.0.1:389?sni=ldap.example.com",
                            "ldaps://127.0.0.1:636?sni=ldap.example.com"]
    assert entry.options == OpenLdapOptions(key_group="openldap", slapd_d="/etc/ldap/slapd.d")


@pytest.mark.parametrize("options, error", [
    ({"bind_dn": "cn=admin,dc=example,dc=com"}, "cert[0].options.bind_dn: set bind_dn and bind_password together"),
    ({"bind_password": "x"}, "set bind_dn and bind_password together"),
    ({"bind_dn": 3}, "cert[0].options.bind_dn must be str, not int (3)"),
    ({"bind_password": 3}, "cert[0].options.bind_password must be str"),
    ({"key_group": "no-such-group-here"}, "cert[0].options.key_group: no group 'no-such-group-here'"),
    ({"tls": True}, "unknown key cert[0].options.tls"),
])
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict[str, Any], error: str) -> None:
    key = tmp_path / "ldap.key"
    key.write_text("not read by this test")
    key.chmod(0o600)
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": "ldap.example.com", "service": "openldap", "key": str(key),
                                  "options": options}]))

    loaded = load_install(str(config), Registry.load())

    assert not loaded.certs and error in loaded.broken[0].error, loaded.broken


def test_cn_config_attributes_folded_and_base64() -> None:
    """cn=config.ldif as slapd writes it; long values are folded, unusual ones base64."""
    ldif = ("# AUTO-GENERATED FILE - DO NOT EDIT!! Use ldapmodify.\n# CRC32 204ede9c\n"
            "dn: cn=config\nobjectClass: olcGlobal\nolcTLSCACertificateFile: /etc/ldap/tls/a-very-long\n"
            " -name.ca\nolcTLSCertificateFile:: L2V0Yy9sZGFwL3Rscy/DqS5jcnQ=\n"
            "olcTLSCertificateKeyFile: /etc/ldap/tls/k.key\nolcTLSCipherSuite: NORMAL\n")

    assert read_tls_attributes(ldif) == {
        "olcTLSCACertificateFile": "/etc/ldap/tls/a-very-long-name.ca",
        "olcTLSCertificateFile": "/etc/ldap/tls/é.crt",
        "olcTLSCertificateKeyFile": "/etc/ldap/tls/k.key",
        "olcTLSCipherSuite": "NORMAL",
    }
