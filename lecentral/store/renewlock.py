"""The renew lock of the SQL store: one renew pass at a time per database, across hosts, with a
record of who holds it so that a run finding it taken can name the holder.

* MariaDB/MySQL: ``GET_LOCK``. Its names are server-wide, so the name carries the database's
  (two lecentral databases on one server must not block each other); names are limited to 64
  characters, so a long or mixed-case database name is hashed instead.
* PostgreSQL: an advisory lock (advisory locks are per database already).
* SQLite: ``flock`` on ``DATABASE.lock`` beside the database file.

The holder (host, pid, since) goes to the ``lecentral_renew_lock`` table, or for SQLite into the
lock file itself, and is removed when the lock is released.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time

from sqlalchemy import Connection, delete, insert, select, text

from lecentral.host import this_host
from lecentral.store.rows import LockHolder
from lecentral.store.schema import renew_lock

log = logging.getLogger(__name__)

LOCK_NAME = "lecentral.renew"
SCOPE = "renew"  # the row of lecentral_renew_lock that describes this lock
MYSQL_NAME_MAX = 64
PG_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)


def mysql_lock_name(database: str) -> str:
    """The GET_LOCK name for ``database``: ``lecentral.renew.DATABASE``, or a digest of the
    database name when that is too long or not lower case (lock names may compare without case,
    database names on Linux do not)."""
    name = f"{LOCK_NAME}.{database}"
    if len(name) <= MYSQL_NAME_MAX and name == name.lower():
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()
    return f"{LOCK_NAME}.{digest[:MYSQL_NAME_MAX - len(LOCK_NAME) - 1]}"


def this_holder() -> LockHolder:

    return LockHolder(this_host(), os.getpid(), int(time.time()))


# --- MariaDB/MySQL and PostgreSQL ---------------------------------------------------------------


def db_try_lock(conn: Connection, dialect: str, timeout: float) -> bool:
    """Take the lock on ``conn`` (waiting up to ``timeout`` seconds); False if another has it."""
    if dialect in ("mysql", "mariadb"):
        database = conn.execute(text("SELECT DATABASE()")).scalar() or ""
        wait = max(1, round(timeout)) if timeout > 0 else 0
        got = conn.execute(text("SELECT GET_LOCK(:n, :t)"),
                           {"n": mysql_lock_name(str(database)), "t": wait}).scalar()
        return bool(got == 1)
    deadline = time.monotonic() + timeout
    while True:
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_KEY}).scalar():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def db_unlock(conn: Connection, dialect: str) -> None:
    if dialect in ("mysql", "mariadb"):
        database = conn.execute(text("SELECT DATABASE()")).scalar() or ""
        conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": mysql_lock_name(str(database))})
    else:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_KEY})


def db_record_holder(conn: Connection, holder: LockHolder) -> None:
    conn.execute(delete(renew_lock).where(renew_lock.c.scope == SCOPE))
    conn.execute(insert(renew_lock).values(scope=SCOPE, host=holder.host, pid=holder.pid,
                                           since=holder.since))


def db_clear_holder(conn: Connection, holder: LockHolder) -> None:
    conn.execute(delete(renew_lock).where(renew_lock.c.scope == SCOPE,
                                          renew_lock.c.host == holder.host,
                                          renew_lock.c.pid == holder.pid))


def db_read_holder(conn: Connection) -> LockHolder | None:
    row = conn.execute(select(renew_lock.c.host, renew_lock.c.pid, renew_lock.c.since)
                       .where(renew_lock.c.scope == SCOPE)).first()
    return LockHolder.parse(row.host, row.pid, row.since) if row is not None else None


# --- SQLite: a lock file ----------------------------------------------------------------------


def file_try_lock(fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def file_record_holder(fd: int, holder: LockHolder) -> None:
    data = json.dumps({"host": holder.host, "pid": holder.pid, "since": holder.since}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data + b"\n", 0)


def file_clear_holder(fd: int) -> None:
    os.ftruncate(fd, 0)


def file_read_holder(path: str) -> LockHolder | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(4096) or b"null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return LockHolder.parse(data.get("host"), data.get("pid"), data.get("since"))
