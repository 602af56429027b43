"""How much of the machine's CPU sat idle while this command started.

``[renew] processes = "auto"`` forks a second process for a large pass only where a second core
is there *and free*: a second process costs about 0.1 s more CPU (its fork, its own HTTPS
connections and ACME client), which pays only when the other core would otherwise idle; on a
machine whose other core is busy (another service, another job) it is CPU taken from them for
nothing. Whether a core is free is measured, not guessed: the console script notes the machine's
idle CPU time (``/proc/stat``: idle and iowait, every CPU) when it starts (:func:`mark`), and the
renew job asks, at the start of its pass, how many cores sat idle on average since
(:func:`idle_cores`): the 0.2-0.3 s of the command's start, during which it uses one core itself.
"""

from __future__ import annotations

import os
import time

#: (time.monotonic(), idle ticks) when the command started; None: not marked (a library use)
_mark: tuple[float, int] | None = None

#: shorter than this since the mark (a few clock ticks), the average says nothing
MIN_SECONDS = 0.05


def mark() -> None:
    """Note the machine's idle CPU time now (the console scripts, first thing)."""
    global _mark
    ticks = _idle_ticks()
    _mark = None if ticks is None else (time.monotonic(), ticks)


def idle_cores() -> float | None:
    """Cores that sat idle on average since :func:`mark`; None if not marked, too soon after
    it, or without ``/proc/stat`` (not Linux)."""
    if _mark is None:
        return None
    elapsed = time.monotonic() - _mark[0]
    ticks = _idle_ticks()
    if ticks is None or elapsed < MIN_SECONDS:
        return None
    return (ticks - _mark[1]) / os.sysconf("SC_CLK_TCK") / elapsed


def _idle_ticks() -> int | None:
    """Idle + iowait clock ticks of every CPU since boot (the first line of /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
        return int(fields[4]) + int(fields[5])
    except (OSError, IndexError, ValueError):
        return None
