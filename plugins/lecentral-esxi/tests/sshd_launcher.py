"""Debian's OpenSSH server on 127.0.0.1, for plugins that push certificates over SSH (ESXi).

:class:`SshServer` runs ``/usr/sbin/sshd -D`` with a configuration, a host key and an
``authorized_keys`` of its own in a temp dir, on a dynamic port; it never reads /etc/ssh and never
touches the system's sshd. It also makes the client side a test needs: an ed25519 identity that the
server accepts (:attr:`SshServer.identity`) and a ``known_hosts`` file holding the server's host key
(:attr:`SshServer.known_hosts`), so ``ssh -o StrictHostKeyChecking=yes`` works with no prompt.

Logins are key-only (no password, no keyboard-interactive, no PAM) as the configured ``user``
(root by default: the account an ESXi host is managed with). ``StrictModes`` is off because
pytest's temp dirs sit under the world-writable /tmp, which sshd would otherwise refuse as the home
of ``authorized_keys``. sshd needs its privilege-separation directory, /run/sshd, which Debian's
unit creates at boot; when it is missing, :meth:`SshServer.start` creates it (root only).

Debian package: openssh-server (and openssh-client for ``ssh-keygen`` and the client side).
"""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path
from typing import Self

from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    ManagedServer,
    ServerStartError,
    find_executable,
    run_tool,
    start_retrying_ports,
)

PRIVSEP_DIR = Path("/run/sshd")


def make_ssh_key(path: Path, comment: str = "lecentral-test") -> Path:
    """An unencrypted ed25519 key pair at ``path`` (0600) and ``path.pub``, made by ssh-keygen."""
    keygen = find_executable("ssh-keygen", package="openssh-client")
    path.parent.mkdir(parents=True, exist_ok=True)
    run_tool([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
             what=f"making SSH key {path}")
    return path


class SshServer(ManagedServer):
    """OpenSSH's sshd on 127.0.0.1, accepting :attr:`identity` for :attr:`user` (see the module doc)."""

    kind = "sshd"

    def __init__(self, workdir: Path | str | None = None, *, user: str = "root") -> None:
        super().__init__(workdir)
        try:
            self.home = Path(pwd.getpwnam(user).pw_dir)
        except KeyError:
            raise ServerStartError(f"sshd: no user {user!r} on this host") from None
        if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != user:
            raise ServerStartError(f"sshd: only root can run an sshd that logs in as {user!r}")
        self.user = user
        self.host = LOOPBACK
        self.port = 0
        self.conf = self.workdir / "sshd_config"
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.authorized_keys = self.workdir / "authorized_keys"
        #: the client's private key, accepted by this server
        self.identity = self.workdir / "client" / "id_ed25519"
        #: a known_hosts file holding this server's host key (written on the first start)
        self.known_hosts = self.workdir / "client" / "known_hosts"
        self.log_path = self.workdir / "sshd.log"
        self._daemon_proc: Daemon | None = None

    # ------------------------------------------------------------------------------------ set-up

    def _prepare_keys(self) -> None:
        if not self.host_key.exists():
            make_ssh_key(self.host_key, "lecentral-test-host")
        if not self.identity.exists():
            make_ssh_key(self.identity, "lecentral-test-client")
            self.authorize(self.identity.with_name("id_ed25519.pub"))

    def authorize(self, public_key: Path) -> None:
        """Accept logins with the key whose ``.pub`` file is ``public_key``."""
        with self.authorized_keys.open("a") as keys:
            keys.write(public_key.read_text().strip() + "\n")
        self.authorized_keys.chmod(0o600)

    @property
    def host_key_line(self) -> str:
        """This server's host key as a known_hosts line: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        kind, blob = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}"

    def _write_config(self) -> None:
        self.conf.write_text(
            f"ListenAddress {self.host}:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"AllowUsers {self.user}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PrintMotd no\n"
            "X11Forwarding no\n"
            "AllowTcpForwarding no\n"
            "LogLevel VERBOSE\n"
        )
        self.known_hosts.write_text(self.host_key_line + "\n")

    @staticmethod
    def _privsep_dir() -> None:
        if PRIVSEP_DIR.is_dir():
            return
        if os.geteuid() != 0:
            raise ServerStartError(f"sshd needs {PRIVSEP_DIR}; create it as root (mode 0755)")
        PRIVSEP_DIR.mkdir(mode=0o755)

    # ------------------------------------------------------------------------------------ the API

    @property
    def running(self) -> bool:
        """True while sshd runs."""
        return self._daemon_proc is not None and self._daemon_proc.running

    def _banner(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")

    def start(self) -> Self:
        """Start sshd (``-D``, logging to :attr:`log_path`); returns once it sends its banner."""
        if self.running:
            return self
        sshd = find_executable("sshd", package="openssh-server")
        self._prepare_keys()
        self._privsep_dir()
        first_start = not self.port

        def attempt() -> None:
            if first_start:
                self.port = free_port()
            self._write_config()
            run_tool([sshd, "-t", "-f", str(self.conf)], what="sshd configuration test")
            self._daemon_proc = Daemon("sshd", [sshd, "-D", "-e", "-f", str(self.conf)],
                                       log_path=self.log_path)
            self._daemon_proc.start(self._banner, timeout=30)

        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        return self

    def stop(self) -> None:
        """Stop the listening sshd by pid (sessions still open end with their clients)."""
        if self._daemon_proc is not None:
            self._daemon_proc.stop()

    def ssh_argv(self, *command: str, identity: Path | None = None,
                 known_hosts: Path | None = None) -> list[str]:
        """An ``ssh`` command line that logs in here non-interactively, host key checked."""
        return ["ssh", "-F", "none", "-p", str(self.port), "-i", str(identity or self.identity),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                "-l", self.user, "--", self.host, *command]

    def log_text(self) -> str:
        """Everything sshd logged (accepted and refused logins, sessions)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
