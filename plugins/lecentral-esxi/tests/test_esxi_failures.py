"""The ``esxi`` plugin's failure paths over a real SSH connection: nothing is pushed, or it is undone.

Real parts as in ``test_esxi_plugin.py``: Debian's sshd (the ``sshd_server`` fixture), the
system's ssh client, and a fake ESXi host directory whose rhttpproxy is a real ``openssl
s_server``. Every run is the real ``lecentral-install run``. Certificates: signed by
:class:`~lecentral_testing.agent.TestCA` for the host's key; the placeholder on the host is
self-signed (:mod:`lecentral_testing.pki`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from esxi_fake_host import FakeEsxiHost
from lecentral_esxi import scripts
from lecentral_testing.agent import AgentWorld
from lecentral_testing.pki import key_pem, make_key, make_self_signed
from sshd_launcher import SshServer, make_ssh_key

from lecentral.install.csr import load_key

NAME = "esx1.example.test"


@dataclass
class Esxi:
    """A store, a fake ESXi host holding a self-signed placeholder for :data:`NAME`, and sshd."""

    world: AgentWorld
    host: FakeEsxiHost
    sshd: SshServer
    key: Path
    local_copy: Path

    def entry(self, options: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        return {"name": NAME, "service": "esxi", "key": str(self.key), "cert": str(self.local_copy),
                "reload": self.host.reload_command, "verify": self.host.url, "verify_timeout": 20.0,
                "options": self.host.options(self.sshd, **(options or {})), **keys}

    def run(self, *args: str, options: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        self.world.write_config(self.entry(options, **keys))
        outcome = self.world.run("run", *args)
        result = outcome.by_name(NAME)
        assert (outcome.exit_code != 0) == (result["status"] in ("failed", "rolled-back",
                                                                  "rollback-failed"))
        return result

    def journal(self) -> Path:
        return self.world.state_dir / "entries" / f"esxi-{NAME}" / "journal.json"


@pytest.fixture
def esxi(tmp_path: Path, sshd_server: SshServer) -> Iterator[Esxi]:
    world = AgentWorld(tmp_path / "world")
    key = world.add(NAME, key="rsa2048")
    placeholder, _ = make_self_signed([NAME], load_key(key), days=2)
    host = FakeEsxiHost(tmp_path / "esx1", crt=placeholder, key=key.read_bytes()).start()
    try:
        yield Esxi(world, host, sshd_server, key, world.ssl / "certs" / f"{NAME}.crt")
    finally:
        host.stop()
        world.close()


def unchanged(esxi: Esxi, before: dict[str, bytes]) -> None:
    """The host's /etc/vmware/ssl is byte for byte as before: no backup, no temp file, no switch."""
    assert esxi.host.ssl_files() == before
    assert not esxi.journal().exists()
    assert not esxi.local_copy.exists()


def test_the_hosts_own_certificate_for_another_key_is_replaced(esxi: Esxi) -> None:
    """A fresh ESXi host presents its own certificate, valid for five years and made for a key of
    its own: not ours, so the first run replaces it although it expires later (the seed's
    "installed one is newer" rule would otherwise keep it forever); its pair stays as a backup."""
    vmware_crt, vmware_key = make_self_signed(["localhost.localdomain"], make_key("rsa2048"), days=1825)
    esxi.host.crt.write_bytes(vmware_crt)
    esxi.host.key.write_bytes(key_pem(vmware_key))
    esxi.host.restart()
    leaf = esxi.world.issue(NAME, days=90)

    result = esxi.run()

    assert result["status"] == "installed", result
    assert result["message"].startswith("first install")
    assert esxi.host.crt.read_bytes().startswith(leaf.pem)
    assert esxi.host.ssl_files()[esxi.host.backups()[0]] == vmware_crt
    assert esxi.run()["status"] == "up-to-date"


# -- refused before anything is sent ------------------------------------------------------------


