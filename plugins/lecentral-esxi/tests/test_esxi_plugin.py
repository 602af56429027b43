"""The ``esxi`` service plugin against Debian's real OpenSSH server and a fake ESXi host behind it.

Real parts: ``sshd`` (:class:`~sshd_server.SshServer`, the session fixture
``sshd_server``) on 127.0.0.1 with its own host key, the system's ``ssh`` client driven by the
plugin, and, behind it, a directory laid out like an ESXi host whose init scripts restart a real
TLS listener (``openssl s_server``, see ``esxi_fake_host.py``). The one thing not real is ESXi
itself, which cannot run here: the host's root is a temp dir reached through ``remote_dir`` and
the commands' paths. Every run is the real ``lecentral-install run`` through the service
contract (:mod:`lecentral_testing.service_contract`).

Certificates: the database is filled by :class:`~lecentral_testing.agent.TestCA` (a real CA
signing the CSR made from the host's key, leaf + CA chain like Pebble's); the placeholders on
the host are self-signed (:mod:`lecentral_testing.pki`). Which CA signed them does not matter to
``openssl s_server`` or to the checks, which compare SHA-256 fingerprints.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from esxi_fake_host import FakeEsxiHost
from lecentral_testing.service_contract import (
    Contract,
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)
from sshd_launcher import SshServer

from lecentral.install.csr import KeySpec, make_csr


class EsxiHarness(ServiceHarness):
    """A fake ESXi host whose rui.crt/rui.key start as the contract's placeholder pair."""

    service = "esxi"
    host: FakeEsxiHost

    def __init__(self, workdir: Path, sshd: SshServer) -> None:
        super().__init__(workdir)
        self.sshd = sshd

    def start(self, files: ContractFiles) -> None:
        self.host = FakeEsxiHost(self.workdir, crt=files.cert.read_bytes(),
                                 key=files.key.read_bytes()).start()

    def stop(self) -> None:
        self.host.stop()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        # ``cert`` stays the contract's file: the management host's copy of the host's rui.crt
        return {"chain": "", "fullchain": "", "check": self.host.check_command,
                "reload": self.host.reload_command, "verify": self.host.url,
                "options": self.host.options(self.sshd)}

    def break_config(self) -> None:
        self.host.break_config()


