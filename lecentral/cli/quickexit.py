"""Leaving a finished command without the interpreter's teardown.

When a command is done, Python's normal exit still tears the interpreter down: it clears every
module, frees the objects the imports and the command made (SQLAlchemy, cryptography, acme,
dnspython, click; a 50-certificate renew ends with about 100,000 the collector tracks and many
more it does not) one by one, and runs a last garbage collection over them: about 0.1 s of CPU
after the command's work is over (a 50-certificate renew: 1.10 s -> 1.00 s of CPU, a cold
one-certificate renew 0.46 s -> 0.37 s). None of it reaches a file, a socket or the database
that the command had not already finished with.

So the console scripts end with :func:`exit_now` instead: it does what a normal exit does that
anyone can see — the ``atexit`` functions (logging's shutdown, which flushes and closes the
handlers; ``weakref.finalize`` clean-ups such as a ``TemporaryDirectory``'s), then the flush of
stdout and stderr — and then ``os._exit`` with the same status. Only when that is the same as
a normal exit:

* no other thread that Python would wait for (a live non-daemon thread): it must finish first;
* no tracer or profiler (``python -m cProfile``, ``pdb``, ``trace``): they write when the
  program returns to them;
* no file object still open for writing (its buffer would be lost; a normal exit flushes it when
  it is freed) and no ``NamedTemporaryFile`` still open (a normal exit deletes it when it is
  freed); the product closes its files with ``with``, so this is a backstop;
* a status that is an ``int`` or ``None`` (``sys.exit("text")`` prints the text: left to Python);
* stdout and stderr flushed without an error (else the normal exit meets the error again: for
  stderr Python says ``Exception ignored ... BrokenPipeError`` and exits 120; stdout's errors
  are met before, by lecentral/cli/output.py, whose stdout never raises: a broken pipe drops
  the rest quietly, keeping the command's exit status; another write error is said once and
  exits 9, 3 for ``lecentral check``).

A Ctrl-C during the command, which click turns into ``Aborted!`` and exit status 1, leaves with
130 instead, as a shell says an interrupted command (and not 1, a monitoring check's WARNING).

Otherwise, and for any exception other than :class:`SystemExit`, the normal exit runs. The
database is closed by the command itself (``App.close``: the pool's connections, each with its
goodbye to the server), its transactions committed or rolled back before; child processes
(``[renew] processes``) are waited for by the pass.
"""

from __future__ import annotations

import atexit
import gc
import io
import itertools
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable

#: the file objects whose buffers a normal exit flushes (or, for a NamedTemporaryFile's wrapper,
#: whose file it deletes) when it frees them
_KINDS = frozenset({io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper,
                    tempfile._TemporaryFileWrapper})


def run(command: Callable[[], object]) -> None:
    """Run a click command in its standalone mode (which ends with ``sys.exit``), then leave
    through :func:`exit_now` when that is safe, or the normal way; a stdout that could not be
    written changes the exit status (:func:`lecentral.cli.output.finish`)."""
    from lecentral.cli import output

    _watch_ctrl_c()
    try:
        command()
    except SystemExit as exc:
        code = exc.code
        if code == 1 and _ctrl_c:
            code = 130  # as a shell says an interrupted command, not 1 (a check's WARNING)
        if code is None or isinstance(code, int):
            exc = SystemExit(output.finish(code))
        _leave(exc)
        raise exc from None
    done = SystemExit(output.finish(0))
    _leave(done)
    raise done


#: a Ctrl-C (SIGINT) came while Python's own handler was in place (click then says "Aborted!"
#: and exits 1, whatever the command was doing)
_ctrl_c = False


def _watch_ctrl_c() -> None:
    """Python's SIGINT handler, noting that it ran; left alone when something else handles
    SIGINT (``lecentral renew`` installs its own, and says 130 itself)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _noted_ctrl_c)


def _noted_ctrl_c(signum: int, frame: object) -> None:
    global _ctrl_c
    _ctrl_c = True
    raise KeyboardInterrupt


def _leave(exc: SystemExit) -> None:
    """:func:`exit_now`; a Ctrl-C that lands in it (the command is done, its output written)
    ends the process with 130, as an interrupted command, without a traceback (a new-user
    trial saw two chained tracebacks on stderr)."""
    try:
        exit_now(exc)
    except KeyboardInterrupt:
        _flushed()
        os._exit(130)


def exit_now(exc: SystemExit) -> None:
    """``os._exit`` with ``exc``'s status after what a normal exit does that is visible (see
    the module); returns, doing nothing that a normal exit would not do, if it is not safe."""
    code = exc.code
    if code is not None and not isinstance(code, int):
        return
    if _threads_left() or sys.gettrace() is not None or sys.getprofile() is not None:
        return  # a tracer or profiler (pdb, cProfile, trace) may still write at the end
    # as the normal exit does once the threads are done: logging's shutdown closes its file
    # handlers, finalizers remove temporary directories; then cleared, so that the normal exit,
    # should it still be needed below, does not run them twice
    atexit._run_exitfuncs()
    atexit._clear()
    if not _files_left() and _flushed():
        os._exit(0 if code is None else code)


def _flushed() -> bool:
    """stdout and stderr flushed; False if one failed (a broken pipe, a full disk on stderr:
    stdout's own are handled by lecentral/cli/output.py), which the normal exit then meets
    again and says (Python's "Exception ignored", exit status 120)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except (OSError, ValueError):
            return False
    return True


def _threads_left() -> bool:
    """Whether a thread is running that the normal exit would wait for."""
    return any(t.is_alive() and not t.daemon for t in threading.enumerate()
               if t is not threading.main_thread())


def _files_left() -> bool:
    """Whether a file object is open for writing (a normal exit flushes it when it frees it) or a
    NamedTemporaryFile is open (a normal exit deletes it), besides stdout and stderr."""
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    std = {id(s) for s in streams}
    # the buffer under a guarded stdout (lecentral/cli/output.py): flushed with it
    std |= {id(getattr(s, "buffer", None)) for s in streams if s is not None}
    gc.unfreeze()  # what the start froze is searched too (the process ends: no cost later)
    objects = gc.get_objects()
    # the exact types open() returns, picked out in C (a Python loop over the ~100,000 objects
    # of a renew run costs twice as much); then each file looked at
    for obj in itertools.compress(objects, map(_KINDS.__contains__, map(type, objects))):
        try:
            if isinstance(obj, tempfile._TemporaryFileWrapper):
                if not obj.closed:
                    return True
            elif id(obj) not in std and not obj.closed and obj.writable():
                return True
        except ValueError:  # a detached wrapper: unsure, so the normal exit
            return True
    return False
