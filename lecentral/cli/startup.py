"""The collector's pause during a command's start (:mod:`lecentral.cli.start` explains why).

Its own module, imported by the entry points (which pause) and by the CLIs (which say when their
start is done), so that neither imports the other.
"""

from __future__ import annotations

import gc
import threading

#: seconds after which the collector runs again even if the command never said it had started
BACKSTOP = 2.0

_paused = False


def pause() -> None:
    """No cyclic garbage collection until :func:`started` (or :data:`BACKSTOP` seconds)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True
        timer = threading.Timer(BACKSTOP, started)
        timer.daemon = True
        timer.start()


def started() -> None:
    """The command's start is done: freeze what is loaded, collect again (no-op unless paused)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
