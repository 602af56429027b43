"""Stopping a renew run: SIGTERM (``systemctl stop``, a container's stop) and SIGINT (Ctrl-C).

A pass may take a long time (hundreds of certificates, or ``--rounds`` sleeping an hour between
rounds). Killing it at once would lose what is in flight and say nothing, and a worker process
(``[renew] processes``) left behind would order on alone. So the first SIGTERM or SIGINT only
*asks* the run to stop (:class:`StopFlag`): no certificate is started any more (each one not
started is ``blocked``, "not tried: the run was stopped by SIGTERM", its failure count
unchanged: the next run tries it), what is in flight is finished (issued and spooled, then
saved) and the run ends as usual: its summary printed, the run recorded in lecentral_runs, exit
status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a
command a signal ended. A retry round's sleep is cut short the same way. A second signal ends
the process at once, the old way (the spool keeps what the CA issued).

A worker process stops taking certificates when asked the same way (the whole unit gets
SIGTERM from systemd) and when its parent is gone (:func:`watch_parent`: the kernel's parent
death signal on Linux, and the parent's pid checked before each certificate elsewhere): it never
orders on alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: the signals that ask a run to stop
SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: prctl(2)'s PR_SET_PDEATHSIG
_PR_SET_PDEATHSIG = 1


class StopFlag:
    """Set when the run is asked to stop: by which signal, or why."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum = 0
        self.reason = ""
        #: called once when the flag is set (from a signal handler: quick, no waiting)
        self.listeners: list[Callable[[], None]] = []

    def set(self, signum: int, reason: str) -> None:
        """Ask the run to stop (the first reason given is kept); tell the listeners."""
        if self._event.is_set():
            return
        self.signum, self.reason = signum, reason
        self._event.set()
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a listener's bug must not stop the stopping
                log.exception("telling of the stop failed")

    def is_set(self) -> bool:
        """Whether the run was asked to stop."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless asked to stop meanwhile; True if asked."""
        return self._event.wait(seconds)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as the shell reports a command a signal ended."""
        return 128 + self.signum

    @property
    def message(self) -> str:
        """Why the run stopped, for the certificates it did not try."""
        return f"the run was {self.reason}"


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """While inside: the first SIGTERM or SIGINT sets ``flag`` (said once on stderr); a second
    one gets the handler there was before (SIGINT: KeyboardInterrupt; SIGTERM: the process
    ends). Does nothing outside the main thread (only it may set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a handler set outside Python (None) could not be put back: that signal is left alone
    before: dict[int, Any] = {signum: old for signum in SIGNALS
                              if (old := signal.getsignal(signum)) is not None}

    def handler(signum: int, frame: FrameType | None) -> None:
        for number, old in before.items():  # the next one is not asked twice
            signal.signal(number, old)
        flag.set(signum, f"stopped by {signal_name(signum)}")
        log.warning("%s: stopping: no certificate is started any more; those in flight are "
                    "finished and saved (a second %s ends the process at once)",
                    signal_name(signum), signal_name(signum))

    for wanted in before:
        signal.signal(wanted, handler)
    try:
        yield
    finally:
        for restored, old in before.items():
            signal.signal(restored, old)


def watch_parent(flag: StopFlag, parent: int, from_main_thread: bool) -> None:
    """In a worker process just forked from ``parent``: SIGTERM and SIGINT set ``flag``, and so
    does the parent's end (Linux's parent death signal; it follows the forking *thread*, so only
    asked for when the main thread forked); see also :func:`parent_gone`."""
    def handler(signum: int, frame: FrameType | None) -> None:
        flag.set(signum, f"stopped by {signal_name(signum)}")

    for number in SIGNALS:
        signal.signal(number, handler)  # this process's main thread: the one that forked
    if from_main_thread:
        death_signal(signal.SIGTERM)  # (else: checked per certificate)
    parent_gone(flag, parent)  # it may have ended before the prctl


def death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when the thread that forked it ends (the
    parent death signal); False where it cannot (not Linux, no prctl): the caller then checks
    ``os.getppid()`` itself."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        log.debug("no parent death signal: %s", exc)
        return False
    return True


def parent_gone(flag: StopFlag, parent: int) -> bool:
    """True (and ``flag`` set) if this worker process's parent ``parent`` has ended."""
    if os.getppid() != parent:
        flag.set(signal.SIGTERM, "stopped: its first process (the parent of this worker "
                 "process) ended")
    return flag.is_set()