class TestEsxi(ServiceContract):
    """The service contract over SSH, plus what is special about pushing to an ESXi host."""

    @pytest.fixture
    def harness(self, tmp_path: Path, sshd_server: SshServer) -> ServiceHarness:
        return EsxiHarness(tmp_path / "esxi", sshd_server)

    @staticmethod
    def host(contract: Contract) -> FakeEsxiHost:
        return contract.harness.host  # type: ignore[attr-defined, no-any-return]

    def test_first_install_pushes_the_pair_backs_up_restarts_and_persists(self, contract: Contract) -> None:
        """rui.crt gets leaf + CA, rui.key the management host's key (0600); the old pair is kept
        on the host as ``*.lecentral-<time>``; hostd and rhttpproxy restart with the new pair; the
        configuration is saved for the next boot; the management host keeps a copy of rui.crt."""
        host = self.host(contract)
        old_crt, old_key = host.pair()
        leaf = self.first_install(contract)
        row = contract.world.store.get(contract.name)
        assert row is not None and row.crt and row.ca
        crt, key = host.pair()
        assert crt == row.crt + row.ca and crt.startswith(leaf.pem)
        assert key == contract.files.key.read_bytes()
        assert oct(host.key.stat().st_mode & 0o777) == "0o600"
        assert oct(host.crt.stat().st_mode & 0o777) == "0o644"
        (crt_backup,), (key_backup,) = host.backups("rui.crt"), host.backups("rui.key")
        files = host.ssl_files()
        assert files[crt_backup] == old_crt and files[key_backup] == old_key
        assert not [n for n in files if "-new-" in n or "restore" in n], files
        assert f"restart {hashlib.sha256(crt).hexdigest()[:16]}" in host.log("hostd")
        assert host.log("rhttpproxy").count("started") == 2  # the fixture's start, the agent's restart
        assert host.persisted() == (crt, key)
        assert contract.files.cert.read_bytes() == crt

    def test_the_key_never_reaches_a_log_or_the_output(self, contract: Contract) -> None:
        """The pushed key travels on ssh's stdin only: not in the agent's output, not in sshd's log."""
        leaf = contract.world.issue(contract.name, days=30)
        contract.write_config()
        out = contract.world.run("-vv", "run", "--json")
        assert out.by_name(contract.name)["status"] == "installed", out.stderr
        key_lines = [line for line in contract.files.key.read_text().splitlines() if "-----" not in line]
        harness: EsxiHarness = contract.harness  # type: ignore[assignment]
        for text in (out.stdout, out.stderr, harness.sshd.log_text()):
            assert not any(line in text for line in key_lines)
        contract.wait_presented(leaf.fingerprint)

    def test_a_restart_that_refuses_the_new_pair_is_rolled_back(self, contract: Contract) -> None:
        """The admin rotated the key to ECDSA; the host's rhttpproxy only takes RSA (as ESXi before
        8.0) and fails to start: the old pair is put back over SSH, the services restarted, the
        old certificate is served again, and the configuration saved is the old pair's."""
        first = self.first_install(contract)
        host = self.host(contract)
        new_key = contract.files.key.with_name("rotated.key")
        csr, _ = make_csr(contract.name, [], new_key, KeySpec("ec", curve="p256"), force=False)
        contract.world.store.set_csr(contract.name, csr.pem, csr.md5_modulus)  # lecentral set-csr
        contract.world.issue(contract.name, days=60)
        contract.write_config(key=str(new_key))
        before, local = host.pair(), contract.snapshot()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert "not an RSA key" in result["message"] and "serves the previous certificate" in result["message"]
        assert host.pair() == before and host.persisted() == before
        assert contract.snapshot() == local
        contract.wait_presented(first.fingerprint)

    def test_a_new_chain_is_pushed_and_a_staged_key_is_left_to_the_operator(self, contract: Contract) -> None:
        """A new CA chain behind the same leaf is pushed again (rui.crt holds leaf + chain). A
        staged rotation (``csr --rotate``: KEY.next) cannot be switched by this service, which
        pushes the management host's key file: the run fails naming the manual step, nothing is
        pushed; after ``mv KEY.next KEY`` the next run pushes the new pair."""
        import os

        self.first_install(contract)
        host, world, name = self.host(contract), contract.world, contract.name
        row = world.store.get(name)
        assert row is not None and row.crt
        chain = world.ca.reissued()
        world.store.save_issued(name, row.crt, chain, row.ts_expire, row.ts_last_update)
        result = contract.run()
        assert result["status"] == "installed" and "new CA chain" in result["message"], result
        assert host.pair()[0] == row.crt + chain
        assert contract.run()["status"] == "up-to-date"

        key = contract.files.key
        pending = key.with_name(key.name + ".next")
        csr, _ = make_csr(name, [], key, None, force=False, rotate=True)
        world.store.set_csr(name, csr.pem, csr.md5_modulus)  # lecentral set-csr
        new = world.issue(name, days=60)
        before = host.pair()
        result = contract.run()
        assert result["status"] == "failed" and f"move {pending} over {key}" in result["message"], result
        assert host.pair() == before
        os.replace(pending, key)
        assert contract.run()["status"] == "installed"
        assert host.pair() == (new.pem + world.ca.pem, key.read_bytes())  # issue() stores the CA's own
        contract.wait_presented(new.fingerprint)

    def test_a_restart_that_always_fails_is_a_failed_rollback_with_the_old_pair_back(
            self, contract: Contract) -> None:
        """hostd's init script fails whatever the certificate: the old pair goes back on the host,
        but its restart fails too, so the result says the rollback failed and why."""
        self.first_install(contract)
        host = self.host(contract)
        contract.world.issue(contract.name, days=60)
        before = host.pair()
        host.break_hostd()

        result = contract.run()

        assert result["status"] == "rollback-failed", result
        assert "hostd: watchdog: failed to start" in result["message"]
        assert "the previous files were put back" in result["message"]
        assert host.pair() == before

    def test_a_killed_run_is_finished_by_the_next(self, contract: Contract) -> None:
        """A run killed after the switch, before the restart (here: by its own config test, which
        kills the agent with SIGKILL), leaves the journal at ``switched``; the next run restarts
        the services, verifies, and reports the install."""
        import subprocess
        import sys

        self.first_install(contract)
        host = self.host(contract)
        renewed = contract.world.issue(contract.name, days=60)
        pid_file = contract.world.workdir / "agent.pid"
        contract.write_config(check=f"kill -9 $(cat {pid_file})")
        code = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
                "from lecentral.cli.agent import main; sys.argv[1:2] = []; main()")
        agent = [sys.executable, "-c", code, str(pid_file), "--config", str(contract.world.config_path), "run"]
        killed = subprocess.run(agent, capture_output=True, text=True, timeout=120, check=False)
        assert killed.returncode == -9, killed.stderr
        assert host.pair()[0].startswith(renewed.pem)  # switched, not yet restarted

        contract.write_config()
        result = contract.run()

        assert result["status"] == "installed", result
        assert "interrupted" in result["message"]
        contract.wait_presented(renewed.fingerprint)
        assert contract.run()["status"] == "up-to-date"
