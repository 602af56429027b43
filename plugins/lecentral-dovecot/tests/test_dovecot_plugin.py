"""The ``dovecot`` service plugin against Debian's real Dovecot on 127.0.0.1.

Each daemon test runs its own Dovecot (:class:`~lecentral_testing.daemons.dovecot.DovecotServer`:
its own configuration, base_dir and state in a temp dir; IMAP and POP3 with STARTTLS, IMAPS and
POP3S on dynamic ports) and the real ``lecentral-install run``. The configuration tests run the
real ``doveconf`` on a dovecot.conf written in a temp dir, without a daemon.

Certificates: :class:`lecentral_testing.agent.TestCA` signs the CSR in the store the way an ACME
CA does (a root and a leaf, checked by the agent's pre-checks). Dovecot and the verifiers compare
fingerprints, never trust anchors, so which CA signs does not matter here; one test installs a
real Pebble-issued certificate (the ``pebble_orders`` fixture) all the same.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import AgentWorld, PebbleOrders
from lecentral_testing.daemons.dovecot import DovecotServer
from lecentral_testing.pki import key_pem, make_key, make_self_signed, write_private
from lecentral_testing.service_contract import (
    Contract,
    ContractFiles,
    ServiceContract,
    ServiceHarness,
    assert_bad_options_break_only_their_entry,
)

from lecentral.certificates import Certificate
from lecentral.install.config import CertEntry
from lecentral.install.csr import load_key
from lecentral.verify import presented_fingerprint

NAME = "imap.example.test"
BROKEN_SETTING = "lecentral_not_a_setting = 1\n"


def break_dovecot(server: DovecotServer) -> None:
    with server.conf.open("a") as conf:
        conf.write(BROKEN_SETTING)


def reloads(server: DovecotServer) -> int:
    """How many times the master has re-read its configuration (it logs each SIGHUP)."""
    try:
        return server.log_file.read_text(errors="replace").count("SIGHUP received")
    except FileNotFoundError:
        return 0


# -- the contract every service plugin passes -------------------------------------------------


class DovecotHarness(ServiceHarness):
    """Dovecot with ``ssl_cert = <fullchain`` and ``ssl_key = <key``."""

    service = "dovecot"
    server: DovecotServer

    def start(self, files: ContractFiles) -> None:
        self.server = DovecotServer(self.workdir, cert=files.fullchain, key=files.key).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        # check and reload are left to the plugin: doveconf -c FILE -n, doveadm -c FILE reload
        return {"verify": list(self.server.verify_urls.values()),
                "options": {"config_file": str(self.server.conf)}}

    def break_config(self) -> None:
        break_dovecot(self.server)


class TestDovecotContract(ServiceContract):
    contract_name = NAME
    key_kind = "ec256"

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return DovecotHarness(tmp_path / "dovecot")

    def test_a_pebble_issued_certificate_is_presented_over_imaps(
            self, contract: Contract, pebble_orders: PebbleOrders) -> None:
        """A real ACME order instead of the test CA: Pebble signs the stored CSR (the world's
        key), the agent installs leaf + Pebble's chain, and Dovecot presents that leaf on IMAPS
        (and on its other listeners) after the reload."""
        leaf = pebble_orders.issue(contract.world, contract.name)
        assert "Pebble" in leaf.cert.issuer.rfc4514_string()
        contract.write_config()

        result = contract.run()

        assert result["status"] == "installed", result
        harness: DovecotHarness = contract.harness  # type: ignore[assignment]
        contract.wait_presented(leaf.fingerprint)  # every listener, IMAPS among them
        imaps = harness.server.verify_urls["imaps"]
        assert imaps.startswith("imaps://127.0.0.1:")
        assert presented_fingerprint(contract.world.registry, imaps, 5.0) == leaf.fingerprint
        fullchain = contract.files.fullchain.read_bytes()
        assert fullchain.startswith(leaf.pem) and fullchain.count(b"BEGIN CERTIFICATE") >= 2


# -- the plugin's own behaviour against the daemon -----------------------------------------------


@dataclass
class Mail:
    """A world with NAME in its store, the files Dovecot reads (placeholders), and Dovecot."""

    world: AgentWorld
    tmp: Path
    key: Path
    cert: Path
    fullchain: Path
    server: DovecotServer | None = None

    def start(self, *, cert: Path | None = None, key: Path | None = None,
              extra_conf: str = "") -> DovecotServer:
        self.server = DovecotServer(self.tmp / "dovecot", cert=cert or self.fullchain,
                                    key=key or self.key, extra_conf=extra_conf).start()
        return self.server

    @property
    def dovecot(self) -> DovecotServer:
        assert self.server is not None
        return self.server

    def entry(self, **keys: Any) -> dict[str, Any]:
        """A short ``[[cert]]``: paths in the temp dir and the instance; no check, reload or verify."""
        base = {"name": NAME, "service": "dovecot", "key": str(self.key), "cert": str(self.cert),
                "fullchain": str(self.fullchain), "options": {"config_file": str(self.dovecot.conf)}}
        return {**base, **keys}

    def run(self, *entries: dict[str, Any], args: tuple[str, ...] = ("run",)) -> dict[str, Any]:
        self.world.write_config(*(entries or (self.entry(),)))
        return self.world.run(*args).by_name(NAME)

    def placeholder(self, path: Path, key: Path | None = None) -> bytes:
        cert, _ = make_self_signed([NAME], load_key(key or self.key), days=2)
        path.write_bytes(cert)
        return cert


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Mail]:
    """The world and placeholder files (an RSA key: the contract tests use ECDSA)."""
    world = AgentWorld(tmp_path / "world")
    key = world.add(NAME)
    directory = tmp_path / "etc-dovecot-private"
    directory.mkdir(mode=0o700)
    mail = Mail(world, tmp_path, key, directory / f"{NAME}.crt", directory / f"{NAME}.pem")
    mail.placeholder(mail.cert)
    mail.placeholder(mail.fullchain)
    try:
        yield mail
    finally:
        if mail.server is not None:
            mail.server.close()
        world.close()


@pytest.fixture
def mail(files: Mail) -> Mail:
    files.start()
    return files


def test_verify_urls_come_from_dovecots_listeners(mail: Mail) -> None:
    """With no ``verify`` in the entry, IMAP and POP3 are verified, STARTTLS and implicit TLS,
    with the name as SNI; renewal has all four present the new certificate."""
    first = mail.world.issue(NAME, days=30)
    result = mail.run()
    assert result["status"] == "installed", result
    assert result["message"].endswith("service activated and verified")
    mail.dovecot.wait_presented(first.fingerprint)

    renewed = mail.world.issue(NAME, days=60)
    plan = mail.run(args=("run", "--dry-run", "--json"))["plan"]
    ports = mail.dovecot.ports
    assert [line for line in plan if line.startswith("then: verify")] == [
        f"then: verify imap+starttls://127.0.0.1:{ports['imap']}?sni={NAME}",
        f"then: verify imaps://127.0.0.1:{ports['imaps']}?sni={NAME}",
        f"then: verify pop3+starttls://127.0.0.1:{ports['pop3']}?sni={NAME}",
        f"then: verify pop3s://127.0.0.1:{ports['pop3s']}?sni={NAME}"]
    assert mail.run()["status"] == "installed"
    mail.dovecot.wait_presented(renewed.fingerprint)
    assert Certificate.load(mail.cert.read_bytes()).fingerprint == renewed.fingerprint

    # lecentral-install status asks the same four listeners
    out = mail.world.run("status", "--json")
    status = json.loads(out.stdout)
    (entry,) = [e for e in status["certs"] if e["name"] == NAME]
    assert len(entry["served"]) == 4 and all(s["is_installed"] for s in entry["served"].values()), entry


def test_doveconf_failure_is_quoted_and_nothing_is_reloaded(mail: Mail) -> None:
    first = mail.world.issue(NAME, days=30)
    assert mail.run()["status"] == "installed"
    mail.dovecot.wait_presented(first.fingerprint)
    before = mail.fullchain.read_bytes()
    reloaded = reloads(mail.dovecot)
    assert reloaded >= 1  # the install above reloaded, and the log says so
    mail.world.issue(NAME, days=60)
    break_dovecot(mail.dovecot)
    result = mail.run()
    assert result["status"] == "rolled-back", result
    assert "config test" in result["message"] and "Unknown setting: lecentral_not_a_setting" in result["message"]
    assert mail.fullchain.read_bytes() == before
    assert reloads(mail.dovecot) == reloaded
    mail.dovecot.wait_presented(first.fingerprint)


def test_ssl_cert_naming_another_file_is_refused_before_the_reload(files: Mail) -> None:
    """10-ssl.conf still names Debian's default file: doveconf -n passes, the reload would serve
    the old certificate; the plugin refuses before reloading."""
    mail = files
    other = mail.tmp / "dovecot.pem"
    served = mail.placeholder(other)
    mail.start(cert=other)
    reloaded = reloads(mail.dovecot)
    mail.world.issue(NAME, days=30)
    before = mail.fullchain.read_bytes()
    result = mail.run()
    assert result["status"] == "rolled-back", result
    assert f"reads ssl_cert from {other}, none of the files this entry writes" in result["message"]
    assert f"set ssl_cert = <{mail.fullchain} and ssl_key = <{mail.key}" in result["message"]
    assert mail.fullchain.read_bytes() == before
    assert reloads(mail.dovecot) == reloaded
    mail.dovecot.wait_presented(Certificate.load(served).fingerprint)


def test_ssl_key_of_another_key_is_refused_but_a_copy_of_the_key_is_fine(files: Mail) -> None:
    mail = files
    other_key = write_private(mail.tmp / "other.key", key_pem(make_key("ec256")))
    mail.placeholder(mail.fullchain, key=other_key)
    mail.start(key=other_key)
    mail.world.issue(NAME, days=30)
    before = mail.fullchain.read_bytes()
    result = mail.run()
    assert result["status"] == "rolled-back", result
    assert (f"pairs ssl_cert <{mail.fullchain} with ssl_key <{other_key}, which does not match the new "
            f"certificate") in result["message"]
    assert f"Point ssl_key at {mail.key}" in result["message"]
    assert mail.fullchain.read_bytes() == before

    # Dovecot's ssl_key is a copy of the entry's key at another path: the same key, accepted
    copy = write_private(mail.tmp / "copy.key", mail.key.read_bytes())
    mail.dovecot.conf.write_text(mail.dovecot.conf.read_text().replace(str(other_key), str(copy)))
    first = mail.world.issue(NAME, days=40)
    result = mail.run()
    assert result["status"] == "installed", result
    mail.dovecot.wait_presented(first.fingerprint)


def test_a_local_name_block_is_checked_and_verified_with_sni(files: Mail) -> None:
    """The certificate is served for its name only (``local_name`` block), another one by
    default: the files check finds it, and the verification asks with the name as SNI."""
    mail = files
    default = mail.tmp / "default.pem"
    served_by_default = Certificate.load(mail.placeholder(default)).fingerprint
    mail.start(cert=default, extra_conf=f"local_name {NAME} {{\n  ssl_cert = <{mail.fullchain}\n"
                                        f"  ssl_key = <{mail.key}\n}}\n")
    first = mail.world.issue(NAME, days=30)
    result = mail.run()
    assert result["status"] == "installed", result  # verified with sni=NAME on all four listeners
    assert Certificate.load(mail.fullchain.read_bytes()).fingerprint == first.fingerprint
    assert mail.dovecot.presented_fingerprint("imaps") == served_by_default  # no SNI: the default


# -- reading Dovecot's configuration (the real doveconf on a file; no daemon) ---------------------


def dovecot_conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dovecot.conf"
    path.write_text("ssl_cert = </etc/dovecot/private/x.pem\nssl_key = </etc/ssl/private/x.key\n" + text)
    return str(path)


def entry_for(config_file: str, **options: Any) -> CertEntry:
    return CertEntry(name=NAME, service="dovecot", key="/etc/ssl/private/x.key",
                     cert="/etc/dovecot/private/x.crt", fullchain="/etc/dovecot/private/x.pem",
                     options={"config_file": config_file, **options})


def test_debian_defaults_give_imap_and_pop3_starttls_and_implicit_tls(tmp_path: Path) -> None:
    """Debian's protocols and built-in listeners (143, 993, 110, 995 on every address)."""
    from lecentral_dovecot.service import DovecotService

    conf = dovecot_conf(tmp_path, "protocols = imap pop3\nlisten = *, ::\n")
    assert DovecotService().verify_urls(entry_for(conf)) == [
        f"imap+starttls://127.0.0.1:143?sni={NAME}", f"imaps://127.0.0.1:993?sni={NAME}",
        f"pop3+starttls://127.0.0.1:110?sni={NAME}", f"pop3s://127.0.0.1:995?sni={NAME}"]


