"""What ``lecentral`` does when its stdout cannot be written.

* **A broken pipe** (``lecentral check | head -1``, ``lecentral list | less`` quit early): the
  reader wanted no more. The rest of the output is dropped and the command carries on to its
  end and its own exit status, said by nobody: ``check``'s state stays its state (click alone
  would exit 1, "WARNING", part of the time: whenever the reader had gone before the last
  write), and a renew run is recorded as usual. Nothing is printed on stderr (as ``head`` wants).
  Other CLIs exit 0 there (b2, comfy-cli) or 141, as a producer SIGPIPE killed (the C tools);
  lecentral's exit status is part of its answer (a monitoring state, a renew's outcome), so it
  is kept, and for a command that succeeded it is 0 as theirs.
* **Any other write error** (``lecentral list > /dev/full``: ENOSPC, EIO): the output is lost,
  which its reader must know. The rest is dropped as well (so no traceback from the middle of a
  command), the command carries on to its end, and then one line says it on stderr (``lecentral:
  error: the output could not be written to stdout: No space left on device; ...``) and the
  exit status is :data:`EXIT_OUTPUT` (9), or 3 (UNKNOWN) for ``lecentral check``, a monitoring
  plugin (:func:`fail_as`).

Only the console scripts do this, ``lecentral`` and ``lecentral-install`` alike
(:func:`guard_stdout`, from lecentral/cli/start.py); a test or a program calling
``lecentral.cli.central.main`` or ``lecentral.cli.agent.main`` keeps its own stdout.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import sys

#: the exit status when stdout could not be written (not a broken pipe)
EXIT_OUTPUT = 9

#: the first write error met on stdout other than a broken pipe; None while all went well
failed: OSError | None = None

#: the exit status :data:`failed` makes (``lecentral check``: 3, UNKNOWN)
failure_status = EXIT_OUTPUT

#: the program that says it on stderr (``lecentral``, ``lecentral-install``)
program = "lecentral"


class _Guarded(io.RawIOBase):
    """File descriptor ``fd``, written directly; once a write fails, /dev/null instead."""

    def __init__(self, fd: int, owner: object = None) -> None:
        super().__init__()
        self.fd = fd
        self.widened = False
        # the stream that owns ``fd``, kept: where it was sys.stdout's only reference (a
        # program's own file), collecting it would close ``fd``, whose number the next open
        # file gets (the SQLite database: this wrote the table into it)
        self._owner = owner

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        try:
            return os.write(self.fd, data)
        except OSError as exc:
            self.drop(exc)
        return len(data)

    def drop(self, exc: OSError) -> None:
        """After a failed write: a broken pipe quietly (the reader is gone), any other error
        noted (:data:`failed`); the rest goes to /dev/null."""
        global failed
        if not isinstance(exc, BrokenPipeError) and failed is None:
            failed = exc
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self.fd)
        finally:
            os.close(null)

    def send(self, src: int, offset: int, count: int) -> bool:
        """Copy ``count`` bytes of file descriptor ``src`` from ``offset`` here in the kernel
        (sendfile: 173 MB of ``fleet --json`` in a third of the time of reading and writing
        them); False if the kernel cannot (nothing was copied)."""
        started = offset
        widen = getattr(fcntl, "F_SETPIPE_SZ", None)  # (Linux)
        if not self.widened and widen is not None:
            self.widened = True
            with contextlib.suppress(OSError):  # a pipe of a megabyte: fewer turns
                fcntl.fcntl(self.fd, widen, 1 << 20)  # (not a pipe: EBADF)
        while count > 0:
            try:
                sent = os.sendfile(self.fd, src, offset, count)
            except OSError as exc:
                if offset == started and exc.errno in (errno.EINVAL, errno.ENOSYS,
                                                       errno.EOPNOTSUPP):
                    return False
                self.drop(exc)
                return True
            if sent == 0:  # the file ended early: written as far as it goes
                return True
            offset += sent
            count -= sent
        return True


def guard_stdout(prog: str = "lecentral") -> None:
    """Put :class:`_Guarded` under ``sys.stdout`` (its encoding and line buffering kept);
    ``prog`` names the program in the line that says a write error."""
    global program
    program = prog
    old = sys.stdout
    if old is None or not isinstance(old, io.TextIOWrapper):
        return  # closed (>&-), or replaced by whoever runs us: theirs
    try:
        fd = old.fileno()
        old.flush()
    except (OSError, ValueError):
        return
    buffered = io.BufferedWriter(_Guarded(fd, old),  # type: ignore[type-var]  # a raw writer
                                 buffer_size=io.DEFAULT_BUFFER_SIZE)
    sys.stdout = io.TextIOWrapper(buffered, encoding=old.encoding, errors=old.errors,
                                  line_buffering=old.line_buffering)


def send(src: int, offset: int, count: int) -> bool:
    """Copy ``count`` bytes of the file descriptor ``src`` from ``offset`` to stdout in the
    kernel, after what ``sys.stdout`` holds; with stdout's errors as every write meets them
    (a broken pipe drops the rest quietly, another error is said at the end). False, with
    nothing written, where stdout is not the descriptor :func:`guard_stdout` wraps (a test's,
    a program's own) or the kernel cannot copy to it: the caller writes the bytes itself."""
    out = sys.stdout
    raw = getattr(getattr(out, "buffer", None), "raw", None)
    if not isinstance(raw, _Guarded):
        return False
    out.flush()
    return raw.send(src, offset, count)


def fail_as(status: int) -> None:
    """The exit status when stdout could not be written, for this command (check: 3)."""
    global failure_status
    failure_status = status


def finish(code: int | None) -> int | None:
    """The exit status to leave with: ``code``, or after saying so on stderr, the output
    failure's (:data:`failure_status`) if stdout could not be written."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        pass
    if failed is None:
        return code
    reason = failed.strerror or str(failed)
    if sys.stderr is not None:  # closed too (2>&-): the exit status says it alone
        try:
            print(f"{program}: error: the output could not be written to stdout: {reason}; the "
                  f"rest of it was dropped (the command itself ran to its end, exit status "
                  f"{code or 0})", file=sys.stderr)
        except (OSError, ValueError):
            pass
    return failure_status
