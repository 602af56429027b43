"""The ``postfix`` service plugin against Debian's real Postfix on 127.0.0.1.

Each test runs its own Postfix (:class:`~lecentral_testing.daemons.postfix.PostfixServer`: its own
config_directory and queue in a temp dir, smtpd listeners on dynamic ports: ``smtp`` offering
STARTTLS, ``smtps`` in wrapper mode, ``plain`` without TLS) and the real ``lecentral-install run``.

Certificates: :class:`lecentral_testing.agent.TestCA` signs the CSR in the store the way an ACME
CA does (a root and a leaf, checked by the agent's pre-checks), with the validity each test needs
(renewals must be an hour newer). Postfix and the verifiers compare fingerprints, never trust
anchors, so which CA signs does not matter there. One test goes the whole way instead: Pebble
issues through the central ``dns-subzone`` issuer and the local ACME world's BIND
(``acme_world``), and Postfix serves that certificate.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import AgentWorld
from lecentral_testing.daemons.postfix import PostfixServer
from lecentral_testing.pebble import AcmeWorld
from lecentral_testing.pki import make_self_signed
from lecentral_testing.service_contract import (
    ContractFiles,
    ServiceContract,
    ServiceHarness,
    assert_bad_options_break_only_their_entry,
)

from lecentral.certificates import Certificate
from lecentral.install.csr import load_key

NAME = "mail.example.test"
BROKEN_MAIN_CF = "mail_owner = lecentral-no-such-user\n"  # postfix check fails, postconf still reads


class ChrootedPostfix(PostfixServer):
    """Postfix whose smtpd listeners run chrooted in the queue directory, as Debian's smtp does."""

    def write_config(self) -> None:
        super().write_config()
        master = self.config_dir / "master.cf"
        text = master.read_text()
        assert text.count(" inet n - n - - smtpd") == 3, text
        master.write_text(text.replace(" inet n - n - - smtpd", " inet n - y - - smtpd"))


def break_postfix(server: PostfixServer) -> None:
    with (server.config_dir / "main.cf").open("a") as main_cf:
        main_cf.write(BROKEN_MAIN_CF)


def fingerprint_of(path: Path) -> str:
    """SHA-256 of the first certificate in the file at ``path``."""
    return Certificate.load(path.read_bytes()).fingerprint


def reloads(server: PostfixServer) -> int:
    """How many times the master has reloaded (it logs each one)."""
    return server.log_tail(100000).count("reload -- version")


# -- the contract every service plugin passes -------------------------------------------------


class PostfixHarness(ServiceHarness):
    """Postfix loading the combined file (key, leaf, chain) through smtpd_tls_chain_files."""

    service = "postfix"
    server: PostfixServer

    def start(self, files: ContractFiles) -> None:
        self.server = PostfixServer(self.workdir, cert=files.cert, key=files.key, chain=files.chain,
                                    main_cf={"smtpd_tls_chain_files": str(files.combined)}).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        # check and reload are left to the plugin: postfix -c DIR check / reload
        return {"combined": str(files.combined), "verify": list(self.server.verify_urls.values()),
                "options": {"config_directory": str(self.server.config_dir)}}

    def break_config(self) -> None:
        break_postfix(self.server)


class TestPostfixContract(ServiceContract):
    contract_name = NAME

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return PostfixHarness(tmp_path / "postfix")


# -- the plugin's own behaviour -----------------------------------------------------------------