def test_an_unknown_host_key_is_refused_and_nothing_is_pushed(esxi: Esxi, tmp_path: Path) -> None:
    """known_hosts does not hold the host's key: ssh refuses (StrictHostKeyChecking=yes), the
    agent says how to add it after checking its fingerprint, and never adds it itself."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    esxi.world.issue(NAME)
    before = esxi.host.ssl_files()

    result = esxi.run(options={"known_hosts": str(known_hosts)})

    assert result["status"] == "failed"
    assert f"is not in {known_hosts}" in result["message"]
    assert "nothing was sent to the host" in result["message"]
    assert f"ssh-keyscan -p {esxi.sshd.port} 127.0.0.1 >> {known_hosts}" in result["message"]
    assert known_hosts.read_text() == ""
    unchanged(esxi, before)


def test_a_changed_host_key_is_refused_and_nothing_is_pushed(esxi: Esxi, tmp_path: Path) -> None:
    """known_hosts holds another key for [127.0.0.1]:port (a reinstalled host, or a man in the
    middle): refused, with the ssh-keygen -R line to run once the new key is checked."""
    impostor = make_ssh_key(tmp_path / "impostor")
    kind, blob = impostor.with_name("impostor.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{esxi.sshd.port} {kind} {blob}\n")
    esxi.world.issue(NAME)
    before = esxi.host.ssl_files()

    result = esxi.run(options={"known_hosts": str(known_hosts)})

    assert result["status"] == "failed"
    assert "has CHANGED" in result["message"]
    assert f"ssh-keygen -f {known_hosts} -R '[127.0.0.1]:{esxi.sshd.port}'" in result["message"]
    unchanged(esxi, before)


def test_a_login_refused_is_a_clear_error(esxi: Esxi, tmp_path: Path) -> None:
    """The identity is not in the host's authorized keys: the error names the key and where
    ESXi keeps root's authorized keys."""
    stranger = make_ssh_key(tmp_path / "stranger")
    esxi.world.issue(NAME)
    before = esxi.host.ssl_files()

    result = esxi.run(options={"identity_file": str(stranger)})

    assert result["status"] == "failed"
    assert f"SSH login as root on root@127.0.0.1:{esxi.sshd.port} refused with the key {stranger}" \
        in result["message"]
    assert "/etc/ssh/keys-root/authorized_keys" in result["message"]
    unchanged(esxi, before)


def test_a_missing_identity_file_is_a_clear_error(esxi: Esxi, tmp_path: Path) -> None:
    esxi.world.issue(NAME)
    before = esxi.host.ssl_files()
    result = esxi.run(options={"identity_file": str(tmp_path / "nope")})
    assert result["status"] == "failed"
    assert f"SSH identity file {tmp_path / 'nope'}" in result["message"] and "ssh-keygen" in result["message"]
    unchanged(esxi, before)


def test_a_host_key_file_readable_by_others_is_not_pushed(esxi: Esxi) -> None:
    """The host's TLS key on the management host must be 0600: one loose key file would expose
    an ESXi host; the agent refuses to push it and says how to fix it."""
    esxi.world.issue(NAME)
    esxi.key.chmod(0o644)
    before = esxi.host.ssl_files()
    result = esxi.run()
    assert result["status"] == "failed"
    assert f"private key {esxi.key} has mode 0644" in result["message"]
    assert f"chmod 600 {esxi.key}" in result["message"]
    unchanged(esxi, before)


def test_a_symbolic_link_on_the_host_is_refused(esxi: Esxi, tmp_path: Path) -> None:
    """rui.crt is a symlink on the host: never read through, never replaced."""
    elsewhere = tmp_path / "elsewhere.crt"
    elsewhere.write_bytes(esxi.host.crt.read_bytes())
    esxi.host.crt.unlink()
    esxi.host.crt.symlink_to(elsewhere)
    esxi.world.issue(NAME)
    result = esxi.run()
    assert result["status"] == "failed"
    assert f"{esxi.host.crt} is a symbolic link" in result["message"]
    assert esxi.host.crt.is_symlink() and esxi.host.backups() == []


def test_a_dry_run_describes_the_push_and_changes_nothing(esxi: Esxi) -> None:
    esxi.world.issue(NAME)
    before = esxi.host.ssl_files()
    result = esxi.run("--dry-run")
    assert result["status"] == "would-install"
    where = f"root@127.0.0.1:{esxi.sshd.port}"
    assert f"on {where}: write {esxi.host.crt} (leaf + CA chain, mode 0644)" in result["plan"]
    assert f"on {where}: write {esxi.host.key} (the private key {esxi.key}, mode 0600)" in result["plan"]
    assert f"then: reload: {esxi.host.reload_command}" in result["plan"]
    unchanged(esxi, before)
    assert esxi.host.log("hostd") == ""