def test_disabled_haproxy_and_address_bound_listeners(tmp_path: Path) -> None:
    """port 0 and haproxy listeners are skipped; a listener's own address wins over the wildcard
    (which options.verify_host replaces); POP3 off in protocols means no POP3 URL."""
    from lecentral_dovecot.service import DovecotService

    conf = dovecot_conf(tmp_path, """protocols = imap
listen = *
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    address = 192.0.2.143
  }
  inet_listener imaps_proxied {
    port = 10993
    ssl = yes
    haproxy = yes
  }
  inet_listener imap_local {
    port = 10143
  }
}
""")
    assert sorted(DovecotService().verify_urls(entry_for(conf))) == [
        f"imap+starttls://127.0.0.1:10143?sni={NAME}", f"imaps://192.0.2.143:993?sni={NAME}"]
    assert sorted(DovecotService().verify_urls(entry_for(conf, verify_host="mail.example.test"))) == [
        f"imap+starttls://mail.example.test:10143?sni={NAME}", f"imaps://192.0.2.143:993?sni={NAME}"]


def test_ssl_no_leaves_nothing_to_verify_and_says_so(tmp_path: Path) -> None:
    from lecentral_dovecot.service import DovecotService

    from lecentral.errors import InstallError

    conf = dovecot_conf(tmp_path, "protocols = imap\nssl = no\nservice imap-login {\n"
                                  "  inet_listener imaps {\n    port = 0\n  }\n}\n")
    with pytest.raises(InstallError, match="no IMAP or POP3 listener that presents a certificate.*ssl = no"):
        DovecotService().verify_urls(entry_for(conf))
    explicit = dataclasses.replace(entry_for(conf), verify=["imaps://127.0.0.1:993"])
    assert DovecotService().verify_urls(explicit) == ["imaps://127.0.0.1:993"]