@dataclass
class Mail:
    """A world with NAME in its store, the files Postfix reads (placeholders), and Postfix."""

    world: AgentWorld
    tmp: Path
    key: Path
    cert: Path
    combined: Path
    server: PostfixServer | None = None

    def start(self, launcher: type[PostfixServer] = PostfixServer, **main_cf: str) -> PostfixServer:
        """Start Postfix loading the combined file, unless ``main_cf`` says otherwise."""
        params = {"smtpd_tls_chain_files": str(self.combined), **main_cf}
        self.server = launcher(self.tmp / "postfix", cert=self.cert, key=self.key, chain=self.cert,
                               main_cf=params).start()
        return self.server

    @property
    def postfix(self) -> PostfixServer:
        assert self.server is not None
        return self.server

    def entry(self, **keys: Any) -> dict[str, Any]:
        """A short ``[[cert]]``: paths in the temp dir, the instance; no check, reload or verify."""
        options = {"config_directory": str(self.postfix.config_dir), **keys.pop("options", {})}
        base = {"name": NAME, "service": "postfix", "key": str(self.key), "cert": str(self.cert),
                "combined": str(self.combined), "options": options}
        return {**base, **keys}

    def run(self, *entries: dict[str, Any], args: tuple[str, ...] = ("run",)) -> dict[str, Any]:
        self.world.write_config(*(entries or (self.entry(),)))
        return self.world.run(*args).by_name(NAME)

    def copy_of(self, path: Path) -> Path:
        """Where ``path`` is inside the chroot."""
        return Path(str(self.postfix.queue_dir) + str(path))

    def placeholder(self, path: Path, *, with_key: bool = False) -> bytes:
        """Write a self-signed certificate for NAME and the key (first, if ``with_key``) to ``path``."""
        cert, _ = make_self_signed([NAME], load_key(self.key), days=2)
        path.write_bytes((self.key.read_bytes() if with_key else b"") + cert)
        if with_key:
            path.chmod(0o600)
        return cert


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Mail]:
    """The world and placeholder files (an ECDSA key: the contract tests use RSA); the test
    starts Postfix (``files.start(...)``)."""
    world = AgentWorld(tmp_path / "world")
    key = world.add(NAME, key="ec256")
    directory = tmp_path / "etc-postfix"
    directory.mkdir()
    mail = Mail(world, tmp_path, key, directory / f"{NAME}.crt", directory / f"{NAME}.pem")
    mail.placeholder(mail.cert)
    mail.placeholder(mail.combined, with_key=True)
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


@pytest.fixture
def chrooted(files: Mail) -> Mail:
    files.start(ChrootedPostfix)
    return files


def test_verify_urls_come_from_master_cf(mail: Mail) -> None:
    """With no ``verify`` in the entry, every smtpd listener offering TLS is verified: STARTTLS
    and wrapper mode, with the name as SNI; the listener without TLS is left out."""
    first = mail.world.issue(NAME, days=30)
    result = mail.run()
    assert result["status"] == "installed", result
    assert result["message"].endswith("service activated and verified")
    mail.postfix.wait_presented(first.fingerprint)

    renewed = mail.world.issue(NAME, days=60)
    plan = mail.run(args=("run", "--dry-run", "--json"))["plan"]
    ports = mail.postfix.ports
    assert f"then: verify smtp+starttls://127.0.0.1:{ports['smtp']}?sni={NAME}" in plan
    assert f"then: verify smtps://127.0.0.1:{ports['smtps']}?sni={NAME}" in plan
    assert not [line for line in plan if str(ports["plain"]) in line]

    assert mail.run()["status"] == "installed"
    mail.postfix.wait_presented(renewed.fingerprint)  # every listener, not just the first