def test_status_reads_the_host_over_ssh(esxi: Esxi) -> None:
    """``lecentral-install status`` shows the certificate on the host (read over SSH, nothing
    written) and that port 443 serves it."""
    leaf = esxi.world.issue(NAME)
    assert esxi.run()["status"] == "installed"
    before = esxi.host.ssl_files()
    out = esxi.world.run("status", "--json")
    assert out.exit_code == 0, out.stderr
    (row,) = json.loads(out.stdout)["certs"]
    assert row["installed"]["fingerprint"] == leaf.fingerprint
    assert row["served"] == {esxi.host.url: {"fingerprint": leaf.fingerprint, "is_installed": True}}
    assert row["state"].startswith("up to date")
    assert esxi.host.ssl_files() == before


# -- undone after the switch --------------------------------------------------------------------


def test_a_failed_persist_puts_the_old_pair_back_before_any_restart(esxi: Esxi) -> None:
    """auto-backup.sh fails: the new pair would not survive a reboot, so it is taken back at
    once; nothing was restarted."""
    esxi.world.issue(NAME)
    before = esxi.host.pair()
    esxi.host.break_persist()
    result = esxi.run()
    assert result["status"] == "failed"
    assert "bootbank is read-only" in result["message"]
    assert "The previous pair was put back on the host." in result["message"]
    assert esxi.host.pair() == before
    assert esxi.host.log("hostd") == ""
    assert not esxi.journal().exists()


def test_backups_on_the_host_are_pruned_to_keep(esxi: Esxi) -> None:
    esxi.world.agent["keep"] = 2
    for days in (30, 31, 32):
        esxi.world.issue(NAME, days=days)
        assert esxi.run()["status"] == "installed"
    assert len(esxi.host.backups("rui.crt")) == 2 and len(esxi.host.backups("rui.key")) == 2


# -- a run killed half way ------------------------------------------------------------------------


def _interrupted_switch(esxi: Esxi, *, key_renamed: bool) -> tuple[bytes, str]:
    """The host and journal as a killed switch leaves them: with ``key_renamed``, killed between
    the two renames (the key is in place, the certificate's temp file complete); without, killed
    while writing the certificate's temp file (half of it there, no key temp file yet)."""
    leaf = esxi.world.issue(NAME)
    row = esxi.world.store.get(NAME)
    assert row is not None and row.crt and row.ca
    crt, key = row.crt + row.ca, esxi.key.read_bytes()
    stamp = "20250101T000000Z-abcdef"
    ssl = esxi.host.ssl_dir
    for name in ("rui.crt", "rui.key"):
        (ssl / scripts.backup_name(name, stamp)).write_bytes((ssl / name).read_bytes())
    (ssl / scripts.temp_name("rui.crt", stamp)).write_bytes(crt if key_renamed else crt[:len(crt) // 2])
    import hashlib

    journal = {"state": "staging", "host": f"root@127.0.0.1:{esxi.sshd.port}", "dir": str(ssl), "stamp": stamp,
               "crt_sha256": hashlib.sha256(crt).hexdigest(), "key_sha256": hashlib.sha256(key).hexdigest(),
               "existed": {"rui.crt": True, "rui.key": True},
               "old_crt": esxi.host.crt.read_text()}
    esxi.journal().parent.mkdir(parents=True, mode=0o700)
    esxi.journal().write_text(json.dumps(journal))
    os.chmod(esxi.journal(), 0o600)
    return crt, leaf.fingerprint


@pytest.mark.parametrize(("key_renamed", "message"), [
    (True, "finishing an interrupted install"),
    (False, "newer certificate"),
], ids=["killed-between-renames", "killed-while-writing"])
def test_a_switch_killed_half_way_is_finished_or_undone_by_the_next_run(
        esxi: Esxi, key_renamed: bool, message: str) -> None:
    """Killed between the renames: the certificate's complete temp file is renamed into place,
    then the services restarted and verified. Killed while writing: the half-written temp file
    is dropped (the old pair never changed) and this run installs as usual. Either way the pair
    is never left mismatched and no temp file stays."""
    crt, fingerprint = _interrupted_switch(esxi, key_renamed=key_renamed)
    result = esxi.run()
    assert result["status"] == "installed", result
    assert message in result["message"]
    assert esxi.host.crt.read_bytes() == crt and result["fingerprint"] == fingerprint
    assert not [n for n in esxi.host.ssl_files() if "-new-" in n]
    assert not esxi.journal().exists()
