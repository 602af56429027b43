"""Start, probe and stop the throwaway daemons of the test world; shared by every launcher.

One :class:`Daemon` is one process: started with :class:`subprocess.Popen` (never a shell), its
output appended to a log file in the server's temp dir, polled with a readiness probe until it is
ready (bounded; on failure the error quotes the tail of the log), and stopped by pid (a polite
signal, then SIGKILL to the whole process group). :class:`ManagedServer` is the small base of the
launchers: context manager, temp-dir ownership, "stop everything at exit" safety net;
:class:`DaemonServer` is one of them that runs a single :class:`Daemon`.
"""

from __future__ import annotations

import atexit
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lecentral.errors import LecentralError

#: Log lines that mean "somebody else took the port between free_port() and the daemon's bind".
_PORT_CLASH_MARKERS = (
    "address already in use",
    "address in use",
    "errno 98",
)


class ServerStartError(LecentralError):
    """A throwaway test server could not be prepared or started; the message quotes its log."""


class PortClashError(ServerStartError):
    """The daemon could not bind its port because another process took it first."""


_SQL_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def sql_identifier(name: str) -> str:
    """``name`` if it is a plain SQL identifier (launchers paste it into DDL), else ValueError."""
    if not _SQL_IDENTIFIER_RE.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letter or _, then letters, digits, _; max 63)")
    return name


def find_executable(name: str, *, package: str, extra_dirs: Sequence[str] = ()) -> str:
    """Return the path of ``name``, also looking in sbin and ``extra_dirs`` (globs allowed).

    Non-root PATHs on Debian lack /usr/sbin, where named and mariadbd live, hence the extra dirs.
    """
    found = shutil.which(name)
    if found:
        return found
    for pattern in ("/usr/sbin", "/sbin", *extra_dirs):
        for directory in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            candidate = directory / name
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise ServerStartError(f"{name} not found on PATH nor in /usr/sbin; install it: apt-get install {package}")


