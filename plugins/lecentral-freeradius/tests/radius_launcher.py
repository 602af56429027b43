"""Debian's FreeRADIUS 3 with a configuration directory of its own, on 127.0.0.1 (UDP).

The launcher copies ``/etc/freeradius/3.0`` into its workdir and changes only what a second
instance on a shared machine needs: its own ``raddbdir``, log and run directories, the listeners
of the ``default`` and ``inner-tunnel`` virtual servers on 127.0.0.1 and dynamic ports (no proxy
socket on ``*``), root instead of ``freerad`` (pytest's temp dirs are 0700), no reject delay, a
client ``127.0.0.1`` with a random shared secret (Message-Authenticator required, as hardened
servers do) and one test user. The EAP module's ``tls-common`` reads ``cert``, ``key`` and
``chain`` where they are (``certificate_file``, ``private_key_file``, ``ca_file``): for the
chroot case the caller simply passes paths inside a directory tree laid out as a chroot.

FreeRADIUS reads its certificate only at start. :meth:`FreeradiusServer.start` runs it in the
foreground (``freeradius -f``, log captured, stopped by pid); :attr:`FreeradiusServer.restart_command`
is what the agent's ``reload`` runs: stop by pid file, start again in forking mode, exit non-zero
if the new instance does not come up (see :mod:`lecentral_testing.daemons.forking`).

Debian packages: freeradius (and freeradius-utils, eapoltest for the EAP checks).
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
from pathlib import Path
from typing import Self

from lecentral_testing.daemons.forking import live_pid, restart_argv, stop_by_pid_file
from lecentral_testing.ports import LOOPBACK, free_port, port_is_free
from lecentral_testing.process import (
    Daemon,
    ManagedServer,
    ServerStartError,
    find_executable,
    run_tool,
    start_retrying_ports,
)

SOURCE_DIR = Path("/etc/freeradius/3.0")
READY_MARK = "Ready to process requests"


def drop_listen_sections(text: str) -> str:
    """``text`` without its top-level-in-server ``listen { ... }`` blocks (comments ignored)."""
    out: list[str] = []
    depth = 0
    skipping = False
    for line in text.splitlines(keepends=True):
        code = line.split("#", 1)[0]
        if not skipping and re.match(r"\s*listen\s*\{", code):
            skipping, depth = True, 0
        if skipping:
            depth += code.count("{") - code.count("}")
            skipping = depth > 0
            continue
        out.append(line)
    return "".join(out)


def _replace(text: str, pattern: str, replacement: str, where: Path) -> str:
    """Replace the first match of ``pattern``; ServerStartError if Debian's file no longer has it."""
    new, count = re.subn(pattern, lambda _: replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise ServerStartError(f"freeradius: {where} has no line matching {pattern!r}; the launcher "
                               "needs updating for this FreeRADIUS version")
    return new


class FreeradiusServer(ManagedServer):
    """FreeRADIUS answering on ``address:auth_port`` with EAP (TLS, TTLS, PEAP) on the given files."""

    kind = "freeradius"
    address = LOOPBACK

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 chain: Path | str, source: Path = SOURCE_DIR) -> None:
        super().__init__(workdir)
        self.cert, self.key, self.chain = Path(cert), Path(key), Path(chain)
        self.source = source
        self._freeradius = find_executable("freeradius", package="freeradius")
        #: the shared secret of the 127.0.0.1 client, and a user the ``files`` module accepts
        self.secret = secrets.token_urlsafe(18)
        self.user = "lecentral-test"
        self.password = secrets.token_urlsafe(12)
        self.dir = self.workdir / "freeradius"
        self.confdir = self.dir / "raddb"
        self.log_dir = self.dir / "log"
        self.run_dir = self.dir / "run"
        self.pid_path = self.run_dir / "freeradius.pid"
        #: "auth" (the server's port) and "inner" (the inner-tunnel's), filled on the first start
        self.ports: dict[str, int] = {}
        self._daemon_proc: Daemon | None = None

    # ------------------------------------------------------------------ the API

    @property
    def auth_port(self) -> int:
        return self.ports["auth"]

    @property
    def running(self) -> bool:
        """True while the foreground instance, or one started by a restart, runs."""
        foreground = self._daemon_proc is not None and self._daemon_proc.running
        return foreground or live_pid(self.pid_path, str(self.confdir)) is not None

    @property
    def check_argv(self) -> list[str]:
        """``freeradius -C``: load every module (the EAP certificates too), then exit."""
        return [self._freeradius, "-C", "-l", "stdout", "-d", str(self.confdir)]

    @property
    def check_command(self) -> str:
        return shlex.join(self.check_argv)

    @property
    def restart_argv(self) -> list[str]:
        """Stop by pid file, start in forking mode; non-zero if the new instance fails to start."""
        argv = [self._freeradius, "-d", str(self.confdir)]
        return restart_argv(self.pid_path, str(self.confdir), argv, self.dir / "restart.log")

    @property
    def restart_command(self) -> str:
        """:attr:`restart_argv` as one string (the agent's ``reload =`` setting)."""
        return shlex.join(self.restart_argv)

    def start(self) -> Self:
        """Start in the foreground; returns once the server is ready and holds its port."""
        if self.running:
            return self
        first_start = not self.ports

        def attempt() -> None:
            if first_start:
                self.ports = {"auth": free_port(udp=True), "inner": free_port(udp=True)}
                shutil.rmtree(self.confdir, ignore_errors=True)
            self._write_config()
            argv = [self._freeradius, "-f", "-l", "stdout", "-d", str(self.confdir)]
            self._daemon_proc = Daemon("freeradius", argv, log_path=self.dir / "freeradius.log",
                                       cwd=self.dir)
            self._daemon_proc.start(self._ready, timeout=30)
            # In the foreground FreeRADIUS writes no pid file; the restart command needs one.
            self.pid_path.write_text(f"{self._daemon_proc.pid}\n")

        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        return self

    def stop(self) -> None:
        """Stop whichever instance runs (the foreground one, or one a restart started)."""
        if self._daemon_proc is not None:
            self._daemon_proc.stop()
        stop_by_pid_file(self.pid_path, str(self.confdir))

    def restart(self) -> None:
        """Run :attr:`restart_argv` (as the agent's reload would); ServerStartError if it fails."""
        run_tool(self.restart_argv, what="restarting freeradius", log_path=self.dir / "commands.log")

    def config_test(self) -> str:
        """Run :attr:`check_argv`; return its output, or raise ServerStartError quoting it."""
        return run_tool(self.check_argv, what="freeradius configuration test",
                        log_path=self.dir / "commands.log")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the foreground instance logged (a restarted one logs to log/radius.log)."""
        return self._daemon_proc.log_tail(lines) if self._daemon_proc is not None else "(not started)"

    # ------------------------------------------------------------ configuration

    def _ready(self) -> bool:
        return READY_MARK in self.log_tail(400) and not port_is_free(self.auth_port, udp=True)

    def _write_config(self) -> None:
        if self.confdir.is_dir():
            return  # kept across restarts, with whatever a test changed in it
        for path in (self.log_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.source, self.confdir, symlinks=True)
        conf = self.confdir
        self._edit(conf / "radiusd.conf", [
            (r"^raddbdir = .*$", f"raddbdir = {conf}"),
            (r"^logdir = .*$", f"logdir = {self.log_dir}"),
            (r"^run_dir = .*$", f"run_dir = {self.run_dir}"),
            (r"^proxy_requests\s*=.*$", "proxy_requests = no"),
            (r"^\s*reject_delay = .*$", "\treject_delay = 0"),
            (r"^\s*user = .*$", "\t# user: root here (pytest's temp dirs are 0700)"),
            (r"^\s*group = .*$", "\t# group: see user"),
        ])
        self._edit(conf / "mods-available" / "eap", [
            (r"^\s*private_key_file = .*$", f"\t\tprivate_key_file = {self.key}"),
            (r"^\s*certificate_file = .*$", f"\t\tcertificate_file = {self.cert}"),
            (r"^\s*ca_file = .*$", f"\t\tca_file = {self.chain}"),
        ])
        (conf / "clients.conf").write_text(
            f"client lecentral-test {{\n\tipaddr = {self.address}\n\tsecret = {self.secret}\n"
            "\trequire_message_authenticator = yes\n\tshortname = lecentral-test\n}\n")
        authorize = conf / "mods-config" / "files" / "authorize"
        authorize.write_text(f'{self.user} Cleartext-Password := "{self.password}"\n\n'
                             + authorize.read_text())
        self._set_listeners()

    def _edit(self, path: Path, changes: list[tuple[str, str]]) -> None:
        text = path.read_text()
        for pattern, replacement in changes:
            text = _replace(text, pattern, replacement, path)
        path.write_text(text)

    def _set_listeners(self) -> None:
        """The default server on 127.0.0.1:auth only; the inner tunnel on 127.0.0.1:inner."""
        available, enabled = self.confdir / "sites-available", self.confdir / "sites-enabled"
        listen = f"listen {{\n\ttype = auth\n\tipaddr = {self.address}\n\tport = {self.auth_port}\n}}\n"
        site = drop_listen_sections((available / "default").read_text())
        site = _replace(site, r"^server default \{\n", f"server default {{\n{listen}", available / "default")
        inner = _replace((available / "inner-tunnel").read_text(), r"^\s*port = 18120\s*$",
                         f"\tport = {self.ports['inner']}", available / "inner-tunnel")
        for name, text in (("default", site), ("inner-tunnel", inner)):
            (enabled / name).unlink(missing_ok=True)  # a symlink into sites-available
            (enabled / name).write_text(text)
