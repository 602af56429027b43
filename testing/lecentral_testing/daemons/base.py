"""What every TLS test daemon shares: ports, verify URLs, reload, wait for a certificate.

A launcher subclasses :class:`TlsServer`, says which listeners it has (:meth:`TlsServer.listeners`),
writes its config (:meth:`TlsServer.write_config`) and builds its :class:`Daemon`
(:meth:`TlsServer.daemon`). The base picks free ports (retrying on a port race), starts and
probes the daemon, and offers the things tests and the agent need: the verify URLs, the command
lines the real service would use to test its config and reload, and :meth:`TlsServer.reload`
that waits until the new certificate is really presented.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

from lecentral.errors import VerifyError
from lecentral_testing.daemons.certs import CertFiles, pem_fingerprint, write_atomic
from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    ManagedServer,
    ServerStartError,
    run_tool,
    start_retrying_ports,
    tcp_open,
)


def _processes() -> Iterator[tuple[int, str, str, int, int]]:
    """(pid, comm, state, ppid, pgrp) of every process, from /proc/PID/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, tail = (entry / "stat").read_text().rpartition(")")
        except OSError:  # gone meanwhile
            continue
        fields = tail.split()
        yield int(entry.name), head.partition("(")[2], fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    return [pid for pid, _, state, _, group in _processes() if group == pgid and state != "Z"]