def daemon_user(preferred: str) -> str | None:
    """Account a daemon that refuses root must run as: ``preferred`` when we are root, else None.

    As a normal user the daemon simply runs as that user, so nothing needs switching.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(preferred)
    except KeyError:
        raise ServerStartError(
            f"running as root but the system user {preferred!r} does not exist; it is created by the "
            f"server package (apt-get install it) or run the tests as an unprivileged user"
        ) from None
    return preferred


def _user_kwargs(run_as: str | None) -> dict[str, Any]:
    """Popen keyword arguments that drop root to ``run_as`` (its primary group, no extra groups)."""
    if run_as is None:
        return {}
    entry = pwd.getpwnam(run_as)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown_to(path: Path, run_as: str | None) -> None:
    """Give ``path`` to ``run_as`` (no-op when None), so a dropped-privilege daemon can write it."""
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _traversable_by(path: Path, run_as: str) -> bool:
    """True if user ``run_as`` may traverse every directory from / down to ``path``."""
    entry = pwd.getpwnam(run_as)
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if run_as in g.gr_mem}
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == entry.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _die_with_parent(sig: signal.Signals) -> list[str]:
    """An argv prefix making the daemon get ``sig`` when we die, even by SIGKILL; or [].

    atexit does not run when the test runner is killed; without this a named or mariadbd would
    outlive it, holding memory and ports. ``setpriv --pdeathsig`` (util-linux, always on Debian)
    sets it then execs the daemon, so the pid stays the daemon's; unlike a preexec_fn it is safe
    when other threads run. Linux sends the signal when the *thread* that forked exits, so it is
    only armed from the main thread (whose end is the process's end).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, f"--pdeathsig={sig.name.removeprefix('SIG')}", "--"]


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    log_path: Path | None = None,
    run_as: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a one-shot helper (initdb, rndc, ...) to completion and return its output.

    Raises :class:`ServerStartError` naming ``what`` with the tail of the output if it fails.
    """
    try:
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
            **_user_kwargs(run_as),
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(f"{what}: {argv[0]} did not finish within {timeout:.0f}s") from exc
    if log_path is not None:
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n{result.stdout}")
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise ServerStartError(f"{what}: {argv[0]} exited with code {result.returncode}:\n{tail}")
    output: str = result.stdout
    return output


# Daemons still running, stopped at interpreter exit in case a caller forgot (or crashed before)
# calling stop(): a leaked named or mariadbd would hold its port for the next suite.
_running: set[Daemon] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _running_lock:
        leftovers = list(_running)
    for daemon in leftovers:
        daemon.stop()


class Daemon:
    """One long-running server process, its log file, its readiness probe and its stop.

    ``run_as`` drops root to that account (see :func:`daemon_user`); ``stop_signal`` is the signal
    that makes this daemon shut down fast (SIGINT for postgres, whose SIGTERM waits for clients).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_as = run_as
        self.stop_signal = stop_signal
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """Process id while started (even if it died since), else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True if the process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines this daemon logged since its latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, ready: Callable[[], bool], *, timeout: float = 30.0) -> None:
        """Start the process and return once ``ready()`` is true.

        ``ready`` may raise; that counts as "not yet". Raises :class:`ServerStartError` (or
        :class:`PortClashError`) with the log tail if the process exits or ``timeout`` passes;
        the process is stopped first, so a failed start leaves nothing behind.
        """
        if self.running:
            raise ServerStartError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            # start_new_session: a Ctrl-C in the terminal reaches pytest only, which then stops us
            # cleanly; and stop() can SIGKILL the whole group (postgres backends included).
            self._proc = subprocess.Popen(
                [*_die_with_parent(self.stop_signal), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                **_user_kwargs(self.run_as),
            )
        with _running_lock:
            _running.add(self)
        self._wait_ready(ready, timeout)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.01
        last_error = ""
        while True:
            code = self._proc.poll()
            if code is not None:
                self._fail(f"exited with code {code} before it was ready")
            if self._port_clash_logged():
                # named keeps running without the socket it could not bind: fail now, not at timeout.
                self._fail("could not bind its port")
            try:
                if ready():
                    return
                last_error = ""
            except Exception as exc:  # noqa: BLE001 - any probe failure only means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"was not ready after {timeout:.0f}s (last probe error: {last_error or 'none'})")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _port_clash_logged(self) -> bool:
        text = self.log_tail(lines=200).lower()
        return any(marker in text for marker in _PORT_CLASH_MARKERS)

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log_tail()
        error = PortClashError if self._port_clash_logged() else ServerStartError
        raise error(f"{self.name} ({self.argv[0]}) {why}; last lines of {self.log_path}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process by pid: ``stop_signal``, wait up to ``timeout``, then SIGKILL its group.

        Safe to call when not running.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(self.stop_signal)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # The leader is alive and unreaped here, so its pid is still our process group:
                # killing the group also takes its children (postgres backends) with it.
                self._kill_group(proc)
        with _running_lock:
            _running.discard(self)

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash or the OOM killer would; waits until
        it is gone. Safe to call when not running."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill_group(proc)
        with _running_lock:
            _running.discard(self)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def start_retrying_ports(attempt: Callable[[], None], *, attempts: int = 3) -> None:
    """Call ``attempt`` (choose ports, write config, start); retry if it lost a port race.

    ``attempt`` must pick fresh ports each time it is called.
    """
    for number in range(1, attempts + 1):
        try:
            attempt()
            return
        except PortClashError:
            if number == attempts:
                raise


class ManagedServer:
    """Base of the launchers: a working directory, start/stop, context manager, temp-dir cleanup.

    ``workdir`` None means "make a temp dir and delete it in :meth:`close`"; a given workdir is
    left in place (pytest's tmp_path keeps the logs for post-mortems).
    """

    #: short name used in temp-dir names and error messages
    kind = "server"

    def __init__(self, workdir: Path | str | None) -> None:
        self._temp_dirs: list[Path] = []
        self.workdir = Path(workdir) if workdir is not None else self._temp_dir("")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _temp_dir(self, suffix: str) -> Path:
        """A new temp dir that :meth:`close` removes."""
        path = Path(tempfile.mkdtemp(prefix=f"lecentral-{self.kind}{suffix}-"))
        if not suffix:
            # A workdir we made: let daemons that dropped root traverse (not list) it.
            path.chmod(0o711)
        self._temp_dirs.append(path)
        return path

    def state_dir(self, name: str, run_as: str | None, *, max_len: int = 80) -> Path:
        """A directory for daemon data, writable by ``run_as`` (or by us when None).

        Normally ``workdir/name``. Falls back to a fresh dir under the system temp dir when
        ``run_as`` cannot reach the workdir (pytest's tmp dirs are 0700 root) or when the path
        is too long for a unix socket inside it (the limit is 107 bytes).
        """
        path = self.workdir / name
        usable = len(str(path)) <= max_len and (run_as is None or _traversable_by(self.workdir, run_as))
        if not usable:
            path = self._temp_dir("-data")
        path.mkdir(parents=True, exist_ok=True)
        chown_to(path, run_as)
        return path

    def start(self) -> Self:
        """Start the server; returns self so ``server = X(...).start()`` reads well."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server; its data stays, so :meth:`start` can bring it back."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server and delete the temp dirs it created (never a caller's workdir)."""
        try:
            self.stop()
        finally:
            for path in self._temp_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._temp_dirs.clear()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DaemonServer(ManagedServer):
    """A launcher whose server is one :class:`Daemon`, kept in ``_daemon`` by its :meth:`start`."""

    #: seconds :meth:`stop` waits for a clean shutdown before SIGKILL
    stop_timeout = 15.0

    _daemon: Daemon | None = None

    @property
    def pid(self) -> int | None:
        """pid of the daemon, while started (even if it died since)."""
        return self._daemon.pid if self._daemon is not None else None

    @property
    def running(self) -> bool:
        """True while the daemon runs."""
        return self._daemon is not None and self._daemon.running

    def stop(self) -> None:
        """Stop the daemon by pid; its data and port numbers stay, so :meth:`start` can bring it back."""
        if self._daemon is not None:
            self._daemon.stop(timeout=self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL the daemon (no clean shutdown: a crash); :meth:`start` brings it back."""
        if self._daemon is not None:
            self._daemon.kill()
