"""How much of the machine's CPU sat idle while this command started.

``[renew] processes = "auto"`` forks a second process for a large pass only where a second core
is there *and free*: a second process costs about 0.1 s more CPU (its fork, its own HTTPS
connections and ACME client), which pays only when the other core would otherwise idle; on a
machine whose other core is busy (another service, another job) it is CPU taken from them for
nothing. Whether a core is free is measured, not guessed: the console script notes the machine's
idle CPU time (``/proc/stat``: idle and iowait, every CPU) when it starts (:func:`mark`), and the
renew job asks, at the start of its pass, how many cores sat idle on average since
(:func:`idle_cores`): the 0.2-0.3 s of the command's start, during which it uses one core itself.
A later round of ``renew --rounds`` (an hour later, say) measures its own start instead: the last
:data:`SAMPLE` seconds of the sleep before it (:func:`mark` with ``asleep``), not the average
since the command started. A CPU quota of its cgroups (a container's or a systemd unit's ``CPUQuota=``), which neither the
affinity nor ``/proc/stat`` shows, is read too (:func:`quota_cores`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

#: (time.monotonic(), idle ticks, cores of that idle time that are this process's own) when the
#: command (or a retry round's end of sleep) started; None: not marked (a library use)
_mark: tuple[float, int, float] | None = None

#: how long before a retry round its sleep is measured
SAMPLE = 0.25

#: shorter than this since the mark (a few clock ticks), the average says nothing
MIN_SECONDS = 0.05


def mark(asleep: bool = False) -> None:
    """Note the machine's idle CPU time now (the console scripts, first thing). ``asleep``: this
    process sleeps from now on (a retry round's last :data:`SAMPLE` seconds), so the core it
    will use is idle too and is not counted as free (as at the start, when it is busy)."""
    global _mark
    ticks = _idle_ticks()
    _mark = None if ticks is None else (time.monotonic(), ticks, 1.0 if asleep else 0.0)


def marked() -> bool:
    """Whether :func:`mark` was called (the console scripts do; a library's use does not)."""
    return _mark is not None


def idle_cores() -> float | None:
    """Cores that sat idle on average since :func:`mark`; None if not marked, too soon after
    it, or without ``/proc/stat`` (not Linux)."""
    if _mark is None:
        return None
    elapsed = time.monotonic() - _mark[0]
    ticks = _idle_ticks()
    if ticks is None or elapsed < MIN_SECONDS:
        return None
    return max(0.0, (ticks - _mark[1]) / os.sysconf("SC_CLK_TCK") / elapsed - _mark[2])


def _idle_ticks() -> int | None:
    """Idle + iowait clock ticks of every CPU since boot (the first line of /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
        return int(fields[4]) + int(fields[5])
    except (OSError, IndexError, ValueError):
        return None


#: where the cgroup file systems are mounted, and this process's membership
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def quota_cores(root: Path = CGROUP_ROOT, membership: Path = SELF_CGROUP) -> float | None:
    """The CPU quota of this process in cores: the smallest along its cgroups' paths (cgroup v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None without one, or where
    none can be read."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        read: Callable[[Path], float | None]
        if number == "0" and not controllers:  # v2 (at the root, or "unified" beside v1)
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            read = _v2_quota
        elif "cpu" in controllers.split(","):
            base, read = root / controllers, _v1_quota
        else:
            continue
        where = base / path.lstrip("/")
        while True:
            limit = read(where)
            if limit is not None:
                limits.append(limit)
            if where == base or base not in where.parents:
                break
            where = where.parent
    return min(limits) if limits else None


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        if quota <= 0:  # -1: no quota
            return None
        return quota / int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
