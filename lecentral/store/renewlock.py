"""The renew lock of the SQL store: one renew pass at a time per database, across hosts, with a
record of who holds it so that a run finding it taken can name the holder.

* MariaDB/MySQL: ``GET_LOCK``. Its names are server-wide, so the name carries the database's
  (two lecentral databases on one server must not block each other); names are limited to 64
  characters, so a long or mixed-case database name is hashed instead.
* PostgreSQL: an advisory lock (advisory locks are per database already).
* SQLite: ``flock`` on ``DATABASE.lock`` beside the database file.
* MariaDB Galera (``wsrep_on`` is ON): a **lease** row, :class:`Lease`. ``GET_LOCK`` is local to
  the node it runs on (MariaDB 10.11 with galera-4 grants the same name on two nodes at once,
  tests/test_galera.py shows it), so two hosts on two nodes would both renew. The lease is the
  ``renew`` row of ``lecentral_renew_lock`` with a ``token`` and an ``expires`` time (the database
  server's clock), taken and renewed by committed transactions: Galera certifies them cluster-wide,
  so of two nodes taking it at once one commit fails (a deadlock error), which means "taken". A
  thread renews it while the pass runs; every save extends it in the save's own transaction
  (:func:`lease_fence`), so a holder whose lease expired or was taken over cannot save, and the
  save and a successor's takeover cannot both commit. A lease whose holder died ends at
  ``expires``. Without wsrep, GET_LOCK stays: the server frees it the moment its holder's
  connection dies, with no expiry to wait out.

The holder (host, pid, since) goes to the ``lecentral_renew_lock`` table, or for SQLite into the
lock file itself, and is removed when the lock is released.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from lecentral.errors import StoreError
from lecentral.host import this_host
from lecentral.store.rows import LockHolder
from lecentral.store.schema import renew_lock

log = logging.getLogger(__name__)

LOCK_NAME = "lecentral.renew"
SCOPE = "renew"  # the row of lecentral_renew_lock that describes this lock
MYSQL_NAME_MAX = 64
#: how long a renew lease lasts without renewal (``[renew] lease``)
LEASE_SECONDS = 60
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
    row = conn.execute(select(renew_lock.c.host, renew_lock.c.pid, renew_lock.c.since,
                              renew_lock.c.expires)
                       .where(renew_lock.c.scope == SCOPE)).first()
    if row is None:
        return None
    if row.expires is not None and int(row.expires) <= db_now(conn):
        return None  # a lease that ran out: its holder died or lost it, nobody holds it
    return LockHolder.parse(row.host, row.pid, row.since)


# --- MariaDB Galera: the lease ------------------------------------------------------------------

#: MariaDB error numbers that mean "another transaction got there first": a deadlock (what a
#: failed Galera certification reports), a lock wait timeout, a duplicate key (two first inserts)
CONFLICT_ERRORS = (1213, 1205, 1062)


def wsrep_on(conn: Connection) -> bool:
    """True if the server is a node of a Galera cluster with replication on."""
    row = conn.execute(text("SHOW VARIABLES LIKE 'wsrep_on'")).first()
    return row is not None and str(row[1]).upper() == "ON"


def causal_reads(conn: Connection) -> None:
    """Make this session's reads wait until its node applied everything the cluster committed
    before them (``wsrep_sync_wait = 1``): the lease row as the other nodes last wrote it, and the
    columns of a ``lecentral upgrade`` run through another node a moment ago. The pooled
    connection keeps it, so its later reads are causal too (at the cost of a wait for the node
    to catch up)."""
    conn.execute(text("SET SESSION wsrep_sync_wait = 1"))


def db_now(conn: Connection) -> int:
    """The database server's Unix time: every host of the cluster measures a lease by it."""
    if conn.dialect.name in ("mysql", "mariadb"):
        return int(conn.execute(text("SELECT UNIX_TIMESTAMP()")).scalar() or 0)
    if conn.dialect.name == "postgresql":
        return int(conn.execute(text("SELECT extract(epoch from now())")).scalar() or 0)
    return int(time.time())


def is_conflict(exc: SQLAlchemyError) -> bool:
    """True if ``exc`` is a lost race with another transaction (see :data:`CONFLICT_ERRORS`)."""
    if not isinstance(exc, DBAPIError):
        return False
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", ()))
    return bool(args) and args[0] in CONFLICT_ERRORS


class LeaseLostError(StoreError):
    """This run's renew lease ran out or was taken over: it must not order nor save any more."""


