"""The SQL store: one implementation for SQLite, MariaDB/MySQL (PyMySQL) and PostgreSQL (psycopg)."""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    create_engine,
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from lecentral.certificates import md5_ca, now_ts
from lecentral.config import PERCENT_ENCODING, mask_url, url_password_problem
from lecentral.errors import StoreError
from lecentral.interfaces import Store
from lecentral.store.rows import CertRow, EventRow
from lecentral.store.schema import OWN_TABLES, certs, certs_ddl, events, metadata

log = logging.getLogger(__name__)

LOCK_NAME = "lecentral.renew"
HOST = socket.getfqdn()


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own message, without SQLAlchemy's echo of the statement and its parameters."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]


class SqlStore(Store):
    """The ``certs`` table and ``lecentral_events`` through SQLAlchemy Core."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = mask_url(url)
        problem = url_password_problem(url)
        if problem:
            raise StoreError(problem)
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - whatever make_url raises, the URL is the problem
            raise StoreError(f"[database] url {self.shown_url!r} is not a valid database URL; a "
                             f"password with special characters must be percent-encoded: "
                             f"{PERCENT_ENCODING}") from None
        self.dialect = parsed.get_backend_name()
        self.sqlite_path = parsed.database if self.dialect == "sqlite" else None
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect != "sqlite":
            kwargs.update(pool_pre_ping=True, connect_args={"connect_timeout": 10})
        elif self.sqlite_path and self.sqlite_path != ":memory:":
            kwargs["creator"] = self._connect_existing
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. a missing driver: said with the URL masked
            raise StoreError(f"cannot use database {self.shown_url}: {exc}") from None

    # -- plumbing ---------------------------------------------------------------------------------

    def _connect_existing(self) -> sqlite3.Connection:
        """Open the SQLite file read-write, never creating it: a typo in the URL (or an agent
        pointed at the wrong path) must be an error, not a new empty database. Only
        :meth:`init_schema` creates the file."""
        path = str(self.sqlite_path)
        try:
            return sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, check_same_thread=False)
        except sqlite3.OperationalError:
            if not os.path.exists(path):
                raise StoreError(f"database file {path} does not exist; check [database] url, or "
                                 "create it with lecentral init on the central host") from None
            raise

    @contextmanager
    def _begin(self, what: str) -> Iterator[Connection]:
        """One transaction; any database error becomes a StoreError naming the database."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(
                f"database {self.shown_url}: {what} failed: {_reason(exc)}; "
                "check that the server is up and the [database] url is right"
            ) from None

    def _need(self, conn: Connection, name: str) -> None:
        if conn.execute(select(certs.c.name).where(certs.c.name == name)).first() is None:
            raise StoreError(f"no certificate named {name!r} in the database (see lecentral list)")

    def close(self) -> None:
        self.engine.dispose()

    # -- schema --------------------------------------------------------------------------------------

    def init_schema(self) -> list[str]:
        created: list[str] = []
        if self.sqlite_path and self.sqlite_path != ":memory:":
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            os.close(os.open(self.sqlite_path, os.O_WRONLY | os.O_CREAT, 0o600))  # the one creator
        with self._begin("creating tables") as conn:
            existing = set(inspect(conn).get_table_names())
            if "certs" not in existing:
                conn.exec_driver_sql(certs_ddl(self.dialect))
                created.append("certs")
            missing = [t for t in OWN_TABLES if t.name not in existing]
            metadata.create_all(conn, tables=missing)
            created.extend(t.name for t in missing)
        if self.sqlite_path and self.sqlite_path != ":memory:":
            os.chmod(self.sqlite_path, 0o600)  # the table holds no key, but it is ours alone
        return created

    def check_schema(self) -> None:
        """Raise StoreError if the tables are missing (``lecentral init`` not run)."""
        if self.sqlite_path and self.sqlite_path != ":memory:" and not Path(self.sqlite_path).exists():
            raise StoreError(f"database file {self.sqlite_path} does not exist; run lecentral init "
                             "(or check [database] url)")
        with self._begin("reading the schema") as conn:
            existing = set(inspect(conn).get_table_names())
        missing = [t for t in ["certs", *(t.name for t in OWN_TABLES)] if t not in existing]
        if missing:
            raise StoreError(
                f"database {self.shown_url} has no table {', '.join(missing)}; run lecentral init"
            )

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, name: str) -> CertRow | None:
        with self._begin(f"reading {name}") as conn:
            row = conn.execute(select(certs).where(certs.c.name == name)).mappings().first()
        return CertRow.from_db(row) if row is not None else None

    def list(self) -> list[CertRow]:
        with self._begin("listing certificates") as conn:
            rows = conn.execute(select(certs).order_by(certs.c.name)).mappings().all()
        return [CertRow.from_db(r) for r in rows]

    def events(self, name: str | None = None, limit: int = 50) -> builtins.list[EventRow]:
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(events.c.name == name)
        with self._begin("reading the event log") as conn:
            return [EventRow(**dict(r)) for r in conn.execute(query).mappings()]

    # -- writing ---------------------------------------------------------------------------------------

    def _event(self, conn: Connection, name: str, kind: str, message: str, now: int) -> None:
        conn.execute(insert(events).values(ts=now or now_ts(), name=name, kind=kind, host=HOST,
                                           message=message[:60000]))

    def add(self, row: CertRow) -> None:
        try:
            with self._begin(f"adding {row.name}") as conn:
                conn.execute(insert(certs).values(**row.to_db()))
                self._event(conn, row.name, "added", f"added (enable={'Y' if row.enable else 'N'})", 0)
        except StoreError as exc:
            if "Duplicate" in str(exc) or "UNIQUE" in str(exc) or "duplicate key" in str(exc):
                raise StoreError(f"{row.name} is already in the database; use lecentral set-csr "
                                 "to replace its CSR") from None
            raise

    def _update(self, name: str, what: str, kind: str, message: str, now: int,
                **values: Any) -> None:
        with self._begin(what) as conn:
            self._need(conn, name)
            conn.execute(update(certs).where(certs.c.name == name).values(**values))
            self._event(conn, name, kind, message, now)

    def set_csr(self, name: str, csr: bytes, md5_modulus: str, now: int = 0) -> None:
        self._update(name, f"replacing the CSR of {name}", "csr", f"new CSR, md5_modulus {md5_modulus}",
                     now, csr=csr, md5_modulus=md5_modulus)

    def set_enable(self, name: str, enable: bool, now: int = 0) -> None:
        flag = "Y" if enable else "N"
        self._update(name, f"setting enable of {name}", "enable", f"enable={flag}", now, enable=flag)

    def remove(self, name: str, now: int = 0) -> None:
        with self._begin(f"removing {name}") as conn:
            self._need(conn, name)
            conn.execute(delete(certs).where(certs.c.name == name))
            self._event(conn, name, "removed", "row removed", now)

    def save_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int, now: int) -> None:
        # old_* are assigned before crt/ca: MySQL evaluates SET left to right, the others use the
        # old values throughout; either way old_crt/old_ca receive the previous certificate.
        values = {
            certs.c.old_crt: certs.c.crt, certs.c.old_ca: certs.c.ca,
            certs.c.crt: crt, certs.c.ca: ca, certs.c.md5_ca: md5_ca(ca),
            certs.c.ts_expire: ts_expire, certs.c.ts_last_update: now,
            certs.c.count_fail_update: 0,
        }
        with self._begin(f"saving the new certificate of {name}") as conn:
            self._need(conn, name)
            conn.execute(update(certs).where(certs.c.name == name).ordered_values(*values.items()))
            self._event(conn, name, "issued", f"issued, expires at {ts_expire}", now)

    def record_failure(self, name: str, error: str, now: int) -> int:
        with self._begin(f"recording a failure of {name}") as conn:
            self._need(conn, name)
            conn.execute(update(certs).where(certs.c.name == name).values(
                count_fail_update=certs.c.count_fail_update + 1, ts_last_update=now))
            # a NULL count (populate.pl leaves it NULL) + 1 stays NULL: start it at 1
            conn.execute(update(certs).where(certs.c.name == name,
                                             certs.c.count_fail_update.is_(None))
                         .values(count_fail_update=1))
            count = conn.execute(select(certs.c.count_fail_update)
                                 .where(certs.c.name == name)).scalar_one()
            self._event(conn, name, "failed", error, now)
        return int(count)

    def record_event(self, name: str, kind: str, message: str, now: int) -> None:
        with self._begin(f"logging an event for {name}") as conn:
            self._event(conn, name, kind, message, now)

    # -- the renew lock --------------------------------------------------------------------------

    @contextmanager
    def renew_lock(self, timeout: float = 0) -> Iterator[bool]:
        if self.dialect == "sqlite":
            with self._file_lock(timeout) as got:
                yield got
            return
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.shown_url}: cannot connect: {_reason(exc)}") from None
        try:
            got = self._db_lock(conn, timeout)
            try:
                yield got
            finally:
                if got:
                    self._db_unlock(conn)
        finally:
            conn.close()

    def _db_lock(self, conn: Connection, timeout: float) -> bool:
        if self.dialect in ("mysql", "mariadb"):
            got = conn.execute(text("SELECT GET_LOCK(:n, :t)"),
                               {"n": LOCK_NAME, "t": int(timeout)}).scalar()
            return bool(got == 1)
        key = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
        deadline = time.monotonic() + timeout
        while True:
            if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _db_unlock(self, conn: Connection) -> None:
        try:
            if self.dialect in ("mysql", "mariadb"):
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": LOCK_NAME})
            else:
                key = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big",
                                     signed=True)
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except SQLAlchemyError as exc:  # the lock dies with the connection anyway
            log.warning("releasing the renew lock failed: %s", _reason(exc))

    @contextmanager
    def _file_lock(self, timeout: float) -> Iterator[bool]:
        path = f"{self.sqlite_path}.lock" if self.sqlite_path and self.sqlite_path != ":memory:" \
            else None
        if path is None:
            yield True
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        got = False
                        break
                    time.sleep(0.2)
            yield got
        finally:
            os.close(fd)  # closing releases the flock