def test_chrooted_smtpd_gets_copies_switched_and_rolled_back_with_the_originals(chrooted: Mail) -> None:
    """smtpd runs chrooted (master.cf chroot y): the files are copied under queue_directory, in
    directories mirroring the originals'; renewal updates both; a failed config test restores both."""
    mail = chrooted
    first = mail.world.issue(NAME, days=30)
    assert mail.run()["status"] == "installed"
    mail.postfix.wait_presented(first.fingerprint)
    for original in (mail.cert, mail.combined):
        copy = mail.copy_of(original)
        assert copy.read_bytes() == original.read_bytes()
        assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(original.stat().st_mode)
    assert stat.S_IMODE(mail.copy_of(mail.combined).stat().st_mode) == 0o600
    mirrored = mail.copy_of(mail.combined).parent
    assert stat.S_IMODE(mirrored.stat().st_mode) == stat.S_IMODE(mail.combined.parent.stat().st_mode)
    assert not mail.copy_of(mail.key).exists()  # the combined file holds the key already

    renewed = mail.world.issue(NAME, days=60)
    assert mail.run()["status"] == "installed"
    mail.postfix.wait_presented(renewed.fingerprint)
    assert fingerprint_of(mail.copy_of(mail.cert)) == renewed.fingerprint
    assert mail.copy_of(mail.combined).read_bytes() == mail.combined.read_bytes()

    watched = (mail.cert, mail.combined, mail.copy_of(mail.cert), mail.copy_of(mail.combined))
    before = {p: p.read_bytes() for p in watched}
    reloaded = reloads(mail.postfix)
    assert reloaded >= 2  # the two installs above reloaded, and the log says so
    mail.world.issue(NAME, days=90)
    break_postfix(mail.postfix)
    result = mail.run()
    assert result["status"] == "rolled-back", result
    assert reloads(mail.postfix) == reloaded
    # postfix check says why only on a terminal: the plugin gives it one, so the alert says it
    assert "unknown user name value: lecentral-no-such-user" in result["message"]
    assert {p: p.read_bytes() for p in watched} == before
    mail.postfix.wait_presented(renewed.fingerprint)


class PowerCut(BaseException):
    """Stops the run where it stands, as SIGKILL would: no ``except`` in the agent catches it."""


