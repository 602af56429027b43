"""The OpenSSH launcher itself (:mod:`sshd_launcher`), as other SSH plugins use it.

A private :class:`SshServer` (not the session fixture), since these tests stop it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lecentral_testing.ports import port_is_free
from sshd_launcher import SshServer, make_ssh_key


def test_key_logins_only_host_key_checked_and_stop_frees_the_port(tmp_path: Path) -> None:
    with SshServer(tmp_path / "sshd") as sshd:
        ok = subprocess.run(sshd.ssh_argv("id -un"), capture_output=True, text=True, timeout=60,
                            check=False)
        assert (ok.returncode, ok.stdout) == (0, f"{sshd.user}\n"), ok.stderr

        stranger = make_ssh_key(tmp_path / "stranger")
        refused = subprocess.run(sshd.ssh_argv("true", identity=stranger), capture_output=True,
                                 text=True, timeout=60, check=False)
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr

        sshd.authorize(stranger.with_name("stranger.pub"))
        assert subprocess.run(sshd.ssh_argv("true", identity=stranger), timeout=60,
                              check=False).returncode == 0

        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        unknown = subprocess.run(sshd.ssh_argv("true", known_hosts=empty), capture_output=True,
                                 text=True, timeout=60, check=False)
        assert unknown.returncode == 255 and "Host key verification failed" in unknown.stderr
        assert "Accepted publickey" in sshd.log_text()
        port = sshd.port
    assert port_is_free(port)