class Lease:
    """The renew lease of one database (see the module's docstring): taken with :meth:`take`,
    kept by a thread while held, given back with :meth:`release`.

    ``engine`` is the store's, ``where`` the database as shown (password masked), ``reason``
    the driver's message of an error (without the statement); ``seconds`` is how long the lease
    lasts without renewal; it is renewed every quarter of that.
    """

    def __init__(self, engine: Engine, seconds: float, where: str,
                 reason: Callable[[SQLAlchemyError], str]) -> None:
        self.engine = engine
        self.reason = reason
        self.seconds = max(4, int(seconds))
        self.where = where
        self.token = secrets.token_hex(16)
        self.holder = this_holder()
        #: why the lease is lost (None while held)
        self.lost: str | None = None
        #: time.monotonic() by which the lease surely ran out unless renewed
        self.deadline = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back ----------------------------------------------------------------

    def try_take(self) -> bool:
        """Take the lease if it is free or ran out; False if another holds it (or took it in
        the same instant: Galera's certification refused our commit)."""
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                causal_reads(conn)
                now = db_now(conn)
                row = conn.execute(select(renew_lock.c.token, renew_lock.c.expires)
                                   .where(renew_lock.c.scope == SCOPE).with_for_update()).first()
                if row is not None and row.expires is not None and int(row.expires) > now \
                        and row.token != self.token:
                    return False
                values = {"host": self.holder.host, "pid": self.holder.pid,
                          "since": self.holder.since, "expires": now + self.seconds,
                          "token": self.token}
                if row is None:
                    conn.execute(insert(renew_lock).values(scope=SCOPE, **values))
                else:
                    conn.execute(update(renew_lock).where(renew_lock.c.scope == SCOPE)
                                 .values(**values))
        except SQLAlchemyError as exc:
            if is_conflict(exc):
                return False
            raise self._error("taking the renew lease", exc) from None
        self.deadline = started + self.seconds
        self.lost = None
        self._start_renewing()
        return True

    def release(self) -> None:
        """Stop renewing and delete the lease row if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lost is not None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(renew_lock).where(renew_lock.c.scope == SCOPE,
                                                      renew_lock.c.token == self.token))
        except SQLAlchemyError as exc:  # it runs out by itself at expires
            log.warning("%s; it runs out by itself within %d s", self._error(
                "giving back the renew lease", exc), self.seconds)

    def _error(self, what: str, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"database {self.where}: {what} failed: {self.reason(exc)}")

    # -- keeping it --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease is lost or has surely run out."""
        if self.lost is None and time.monotonic() >= self.deadline:
            self.lost = (f"it was not renewed for {self.seconds} s (renew.lease): the database "
                         "could not be reached")
        if self.lost is not None:
            raise LeaseLostError(f"database {self.where}: this run lost the renew lease: "
                                 f"{self.lost}; it stops ordering and saving so that no "
                                 "certificate is ordered twice; what it issued and could not "
                                 "save is in the spool, saved by the next lecentral renew")

    def lose(self, why: str) -> None:
        """Give the lease up as lost (``why``): nothing more is ordered nor saved under it."""
        if self.lost is None:
            self.lost = why
            log.error("database %s: the renew lease is lost: %s", self.where, why)

    def fence(self, conn: Connection) -> None:
        """In a save's transaction: extend the lease, or raise if it is no longer ours. The save
        and the extension commit together or not at all, and a takeover committed on another
        node meanwhile makes this commit fail certification."""
        self.check()
        started = time.monotonic()
        if not self._extend(conn):
            self.check()
        self.deadline = max(self.deadline, started + self.seconds)

    def _extend(self, conn: Connection) -> bool:
        now = db_now(conn)
        done = conn.execute(update(renew_lock).where(
            renew_lock.c.scope == SCOPE, renew_lock.c.token == self.token,
            renew_lock.c.expires > now).values(expires=now + self.seconds))
        if done.rowcount == 1:
            return True
        holder = db_read_holder(conn)
        self.lost = (f"another run took it over ({holder})" if holder is not None
                     else "it ran out before it was renewed")
        return False

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="renew-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            if self.lost is not None:
                return
            started = time.monotonic()
            try:
                with self.engine.begin() as conn:
                    causal_reads(conn)
                    if self._extend(conn):
                        self.deadline = started + self.seconds
            except SQLAlchemyError as exc:  # e.g. the node went down: check() says when it ran out
                log.warning("%s", self._error("renewing the renew lease", exc))
            if self.lost is not None:
                log.error("database %s: the renew lease is lost: %s", self.where, self.lost)
                return


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
