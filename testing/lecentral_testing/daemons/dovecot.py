"""Debian's Dovecot serving IMAP, IMAPS, POP3 and POP3S on 127.0.0.1 with a config of its own.

``dovecot -F -c CONF`` keeps the master in the foreground; base_dir, state_dir and logs live in the
temp dir, so the system's Dovecot (its /run/dovecot sockets, /var/lib/dovecot) is never touched.
``ssl_cert = <CERT`` takes the leaf followed by the chain (pass a full-chain file as ``cert``).
Reload as an admin would: ``doveadm -c CONF reload`` (SIGHUP to the master); new login processes
then present the new certificate. ``doveconf -c CONF -n`` is the config test.

With ``tls=False`` Dovecot runs with ``ssl = no`` and only the plaintext listeners, for
"STARTTLS not offered" tests.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.daemons.certs import write_atomic
from lecentral_testing.process import Daemon, daemon_user, find_executable


class DovecotServer(TlsServer):
    """Dovecot with ``imap`` and ``pop3`` (STARTTLS) and ``imaps`` and ``pop3s`` listeners."""

    kind = "dovecot"
    serving_processes = ("imap-login", "pop3-login")
    cert_is_fullchain = True

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 tls: bool = True, extra_conf: str = "") -> None:
        super().__init__(workdir, cert=cert, key=key)
        self.tls = tls
        self.extra_conf = extra_conf
        self._dovecot = find_executable("dovecot", package="dovecot-core")
        self._doveadm = find_executable("doveadm", package="dovecot-core")
        self._doveconf = find_executable("doveconf", package="dovecot-core")
        # Login processes (dovenull) and auth (dovecot) connect to sockets in base_dir: it must be
        # reachable by them and short enough for a unix socket path.
        login_user = daemon_user("dovenull")
        self.dir = self.reachable_dir("dovecot", login_user, max_len=60)
        self.base_dir = self.dir / "run"
        self.conf = self.dir / "dovecot.conf"
        self.log_file = self.dir / "dovecot.log"

    def listeners(self) -> dict[str, str]:
        listeners = {"imap": "imap+starttls", "pop3": "pop3+starttls"}
        if self.tls:
            listeners.update({"imaps": "imaps", "pop3s": "pop3s"})
        return listeners

    def _listener(self, name: str, ssl: bool) -> str:
        return (f"  inet_listener {name} {{\n    address = {self.address}\n"
                f"    port = {self.ports[name]}\n{'    ssl = yes' + chr(10) if ssl else ''}  }}\n")

    def write_config(self) -> None:
        (self.dir / "state").mkdir(exist_ok=True)
        secure = self.tls
        ssl = (f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{self.key}\n"
               "ssl_min_protocol = TLSv1.2\n") if self.tls else "ssl = no\n"
        imap = self._listener("imap", False) + (self._listener("imaps", True) if secure else "")
        pop3 = self._listener("pop3", False) + (self._listener("pop3s", True) if secure else "")
        text = (
            f"protocols = imap pop3\nlisten = {self.address}\nbase_dir = {self.base_dir}\n"
            f"state_dir = {self.dir / 'state'}\ninstance_name = lecentral-{self.dir.name}\n"
            f"log_path = {self.log_file}\ninfo_log_path = {self.log_file}\n{ssl}"
            # Nobody logs in: a static passdb with a throwaway password keeps auth content.
            "auth_mechanisms = plain\n"
            f"passdb {{\n  driver = static\n  args = password={secrets.token_hex(16)}\n}}\n"
            "userdb {\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}\n"
            f"service imap-login {{\n{imap}}}\nservice pop3-login {{\n{pop3}}}\n{self.extra_conf}"
        )
        write_atomic(self.conf, text.encode(), 0o600)  # it holds the (throwaway) passdb password

    def daemon(self) -> Daemon:
        argv = [self._dovecot, "-F", "-c", str(self.conf)]
        return Daemon("dovecot", argv, log_path=self.log_file, cwd=self.dir)

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "master.pid"

    @property
    def reload_argv(self) -> list[str]:
        return [self._doveadm, "-c", str(self.conf), "reload"]

    @property
    def check_argv(self) -> list[str]:
        return [self._doveconf, "-c", str(self.conf), "-n"]
