"""What to do about SQLite's own errors: the file system is full, another process holds the lock.

A server's "check that the server is up" means nothing for a file: these hints name the file,
what was measured (the free space, how long lecentral waited) and, where this user may see them,
the processes that have the database open.
"""

from __future__ import annotations

import os
import shutil

#: how long a SQLite connection waits for another process's write lock (sqlite3's busy timeout)
BUSY_TIMEOUT = 5.0

#: the files SQLite keeps beside the database while a transaction is open
_COMPANIONS = ("", "-journal", "-wal", "-shm")


def sqlite_hint(reason: str, path: str) -> str | None:
    """The hint for SQLite's error ``reason`` about the database file ``path``; None: not one of
    SQLite's own (the caller's generic hint applies)."""
    if "database or disk is full" in reason:
        return full_hint(path)
    if "database is locked" in reason:
        return locked_hint(path)
    return None


def full_hint(path: str) -> str:
    """The file system holding ``path`` is full (or the file reached SQLite's size limit)."""
    where = os.path.dirname(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(where).free // 1024} KiB free"
    except OSError:
        free = "its free space unknown"
    return (f"free space on the file system of {path} (df -h {where}: {free}; SQLite also needs "
            "room for its journal beside the file)")


def locked_hint(path: str) -> str:
    """Another process held the write lock on ``path`` for longer than lecentral waits."""
    holders = _holders(path)
    who = (f"processes with it open: {', '.join(holders)}" if holders else
           f"fuser -v {path} shows which process has it open")
    return (f"another process holds a write lock on {path} (lecentral waits up to {BUSY_TIMEOUT:g} s "
            f"for it): {who}; run again once it is done (a long sqlite3 session or a stuck "
            "lecentral run keeps the lock until it ends)")


def _holders(path: str) -> list[str]:
    """``PID (command)`` of the other processes that have ``path`` or its journal open (those
    this user may see in /proc)."""
    real = os.path.realpath(path)
    wanted = {real + suffix for suffix in _COMPANIONS}
    found: list[str] = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return found
    for pid in sorted(pids, key=int):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(_target(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                continue
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                found.append(f"{pid} ({comm.read().strip()})")
        except OSError:  # gone, or not ours to see
            continue
    return found


def _target(link: str) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return ""
