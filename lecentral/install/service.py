"""What service plugins build on: running the admin's commands, and a Service made of them.

Most daemons take a new certificate with a config test and a reload, so most service plugins are
only a :class:`~lecentral.types.ServiceType` whose ``defaults`` name those commands, with
:class:`CommandService` as the factory. Plugins that need more subclass it.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lecentral.errors import CsrError, InstallError, VerifyError
from lecentral.interfaces import Service
from lecentral.records import CertEntry

log = logging.getLogger(__name__)

#: how much of a failing command's output goes into the error (and the alert)
OUTPUT_TAIL_LINES = 15
#: pause between two probes of a service that is coming back after a restart
PROBE_PAUSE = 0.25

T = TypeVar("T")


def poll_until(entry: CertEntry, check: Callable[[float], T]) -> T:
    """Call ``check(seconds left)`` until it returns, for up to the entry's ``verify_timeout``.

    For services that verify in their own protocol (an LDAP bind, a RADIUS request) while the
    daemon comes back: ``check`` raises :class:`VerifyError` (or CsrError) while it is not ready;
    the last such error is raised, with the time waited, when the timeout passes.
    """
    deadline = time.monotonic() + entry.verify_timeout
    while True:
        try:
            return check(max(deadline - time.monotonic(), 1.0))
        except (VerifyError, CsrError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise VerifyError(f"{entry.label}: verification failed after {entry.verify_timeout:.0f}s: "
                              f"{last}")
        time.sleep(PROBE_PAUSE)


def installed_fingerprint(path: str, daemon: str) -> str:
    """SHA-256 of the leaf in the certificate file ``path``, to compare with what ``daemon`` presents."""
    from lecentral.certificates import Certificate

    try:
        return Certificate.load(Path(path).read_bytes(), path).fingerprint
    except (OSError, CsrError) as exc:
        raise InstallError(f"cannot read the certificate {path} to compare with what {daemon} "
                           f"presents: {exc}") from None


def run_command(command: str, *, what: str, timeout: float) -> str:
    """Run ``command`` (split like a shell would, but without a shell) and return its output.

    Raise :class:`InstallError` naming ``what``, the command, its exit status and the tail of its
    output. Write ``sh -c '...'`` in the configuration when a pipe or ``&&`` is needed.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InstallError(f"{what}: cannot parse command {command!r}: {exc}") from None
    if not argv:
        raise InstallError(f"{what}: the command is empty")
    log.info("%s: running %s", what, command)
    result = _run(argv, command, what, timeout, subprocess.STDOUT)
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise InstallError(f"{what}: {command!r} exited with status {result.returncode}" + _tail(output))
    return output


def command_output(argv: Sequence[str], *, what: str, timeout: float) -> str:
    """Run ``argv`` (no shell) and return its standard output alone.

    For the commands a service plugin *reads* a daemon's configuration with (``postconf``,
    ``doveconf``): their warnings go to stderr and stay out of the values parsed. On failure,
    :class:`InstallError` quotes the tail of stderr.
    """
    command = shlex.join(argv)
    result = _run(list(argv), command, what, timeout, subprocess.PIPE)
    if result.returncode != 0:
        raise InstallError(f"{what}: {command!r} exited with status {result.returncode}"
                           + _tail(result.stderr.decode(errors="replace")))
    return result.stdout.decode(errors="replace")


def _run(argv: list[str], command: str, what: str, timeout: float,
         stderr: int) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise InstallError(f"{what}: command {argv[0]!r} not found; fix the path in the "
                           "configuration or install it") from None
    except PermissionError:
        raise InstallError(f"{what}: command {argv[0]!r} is not executable") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what}: {command!r} did not finish within {timeout:.0f}s; raise "
                           "command_timeout if it is just slow") from None


def _tail(output: str) -> str:
    tail = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL_LINES:])
    return f":\n{tail}" if tail else ""


class CommandService(Service):
    """A service driven by the entry's ``check`` (config test) and ``reload`` commands.

    Either may be empty: no config test, or nothing to reload (the daemon reads the files on
    each connection). This is the built-in ``files`` service and the base of most plugins.
    """

    def check_config(self, entry: CertEntry) -> None:
        if entry.check:
            run_command(entry.check, what=f"{entry.label}: config test", timeout=entry.command_timeout)

    def activate(self, entry: CertEntry) -> None:
        if entry.reload:
            run_command(entry.reload, what=f"{entry.label}: reload", timeout=entry.command_timeout)