def test_bad_options_break_only_their_entry(tmp_path: Path) -> None:
    """Options are checked when install.toml is loaded: the entry is reported, nothing is touched."""
    assert_bad_options_break_only_their_entry(tmp_path / "world", "dovecot", NAME, [
        ({"config_file": "dovecot.conf"}, "cert[0].options.config_file: 'dovecot.conf' must be an absolute path"),
        ({"check_files": "yes"}, "cert[0].options.check_files must be bool, not str ('yes')"),
        ({"conf": "/x"}, "unknown key cert[0].options.conf for service 'dovecot'"),
    ])


def test_without_the_plugin_a_dovecot_entry_says_which_package_to_install() -> None:
    from lecentral_dovecot.plugin import DovecotOptions

    from lecentral.config import NotifyConfig
    from lecentral.errors import PluginError
    from lecentral.install.config import resolve_entry
    from lecentral.registry import Registry

    with pytest.raises(PluginError, match="no service plugin named 'dovecot'.*pip install lecentral-dovecot"):
        resolve_entry({"name": NAME, "service": "dovecot"}, 0, Registry.load(entrypoints=False),
                      NotifyConfig(), "install.toml")
    entry = resolve_entry({"name": NAME, "service": "dovecot"}, 0, Registry.load(), NotifyConfig(),
                          "install.toml")
    assert (entry.key, entry.cert, entry.fullchain) == (
        f"/etc/ssl/private/{NAME}.key", f"/etc/dovecot/private/{NAME}.crt", f"/etc/dovecot/private/{NAME}.pem")
    assert entry.options == DovecotOptions("/etc/dovecot/dovecot.conf", check_files=True, verify_host="")
    assert (entry.check, entry.reload, entry.verify) == ("", "", [])