def test_cut_between_the_originals_and_their_chroot_copies_is_finished_by_the_next_run(
        chrooted: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run stops right after the first copy was renamed into the chroot: the originals are
    new, one copy new, one old. The journal covers the copies, so the next run finishes the
    set, reloads and verifies."""
    mail = chrooted
    mail.world.issue(NAME, days=30)
    assert mail.run()["status"] == "installed"
    renewed = mail.world.issue(NAME, days=60)
    real_replace = os.replace

    def replace_then_cut(src: str, dst: str) -> None:
        real_replace(src, dst)
        if str(dst).startswith(str(mail.postfix.queue_dir)):
            raise PowerCut

    monkeypatch.setattr(os, "replace", replace_then_cut)
    with pytest.raises(PowerCut):
        mail.run()
    monkeypatch.undo()
    assert fingerprint_of(mail.copy_of(mail.cert)) == renewed.fingerprint
    assert mail.copy_of(mail.combined).read_bytes() != mail.combined.read_bytes()  # a mix

    result = mail.run()
    assert result["status"] == "installed" and "interrupted" in result["message"], result
    assert mail.copy_of(mail.combined).read_bytes() == mail.combined.read_bytes()
    mail.postfix.wait_presented(renewed.fingerprint)
    assert mail.run()["status"] == "up-to-date"


def test_chroot_copies_appear_when_smtpd_becomes_chrooted(mail: Mail) -> None:
    """Installed without a chroot, then master.cf is switched to chroot y: the next run sees the
    missing copies and writes them (only them: the originals stay as they are)."""
    first = mail.world.issue(NAME, days=30)
    assert mail.run()["status"] == "installed"
    master = mail.postfix.config_dir / "master.cf"
    master.write_text(master.read_text().replace(" inet n - n - - smtpd", " inet n - y - - smtpd"))
    inode = mail.combined.stat().st_ino

    result = mail.run()
    assert result["status"] == "installed", result
    assert result["paths"] == [str(mail.copy_of(mail.cert)), str(mail.copy_of(mail.combined))]
    assert mail.combined.stat().st_ino == inode
    assert mail.copy_of(mail.combined).read_bytes() == mail.combined.read_bytes()
    assert mail.run()["status"] == "up-to-date"
    mail.postfix.wait_presented(first.fingerprint)


def test_postfix_not_running_fails_the_reload_with_its_reason(mail: Mail) -> None:
    """Postfix was stopped: ``postfix reload`` fails and says why (on the terminal the plugin
    gives it); the previous files come back, and the alert says the service is down."""
    first = mail.world.issue(NAME, days=30)
    assert mail.run()["status"] == "installed"
    before = mail.combined.read_bytes()
    mail.postfix.stop()
    mail.world.issue(NAME, days=60)
    result = mail.run()
    assert result["status"] == "rollback-failed", result
    assert "reload" in result["message"] and "the Postfix mail system is not running" in result["message"]
    assert "the previous files were put back" in result["message"]
    assert mail.combined.read_bytes() == before
    mail.postfix.start()
    mail.postfix.wait_presented(first.fingerprint)


def test_cert_and_key_files_style_copies_the_key_into_the_chroot(files: Mail) -> None:
    """smtpd_tls_cert_file (leaf + chain) and smtpd_tls_key_file: no combined file, so the chroot
    gets a copy of the key too, with the key's own owner and mode."""
    mail = files
    full = mail.cert.with_suffix(".full")
    mail.placeholder(full)
    mail.start(ChrootedPostfix, smtpd_tls_chain_files="", smtpd_tls_cert_file=str(full),
               smtpd_tls_key_file=str(mail.key))
    first = mail.world.issue(NAME, days=30)
    result = mail.run(mail.entry(combined="", fullchain=str(full)))
    assert result["status"] == "installed", result
    mail.postfix.wait_presented(first.fingerprint)
    key_copy = mail.copy_of(mail.key)
    assert key_copy.read_bytes() == mail.key.read_bytes()
    key_st, copy_st = mail.key.stat(), key_copy.stat()
    assert (copy_st.st_uid, copy_st.st_gid) == (key_st.st_uid, key_st.st_gid)
    assert stat.S_IMODE(copy_st.st_mode) == stat.S_IMODE(key_st.st_mode) & 0o640
    assert mail.copy_of(full).read_bytes() == full.read_bytes()
    assert not mail.copy_of(mail.combined).exists()


def test_staged_key_rotation_switches_the_key_and_its_chroot_copy_with_the_certificate(
        files: Mail) -> None:
    """csr --rotate (KEY.next), set-csr, renew: one run switches the key, its copy in the chroot
    and the certificate together; the chrooted smtpd then serves the new certificate (a TLS
    handshake only works when key and certificate agree)."""
    from lecentral.install.csr import make_csr

    mail = files
    full = mail.cert.with_suffix(".full")
    mail.placeholder(full)
    mail.start(ChrootedPostfix, smtpd_tls_chain_files="", smtpd_tls_cert_file=str(full),
               smtpd_tls_key_file=str(mail.key))
    entry = mail.entry(combined="", fullchain=str(full))
    mail.world.issue(NAME, days=30)
    assert mail.run(entry)["status"] == "installed"
    csr, _ = make_csr(NAME, [], mail.key, None, force=False, rotate=True)
    pending = mail.key.with_name(mail.key.name + ".next")
    new_key = pending.read_bytes()
    mail.world.store.set_csr(NAME, csr.pem, csr.md5_modulus)  # lecentral set-csr
    new = mail.world.issue(NAME, days=60)

    result = mail.run(entry)

    assert result["status"] == "installed" and "switched together" in result["message"], result
    assert mail.key.read_bytes() == new_key and mail.copy_of(mail.key).read_bytes() == new_key
    assert not pending.exists()
    mail.postfix.wait_presented(new.fingerprint)
    assert mail.run(entry)["status"] == "up-to-date"


def test_dry_run_in_a_new_chroot_plans_the_directories_and_changes_nothing(chrooted: Mail) -> None:
    mail = chrooted
    mail.world.issue(NAME, days=30)
    before = mail.combined.read_bytes()
    result = mail.run(args=("run", "--dry-run", "--json"))
    assert result["status"] == "would-install", result
    plan = "\n".join(result["plan"])
    assert f"create directory {mail.copy_of(mail.combined).parent}" in plan
    assert f"write {mail.copy_of(mail.combined)} (copy of combined in the Postfix chroot)" in plan
    assert not mail.copy_of(mail.combined).parent.exists()
    assert mail.combined.read_bytes() == before


def test_a_symlink_on_the_way_into_the_chroot_is_refused(chrooted: Mail, tmp_path: Path) -> None:
    """A link planted inside the queue directory would send the key elsewhere: nothing is written."""
    mail = chrooted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first_dir = mail.combined.parts[1]  # "tmp": queue/tmp becomes a link
    (mail.postfix.queue_dir / first_dir).symlink_to(elsewhere)
    before = mail.combined.read_bytes()
    mail.world.issue(NAME, days=30)
    result = mail.run()
    assert result["status"] == "failed", result
    assert "not a directory (a symbolic link?)" in result["message"]
    assert mail.combined.read_bytes() == before
    assert list(elsewhere.iterdir()) == []


def test_main_cf_naming_other_files_is_refused_before_the_reload(files: Mail) -> None:
    """main.cf still names another certificate (Debian's snakeoil, say): the reload would
    succeed and serve that one, so the config test refuses and nothing is reloaded."""
    mail = files
    snakeoil = mail.tmp / "snakeoil.pem"
    served = mail.placeholder(snakeoil, with_key=True)
    mail.start(smtpd_tls_chain_files=str(snakeoil))
    reloaded = reloads(mail.postfix)
    mail.world.issue(NAME, days=30)
    placeholder = mail.combined.read_bytes()
    result = mail.run()
    assert result["status"] == "rolled-back", result
    assert f"loads {snakeoil}, none of the files this entry writes" in result["message"]
    assert f"smtpd_tls_chain_files = {mail.combined}" in result["message"]
    assert mail.combined.read_bytes() == placeholder
    assert reloads(mail.postfix) == reloaded
    mail.postfix.wait_presented(Certificate.load(served).fingerprint)


def test_a_certificate_from_pebble_through_the_central_issuer_is_served(
        tmp_path: Path, acme_world: AcmeWorld, acme_name: str) -> None:
    """The whole way with the real parts: the central side's ``dns-subzone`` issuer gets the
    certificate from Pebble (DNS-01 in the name's BIND sub-zone) and stores it; the agent
    installs it for Postfix, which presents Pebble's leaf on every TLS listener."""
    from lecentral_testing.bind import DEFAULT_KEY_NAME

    from lecentral.api import AcmeClient, IssuerContext
    from lecentral.certificates import Csr, now_ts
    from lecentral.config import AcmeConfig, CentralConfig, DnsConfig

    world = AgentWorld(tmp_path / "world")
    try:
        key = world.add(acme_name, key="ec256")
        bind, pebble = acme_world.bind, acme_world.pebble
        central = CentralConfig(
            acme=AcmeConfig(directory=pebble.directory_url, email="hostmaster@example.test",
                            account_key=str(tmp_path / "account.key"), ca_bundle=str(pebble.ca_bundle),
                            poll_timeout=60),
            dns=DnsConfig(server=f"127.0.0.1:{bind.port}", port=bind.port,
                          tsig_key_file=str(bind.key_file(DEFAULT_KEY_NAME)), propagation_timeout=20,
                          propagation_interval=0.05))
        client = AcmeClient(central.acme)  # what a renew run hands its issuers
        issuer = world.registry.issuer("dns-subzone").factory(IssuerContext(central, lambda: client))
        row = world.store.get(acme_name)
        assert row is not None
        try:
            issued = issuer.issue(row, Csr.load(row.csr))
        finally:
            issuer.close()
            client.close()
        leaf = Certificate.load(issued.crt)
        world.store.save_issued(acme_name, issued.crt, issued.ca, leaf.not_after, now_ts())

        combined = tmp_path / f"{acme_name}.pem"
        placeholder, _ = make_self_signed([acme_name], load_key(key), days=2)
        combined.write_bytes(key.read_bytes() + placeholder)
        combined.chmod(0o600)
        cert = tmp_path / f"{acme_name}.crt"
        cert.write_bytes(placeholder)
        with PostfixServer(tmp_path / "postfix", cert=cert, key=key, chain=cert,
                           main_cf={"smtpd_tls_chain_files": str(combined)}) as server:
            world.write_config({"name": acme_name, "service": "postfix", "key": str(key),
                                "cert": str(cert), "combined": str(combined),
                                "options": {"config_directory": str(server.config_dir)}})
            result = world.run("run").by_name(acme_name)
            assert result["status"] == "installed", result
            server.wait_presented(leaf.fingerprint)
        assert "Pebble" in leaf.issuer
        assert combined.read_bytes() == key.read_bytes() + issued.crt + issued.ca
    finally:
        world.close()


# -- reading Postfix's configuration (the real postconf on a config directory; no daemon) ---------

DEBIAN_MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
smtps     inet  n       -       -       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
127.0.0.1:10025 inet n  -       n       -       -       smtpd
  -o smtpd_tls_security_level=none
10587     inet  n       -       n       -       -       smtpd
  -o smtpd_upstream_proxy_protocol=haproxy
pickup    unix  n       -       y       60      1       pickup
smtp      unix  -       -       y       -       -       smtp
"""


def postfix_dir(tmp_path: Path, main_cf: str, master_cf: str = DEBIAN_MASTER_CF) -> str:
    directory = tmp_path / "etc-postfix-conf"
    directory.mkdir(parents=True)
    (directory / "main.cf").write_text(main_cf)
    (directory / "master.cf").write_text(master_cf)
    return str(directory)


def entry_for(directory: str, **options: Any) -> Any:
    from lecentral.install.config import CertEntry

    return CertEntry(name=NAME, service="postfix", key="/k", cert="/etc/postfix/x.crt",
                     combined="/etc/postfix/x.pem", options={"config_directory": directory, **options})


def test_debian_master_cf_gives_starttls_on_25_and_587_and_smtps_on_465(tmp_path: Path) -> None:
    """Debian's main.cf and master.cf with submission and smtps enabled: three verify URLs; the
    content filter's return port (no TLS) and the listener behind haproxy are left out."""
    from lecentral_postfix.postconf import read_config
    from lecentral_postfix.service import PostfixService

    directory = postfix_dir(tmp_path, "compatibility_level = 3.6\nsmtpd_tls_security_level = may\n"
                            "queue_directory = /var/spool/postfix\nsmtpd_tls_chain_files = /etc/postfix/x.pem\n")
    config = read_config(directory, 30)
    assert [listener.service for listener in config.listeners] == [
        "smtp", "submission", "smtps", "127.0.0.1:10025", "10587"]
    assert config.chrooted and config.queue_directory == "/var/spool/postfix"
    assert config.tls_files() == {"/etc/postfix/x.pem"}
    service = PostfixService()
    assert service.verify_urls(entry_for(directory)) == [
        f"smtp+starttls://127.0.0.1:25?sni={NAME}", f"smtp+starttls://127.0.0.1:587?sni={NAME}",
        f"smtps://127.0.0.1:465?sni={NAME}"]
    assert service.chroot(entry_for(directory)) == "/var/spool/postfix"
    assert PostfixService().chroot(entry_for(directory, chroot=False)) is None
    assert PostfixService().chroot(entry_for(directory, queue_directory="/srv/jail")) == "/srv/jail"


def test_dash_in_the_chroot_column_follows_compatibility_level(tmp_path: Path) -> None:
    """``-`` means chroot y before compatibility_level 1 and n after (what Debian's init script reads)."""
    from lecentral_postfix.postconf import read_config

    master = "smtp inet n - - - - smtpd\n"
    old = read_config(postfix_dir(tmp_path / "old", "compatibility_level = 0\n", master), 30)
    new = read_config(postfix_dir(tmp_path / "new", "compatibility_level = 3.6\n", master), 30)
    assert old.chrooted and not new.chrooted


def test_verify_host_is_the_listener_address_else_loopback_else_the_option(tmp_path: Path) -> None:
    from lecentral_postfix.postconf import PostfixConfig
    from lecentral_postfix.service import PostfixService

    directory = postfix_dir(tmp_path, "smtpd_tls_security_level = may\n",
                            "smtp inet n - n - - smtpd\n[2001:db8::25]:587 inet n - n - - smtpd\n")
    assert PostfixService().verify_urls(entry_for(directory)) == [
        f"smtp+starttls://127.0.0.1:25?sni={NAME}", f"smtp+starttls://[2001:db8::25]:587?sni={NAME}"]
    assert PostfixService().verify_urls(entry_for(directory, verify_host="mx.example.test"))[0] == (
        f"smtp+starttls://mx.example.test:25?sni={NAME}")
    # (postconf refuses inet_interfaces naming an address this host lacks: checked without it)
    for interfaces, host in (("all", "127.0.0.1"), ("loopback-only", "127.0.0.1"),
                             ("192.0.2.25, 127.0.0.1", "127.0.0.1"), ("192.0.2.25", "192.0.2.25")):
        assert PostfixConfig("/etc/postfix", {"inet_interfaces": interfaces}).loopback_host() == host


def test_no_listener_with_tls_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    """TLS is off everywhere: there is nothing to verify, said before any reload (check_config)."""
    from lecentral_postfix.service import PostfixService

    from lecentral.errors import InstallError

    directory = postfix_dir(tmp_path, "smtpd_tls_security_level = none\n", "smtp inet n - n - - smtpd\n")
    with pytest.raises(InstallError, match="no smtpd listener in .*master.cf offers TLS.*set verify"):
        PostfixService().verify_urls(entry_for(directory))
    explicit = dataclasses.replace(entry_for(directory), verify=["smtp+starttls://127.0.0.1:2525"])
    assert PostfixService().verify_urls(explicit) == ["smtp+starttls://127.0.0.1:2525"]


def test_bad_options_break_only_their_entry(tmp_path: Path) -> None:
    """Options are checked when install.toml is loaded: the entry is reported, nothing is touched."""
    assert_bad_options_break_only_their_entry(tmp_path / "world", "postfix", NAME, [
        ({"chroot": "sometimes"}, "cert[0].options.chroot: 'sometimes': write \"auto\", true or false"),
        ({"chroot": 1}, "cert[0].options.chroot must be str | bool, not int (1)"),
        ({"config_directory": "etc/postfix"}, "cert[0].options.config_directory: 'etc/postfix' must be an absolute path"),
        ({"chrot": True}, "unknown key cert[0].options.chrot for service 'postfix'"),
    ])


def test_without_the_plugin_a_postfix_entry_says_which_package_to_install() -> None:
    from lecentral_postfix.plugin import PostfixOptions

    from lecentral.config import NotifyConfig
    from lecentral.errors import PluginError
    from lecentral.install.config import resolve_entry
    from lecentral.registry import Registry

    core_only = Registry.load(entrypoints=False)
    with pytest.raises(PluginError, match="no service plugin named 'postfix'.*pip install lecentral-postfix"):
        resolve_entry({"name": NAME, "service": "postfix"}, 0, core_only, NotifyConfig(), "install.toml")
    entry = resolve_entry({"name": NAME, "service": "postfix"}, 0, Registry.load(), NotifyConfig(), "install.toml")
    assert (entry.key, entry.cert, entry.combined) == (
        f"/etc/ssl/private/{NAME}.key", f"/etc/postfix/{NAME}.crt", f"/etc/postfix/{NAME}.pem")
    assert entry.options == PostfixOptions("/etc/postfix", chroot="auto", check_files=True)
    assert (entry.check, entry.reload, entry.verify) == ("", "", [])