class TlsServer(ManagedServer):
    """A real daemon presenting ``cert``/``key`` on 127.0.0.1, one dynamic port per listener.

    ``cert``, ``key`` and ``chain`` are read by the daemon where they are: overwrite them (as the
    agent does) and call :meth:`reload` to have the daemon present the new certificate.
    """

    kind = "tls"
    address = LOOPBACK
    #: True when the daemon wants the leaf followed by the chain in ``cert`` (nginx, Dovecot)
    cert_is_fullchain = False
    #: names of the child processes that accept connections with the certificate they loaded
    #: (nginx workers, smtpd, imap-login...): a reload is complete once the old ones are gone
    serving_processes: tuple[str, ...] = ()

    def __init__(self, workdir: Path | str | None, *, cert: Path | str, key: Path | str,
                 chain: Path | str | None = None) -> None:
        super().__init__(workdir)
        self.cert = Path(cert).resolve()
        self.key = Path(key).resolve()
        self.chain = Path(chain).resolve() if chain is not None else None
        for path in (self.cert, self.key, *([self.chain] if self.chain else [])):
            if not path.is_file():
                raise ServerStartError(f"{self.kind}: certificate file {path} does not exist")
        #: listener name -> port, filled on the first start and kept across restarts
        self.ports: dict[str, int] = {}
        self._daemon_proc: Daemon | None = None

    # ------------------------------------------------------------ for subclasses
    # The hooks a launcher implements (public, docs/testing.md "Writing a launcher"; before 0.1
    # they were _listeners, _write_config, _daemon and _prepare).

    def listeners(self) -> Mapping[str, str]:
        """Listener name -> verify URL scheme (``{"smtp": "smtp+starttls", "smtps": "smtps"}``)."""
        raise NotImplementedError

    def write_config(self) -> None:
        """Write the daemon's configuration for :attr:`ports` (called before every start)."""
        raise NotImplementedError

    def daemon(self) -> Daemon:
        """The foreground daemon process to start."""
        raise NotImplementedError

    def prepare(self) -> None:
        """One-shot set-up run after the config is written and before the daemon starts."""

    @property
    def reload_argv(self) -> list[str]:
        """The command that makes the running daemon re-read its certificate, as its admin would."""
        raise NotImplementedError

    @property
    def check_argv(self) -> list[str]:
        """The daemon's own configuration test (``nginx -t``, ``apache2 -t``, ``postfix check``...)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the API

    @property
    def verify_urls(self) -> dict[str, str]:
        """Listener name -> verify URL, e.g. ``{"imap": "imap+starttls://127.0.0.1:40123", ...}``."""
        return {name: f"{scheme}://{self.address}:{self.ports[name]}"
                for name, scheme in self.listeners().items() if name in self.ports}

    @property
    def reload_command(self) -> str:
        """:attr:`reload_argv` as one shell-quoted string (the agent's ``reload =`` setting)."""
        return shlex.join(self.reload_argv)

    @property
    def check_command(self) -> str:
        """:attr:`check_argv` as one shell-quoted string."""
        return shlex.join(self.check_argv)

    @property
    def running(self) -> bool:
        """True while the daemon's main process runs."""
        return self._daemon_proc is not None and self._daemon_proc.running

    @property
    def pid(self) -> int | None:
        """pid of the daemon's main process."""
        return self._daemon_proc.pid if self._daemon_proc is not None else None

    def start(self) -> Self:
        """Start the daemon; returns once every listener accepts connections."""
        if self.running:
            return self
        first_start = not self.ports

        def attempt() -> None:
            if first_start:
                self.ports = {name: free_port() for name in self.listeners()}
            self.write_config()
            self.prepare()
            self._daemon_proc = self.daemon()
            self._daemon_proc.start(self._listening, timeout=30)

        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        return self

    @property
    def pid_path(self) -> Path | None:
        """The pid file the daemon writes (its reload command reads it), or None."""
        return None

    def _listening(self) -> bool:
        if not all(tcp_open(self.address, port) for port in self.ports.values()):
            return False
        # Ports open before the pid file is written (Apache, nginx): a reload in that window finds
        # no daemon, and "apache2 -k graceful" would even start a second one, outside our control.
        if self.pid_path is None or self._daemon_proc is None:
            return True
        try:
            return self.pid_path.read_text().strip() == str(self._daemon_proc.pid)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the daemon by pid (its config and ports stay for the next :meth:`start`).

        Returns once its children are gone too: Postfix's master, for one, exits at once and
        leaves its children to finish on their own, still holding the queue.
        """
        if self._daemon_proc is None or self._daemon_proc.pid is None:
            return
        group = self._daemon_proc.pid  # started with start_new_session: its pid is its group
        self._daemon_proc.stop()
        self._stop_stray()
        self._wait_gone(group)

    def _stop_stray(self) -> None:
        """Stop a daemon of *our* config started behind our back, e.g. by ``apache2 -k graceful``
        or ``-k restart`` run while ours was down (they start a detached one), found by pid file."""
        try:
            pid = int(self.pid_path.read_text().strip()) if self.pid_path is not None else 0
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") if pid else ""
        except (OSError, ValueError):
            return
        marker = str(getattr(self, "conf", None) or getattr(self, "config_dir", ""))
        if not marker or marker not in cmdline:  # pid reused by someone else: not ours to stop
            return
        try:
            group = os.getpgid(pid)
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        self._wait_gone(group)

    @staticmethod
    def _wait_gone(group: int) -> None:
        deadline = time.monotonic() + 10
        while group_members(group):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
                break
            time.sleep(0.05)

    def restart(self, *, expect: str | None = None) -> None:
        """Stop and start again (how slapd takes a new certificate); see :meth:`reload` for ``expect``."""
        self.stop()
        self.start()
        if expect is not None:
            self.wait_presented(expect)

    def reload(self, *, expect: str | None = None, timeout: float = 30.0) -> None:
        """Run :attr:`reload_argv`; with ``expect``, wait until every listener presents that fingerprint.

        Reloads are asynchronous in every daemon here (old workers finish first), so a caller
        that needs the new certificate must wait for it, as the agent's verification does.
        """
        if not self.running:
            raise ServerStartError(f"{self.kind} is not running; start() it first")
        old = self.serving_pids()
        run_tool(self.reload_argv, what=f"reloading {self.kind}", log_path=self.workdir / "commands.log")
        self.wait_settled(old, timeout=timeout)
        if expect is not None:
            self.wait_presented(expect, timeout=timeout)

    def serving_pids(self) -> set[int]:
        """pids of the children that now accept connections (see :attr:`serving_processes`).

        Take them before a reload run by someone else (the agent) and pass them to
        :meth:`wait_settled`: until those are gone, old and new certificates may alternate.
        """
        main = self.pid
        if main is None or not self.serving_processes:
            return set()
        return {pid for pid, comm, state, ppid, _ in _processes()
                if ppid == main and comm in self.serving_processes and state != "Z"}

    def wait_settled(self, old: set[int], timeout: float = 30.0) -> None:
        """Wait until none of the ``old`` serving processes is left (they finish after a reload)."""
        deadline = time.monotonic() + timeout
        while left := old & self.serving_pids():
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.kind}: processes {sorted(left)} from before the reload "
                                       f"still run after {timeout:.0f}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def config_test(self) -> str:
        """Run :attr:`check_argv`; return its output, or raise ServerStartError quoting it."""
        return run_tool(self.check_argv, what=f"{self.kind} configuration test",
                        log_path=self.workdir / "commands.log")

    def presented_fingerprint(self, listener: str, timeout: float = 5.0) -> str:
        """SHA-256 hex of the leaf ``listener`` presents now (through the real verifier code)."""
        import hashlib

        from lecentral.verify import fetch_leaf, parse_verify_url

        url = self.verify_urls[listener]
        return hashlib.sha256(fetch_leaf(parse_verify_url(url), timeout)).hexdigest()

    def wait_presented(self, fingerprint: str, *, timeout: float = 30.0,
                       listeners: Sequence[str] | None = None) -> None:
        """Wait until each listener presents ``fingerprint``; ServerStartError if one never does."""
        deadline = time.monotonic() + timeout
        for listener in listeners or list(self.verify_urls):
            seen = ""
            while True:
                try:
                    seen = self.presented_fingerprint(listener)
                except VerifyError as exc:
                    seen = str(exc)
                if seen == fingerprint:
                    break
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.kind} {listener} ({self.verify_urls[listener]}) still presents "
                        f"{seen} after {timeout:.0f}s, not {fingerprint}; log:\n{self.log_tail()}")
                time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the daemon's log."""
        return self._daemon_proc.log_tail(lines) if self._daemon_proc is not None else "(not started)"

    def cert_fingerprint(self) -> str:
        """SHA-256 hex of the leaf now in the ``cert`` file (what a reload will make it present)."""
        return pem_fingerprint(self.cert.read_bytes())

    def put_certificate(self, new: CertFiles) -> str:
        """Overwrite the files this daemon reads with ``new``'s, as the agent would; return the
        new leaf's fingerprint. The daemon presents it only after :meth:`reload` (or a restart).
        """
        write_atomic(self.key, new.key.read_bytes(), 0o600)
        write_atomic(self.cert, (new.fullchain if self.cert_is_fullchain else new.cert).read_bytes())
        if self.chain is not None:
            write_atomic(self.chain, new.chain.read_bytes())
        return new.fingerprint()

    # --------------------------------------------------------------- helpers

    def reachable_dir(self, name: str, user: str | None, *, max_len: int = 80) -> Path:
        """A root-owned 0755 directory that ``user`` can reach (pytest's tmp dirs are 0700 root).

        For daemons whose helper processes, running as ``user``, must find files in it.
        """
        path = self.state_dir(name, user, max_len=max_len)
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
        os.chmod(path, 0o755)
        return path
