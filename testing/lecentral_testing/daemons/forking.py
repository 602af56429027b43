"""Restart a test daemon the way ``systemctl restart`` restarts a forking service, by its pid file.

slapd and FreeRADIUS read their certificate only when they start, so the agent's ``reload``
command for them must be a real restart whose exit status says whether the new instance came up:
that is what a plugin's rollback relies on. :func:`restart_argv` builds that command for a test
daemon: stop the process named in the pid file, then start the daemon in its forking mode, where
the parent exits only once the child is serving (non-zero if it is not), as both daemons do::

    python -m lecentral_testing.daemons.forking --pid-file RUN/slapd.pid --match CONFDIR \\
        --log WORKDIR/restart.log -- /usr/sbin/slapd -F CONFDIR -h "ldap://127.0.0.1:PORT/"

``--match`` is a string that must appear in the command line of the process in the pid file, so a
stale pid file never makes us signal an unrelated process. A restarted daemon is no child of the
test process; :func:`stop_by_pid_file` stops it at the end of the test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: how long a daemon may take to exit after SIGTERM before it gets SIGKILL
STOP_TIMEOUT = 15.0


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no longer counts: PID 1 here may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def live_pid(pid_file: Path | str, match: str) -> int | None:
    """The pid in ``pid_file`` if that process runs and ``match`` is in its command line."""
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return pid if match in cmdline and _alive(pid) else None


def stop_by_pid_file(pid_file: Path | str, match: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the daemon named in ``pid_file`` (SIGTERM, then SIGKILL); True if one was running."""
    pid = live_pid(pid_file, match)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
    return True


def restart_argv(pid_file: Path | str, match: str, argv: Sequence[str], log: Path | str) -> list[str]:
    """The command line that restarts the daemon (for an agent entry's ``reload``)."""
    return [sys.executable, "-m", __name__, "--pid-file", str(pid_file), "--match", match,
            "--log", str(log), "--", *argv]


def restart(pid_file: Path | str, match: str, argv: Sequence[str], log: Path | str) -> int:
    """Stop the running instance, start ``argv`` (which forks), return its exit status.

    The starting parent's output goes to ``log`` rather than to our stdout: a daemon that kept
    the inherited descriptor would otherwise hold the caller's pipe open for as long as it runs.
    """
    stop_by_pid_file(pid_file, match)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              check=False, timeout=120).returncode


def main(args: Sequence[str] | None = None) -> int:
    """``python -m lecentral_testing.daemons.forking``: see the module docstring."""
    parser = argparse.ArgumentParser(description="Restart a forking test daemon by its pid file.")
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--match", required=True, help="a string in the daemon's command line")
    parser.add_argument("--log", required=True, help="file the starting daemon's output goes to")
    parser.add_argument("argv", nargs="+", help="the daemon's command line (it must fork)")
    ns = parser.parse_args(args)
    status = restart(ns.pid_file, ns.match, ns.argv, ns.log)
    if status != 0:
        tail = Path(ns.log).read_text(errors="replace").splitlines()[-20:]
        print(f"{ns.argv[0]} exited with status {status}", *tail, sep="\n", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
