"""The SQL store: one implementation for SQLite, MariaDB/MySQL (PyMySQL) and PostgreSQL (psycopg)."""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from lecentral.config import PERCENT_ENCODING, mask_url, url_password_problem
from lecentral.errors import (
    CsrError,
    DatabaseUnavailable,
    LecentralError,
    StoreError,
    UnknownNameError,
)
from lecentral.files_io import file_access_hint, give_to_owner
from lecentral.host import this_host
from lecentral.interfaces import IssuedSave, Store
from lecentral.leftovers import Leftover
from lecentral.names import check_name, md5_ca, normalise_digest, now_ts
from lecentral.store import facts, migrations, renewlock
from lecentral.store.direct import connection_class, database_hint, dns_key
from lecentral.store.retry import GaveUp, RetryPolicy, gave_up_error, retrying
from lecentral.store.rows import (
    AriSweep,
    AriWindowRow,
    CertRow,
    EventRow,
    FreshRow,
    ListedRow,
    LockHolder,
    Swept,
    SweptRow,
)
from lecentral.store.schema import (
    OWN_TABLES,
    ari_windows,
    cert_facts,
    cert_settings,
    certs,
    certs_ddl,
    events,
)
from lecentral.store.schema import leftovers as leftover_table
from lecentral.store.sqlitehint import BUSY_TIMEOUT, sqlite_hint

if TYPE_CHECKING:
    from lecentral.config import DatabaseConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own message, without SQLAlchemy's echo of the statement and its parameters."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]


_hint = database_hint
_dns = dns_key


def _clipped(message: str, size: int = 60000) -> str:
    """``message`` cut to ``size`` bytes of UTF-8, at a character's end: MariaDB's TEXT holds
    65,535 bytes (60,000 characters outside ASCII were up to 240,000: the event refused)."""
    data = message.encode("utf-8", "replace")
    if len(data) <= size:
        return message
    return data[:size].decode("utf-8", "ignore")


def _event_row(name: str, kind: str, message: str, now: int, host: str = "") -> dict[str, Any]:
    """An event's row: ``now`` 0 is the clock's, ``host`` "" this host's."""
    return {"ts": now or now_ts(), "name": _dns(name), "kind": kind,
            "host": host or this_host(), "message": _clipped(message)}


def _ca_changed(previous: Any, new: bytes) -> bool:
    """True if a previous CA chain exists and ``new`` holds other certificates (not merely other
    bytes: line endings or a trailing newline are no new CA)."""
    if previous is None or not bytes(previous).strip():
        return False
    from lecentral.certificates import load_chain

    try:
        return [c.der for c in load_chain(bytes(previous))] != [c.der for c in load_chain(new)]
    except CsrError:
        return bytes(previous).strip() != new.strip()


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
        #: the server, for messages: host:port (no user, no password)
        self.server = (f"{parsed.host or 'localhost'}:{parsed.port}" if parsed.port else
                       parsed.host or "localhost") if self.dialect != "sqlite" else str(parsed.database)
        self.retry = RetryPolicy()  # off until configure() gives [database] retry_for
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
        #: the renew lease while this store holds it (Galera only; see renew_lock)
        self._lease: renewlock.Lease | None = None
        if self.dialect == "sqlite":  # the blob checksum of lecentral/store/facts.py
            event.listen(self.engine, "connect", _register_sqlite_functions)
        elif self.engine.dialect.driver == "pymysql":  # (no CA store read for nothing)
            shown = self.shown_url
            event.listen(self.engine, "do_connect",
                         lambda dialect, record, cargs, cparams:
                         _pymysql_connect(shown, dialect, cargs, cparams))

    # -- plumbing ---------------------------------------------------------------------------------

    def _connect_existing(self) -> sqlite3.Connection:
        """Open the SQLite file read-write, never creating it: a typo in the URL (or an agent
        pointed at the wrong path) must be an error, not a new empty database. Only
        :meth:`init_schema` creates the file."""
        path = str(self.sqlite_path)
        try:
            return sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT)
        except sqlite3.OperationalError:
            if not os.path.exists(path):
                raise StoreError(f"database file {path} does not exist; check [database] url, or "
                                 "create it with lecentral init on the central host") from None
            raise

    def configure(self, settings: DatabaseConfig) -> None:
        self.retry = RetryPolicy.of(settings)

    def _failed(self, what: str, exc: SQLAlchemyError) -> StoreError:
        reason = _reason(exc)
        hint = _hint(reason)
        if self.sqlite_path and ("unable to open database file" in reason or "readonly" in reason):
            hint = file_access_hint(self.sqlite_path)
        elif self.sqlite_path:
            hint = sqlite_hint(reason, self.sqlite_path) or hint
        return StoreError(f"database {self.shown_url}: {what} failed: {reason}; {hint}")

    def _gave_up(self, what: str, gave: GaveUp) -> StoreError:
        return gave_up_error(self.shown_url, what, self.server, gave, self.retry)

    def _connect(self, what: str) -> Connection:
        """A connection, retried while the server is crowded or restarting ([database] retry_for)."""
        try:
            return retrying(self.retry, what, self.server, self.engine.connect)
        except GaveUp as gave:
            raise self._gave_up(what, gave) from None

    @contextmanager
    def transaction(self, what: str) -> Iterator[Connection]:
        """One transaction; any database error becomes a StoreError naming the database (and
        ``what`` was being done). Also what lecentral's other SQL modules (the fleet tables,
        doctor) read and write through. Connecting is retried while the server is crowded or
        restarting (:mod:`lecentral.store.retry`); the transaction itself is not (a write whose
        connection broke may or may not have been committed: see :meth:`read`)."""
        try:
            with self._connect(what) as conn, conn.begin():
                yield conn
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise self._failed(what, exc) from None

    def read(self, what: str, query: Callable[[Connection], T]) -> T:
        """``query(conn)`` in a transaction that only reads, retried as a whole while the server
        is crowded or restarting, even when the connection is lost in the middle (reading
        twice does no harm); errors as :meth:`transaction`'s."""
        def once() -> T:
            with self.engine.connect() as conn, conn.begin():
                return query(conn)

        try:
            return retrying(self.retry, what, self.server, once)
        except GaveUp as gave:
            raise self._gave_up(what, gave) from None
        except SQLAlchemyError as exc:
            raise self._failed(what, exc) from None

    @staticmethod
    def _matching(conn: Connection, name: str) -> builtins.list[str]:
        """The stored names that are ``name`` as DNS compares names: without regard to case.

        The seed's populate.pl stored the name as the admin typed it (``ascii_bin``, capitals
        kept); those rows are found, and updated under their own stored name, never renamed.
        """
        key = _dns(name)
        query = select(certs.c.name).where(func.lower(func.trim(certs.c.name)).in_([key, f"{key}."]))
        return sorted(conn.execute(query).scalars().all())

    @staticmethod
    def _same_name(name: str, stored: builtins.list[str]) -> str:
        return (f"rows {', '.join(repr(s) for s in stored)} all name {_dns(name)} (DNS names "
                f"ignore case); remove all but one (lecentral remove {stored[0]!r}: the name "
                "exactly as stored)")

    def _need(self, conn: Connection, name: str, *, exact: bool = False) -> str:
        """The stored name of the one row that is ``name``; StoreError if none or several
        (``exact``: among several, the one stored exactly as ``name``, to remove the others)."""
        stored = self._matching(conn, name)
        if not stored:
            raise UnknownNameError(f"no certificate named {name!r} in the database (see lecentral "
                                   "list)")
        if len(stored) > 1:
            if exact and name in stored:
                return name
            raise StoreError(self._same_name(name, stored))
        return stored[0]

    @property
    def location(self) -> str:
        return self.shown_url

    def close(self) -> None:
        self.engine.dispose()

    # -- schema --------------------------------------------------------------------------------------

    def init_schema(self) -> list[str]:
        """Create ``certs`` if missing (the seed's DDL, never touched when there), then bring
        lecentral's own tables to the head revision (:meth:`upgrade_schema`); return the tables
        created."""
        if self.sqlite_path and self.sqlite_path != ":memory:":
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            created = not os.path.exists(self.sqlite_path)
            os.close(os.open(self.sqlite_path, os.O_WRONLY | os.O_CREAT, 0o600))  # the one creator
            if created:  # root's init in the service user's /var/lib/lecentral: theirs
                give_to_owner(self.sqlite_path)
        with self._migrating("creating tables") as conn:
            before = set(inspect(conn).get_table_names())
            if "certs" not in before:
                conn.exec_driver_sql(certs_ddl(self.dialect))
            migrations.upgrade(conn)
            after = set(inspect(conn).get_table_names())
        if self.sqlite_path and self.sqlite_path != ":memory:":
            os.chmod(self.sqlite_path, 0o600)  # the table holds no key, but it is ours alone
        return [t for t in ["certs", *(t.name for t in OWN_TABLES)] if t in after - before]

    def upgrade_schema(self) -> tuple[str | None, str]:
        """Run the pending migrations of lecentral's own tables (never ``certs``); return the
        revisions (from, to), from ``None`` for a database that had no version yet."""
        with self._migrating("upgrading lecentral's tables") as conn:
            if not inspect(conn).has_table("certs"):
                raise StoreError(f"database {self.shown_url} has no table certs; run lecentral init")
            return migrations.upgrade(conn)

    @contextmanager
    def _migrating(self, what: str) -> Iterator[Connection]:
        """:meth:`transaction`, and Alembic's own errors (a revision it cannot find) as StoreError."""
        from alembic.script.revision import RevisionError
        from alembic.util.exc import CommandError

        try:
            with self.transaction(what) as conn:
                yield conn
        except migrations.NewerRevisionError as exc:
            raise StoreError(f"database {self.shown_url}: {exc}") from None
        except (CommandError, RevisionError) as exc:
            raise StoreError(f"database {self.shown_url}: {what} failed: {exc}") from None

    def schema_revision(self) -> str | None:
        """The migration revision lecentral's tables are at (``None``: none recorded)."""
        with self.transaction("reading the schema version") as conn:
            return migrations.current(conn)

    def check_schema(self) -> None:
        """Raise StoreError saying what to run if the tables are missing (``lecentral init``) or
        older than this lecentral (``lecentral upgrade``)."""
        if self.sqlite_path and self.sqlite_path != ":memory:" and not Path(self.sqlite_path).exists():
            raise StoreError(f"database file {self.sqlite_path} does not exist; run lecentral init "
                             "(or check [database] url)")
        with self.transaction("reading the schema") as conn:
            existing = set(inspect(conn).get_table_names())
            revision = migrations.current(conn) if migrations.VERSION_TABLE in existing else None
        missing = [t for t in ["certs", *(t.name for t in OWN_TABLES)] if t not in existing]
        head = migrations.head()
        if revision is not None and not migrations.is_known(revision):
            raise StoreError(f"database {self.shown_url}: {migrations.unknown_revision(revision)}")
        if "certs" in missing or (missing and revision is None):
            unseen = (" (or this account may not see it: the central host's account needs the "
                      "grants of contrib/sql/)" if self.dialect != "sqlite" else "")
            raise StoreError(
                f"database {self.shown_url} has no table {', '.join(missing)}{unseen}; run "
                "lecentral init"
            )
        if revision is None:
            raise StoreError(f"database {self.shown_url}: lecentral's tables record no schema "
                             "revision (made by an earlier lecentral); run lecentral upgrade")
        if revision != head:
            raise StoreError(f"database {self.shown_url}: lecentral's tables are at revision "
                             f"{revision}, this lecentral needs {head}; run lecentral upgrade")
        if missing:  # at head, yet a table is gone: dropped by hand, init would not bring it back
            raise StoreError(f"database {self.shown_url} has no table {', '.join(missing)} although "
                             f"its schema is at revision {revision}: it was dropped by hand; restore "
                             "it from a backup")

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, name: str) -> CertRow | None:
        def query(conn: Connection) -> tuple[builtins.list[str], Any]:
            stored = self._matching(conn, name)
            if not stored:
                return stored, None
            pick = self._pick(name, stored)
            return stored, conn.execute(select(certs).where(certs.c.name == pick)).mappings().one()

        stored, row = self.read(f"reading {name}", query)
        if row is None:
            return None
        found = CertRow.from_db(row)
        # several rows for one name: shown and refused (a problem), never one picked silently
        return found.with_twins(str(row["name"]), self._same_name(name, stored)) \
            if len(stored) > 1 else found

    def get_many(self, names: Sequence[str]) -> dict[str, CertRow | None]:
        """:meth:`get` of each of ``names`` in one read: the stored names found by one
        statement (:meth:`_matching_many`: ``get`` scans the table's names once per name),
        the rows by their stored names, 500 to a statement."""
        wanted = list(dict.fromkeys(names))

        def query(conn: Connection) -> tuple[dict[str, builtins.list[str]], dict[str, Any]]:
            stored = self._matching_many(conn, wanted) if wanted else {}
            picks = sorted({pick for pick in (self._pick(name, stored.get(_dns(name), []))
                                              for name in wanted) if pick is not None})
            rows: dict[str, Any] = {}
            for start in range(0, len(picks), 500):
                for row in conn.execute(select(certs).where(
                        certs.c.name.in_(picks[start:start + 500]))).mappings():
                    rows[str(row["name"])] = row
            return stored, rows

        what = f"reading {wanted[0]}" if len(wanted) == 1 else f"reading {len(wanted)} certificates"
        stored, rows = self.read(what, query)
        found: dict[str, CertRow | None] = {}
        for name in wanted:
            same = stored.get(_dns(name), [])
            pick = self._pick(name, same)
            row = rows.get(pick) if pick is not None else None
            if row is None:
                found[name] = None
                continue
            got = CertRow.from_db(row)
            found[name] = got.with_twins(str(row["name"]), self._same_name(name, same)) \
                if len(same) > 1 else got
        return found

    @staticmethod
    def _pick(name: str, stored: builtins.list[str]) -> str | None:
        """Of the stored names of ``name``, the one :meth:`get` reads: the one stored exactly
        as ``name`` (as remove picks it), else the first; None if none."""
        if not stored:
            return None
        return name if name in stored else stored[0]

    def list(self) -> builtins.list[CertRow]:
        rows = self.read("listing certificates",
                         lambda conn: conn.execute(select(certs).order_by(certs.c.name)).mappings().all())
        return sorted(self._marked([CertRow.from_db(r) for r in rows], rows),
                      key=lambda r: r.name)

    def _marked(self, found: builtins.list[CertRow],
                raws: Any) -> builtins.list[CertRow]:
        """``found`` (validated from ``raws``, in that order), each row sharing its DNS name with
        another marked with that problem."""
        stored: dict[str, builtins.list[str]] = {}
        for raw, row in zip(raws, found, strict=True):
            stored.setdefault(row.name, []).append(str(raw["name"]))
        return [row.with_twins(str(raw["name"]), self._same_name(row.name,
                                                                 sorted(stored[row.name])))
                if len(stored[row.name]) > 1 else row for raw, row in zip(raws, found, strict=True)]

    # -- the renew sweep (lecentral/store/facts.py) ------------------------------------------------

    def sweep(self, renew: Any, now: int, ari: AriSweep | None = None) -> Swept:
        """The enabled rows to read, decided in one statement, plus the rows that could be
        duplicates of each other (names not written as DNS compares them, and the rows they
        may duplicate), each marked as :meth:`list` marks them."""
        with self.transaction("selecting the certificates to renew") as conn:
            wanted = {str(name) for name, _ in
                      conn.execute(facts.sweep_query(self.dialect, renew, now, ari)).all()}
            enabled = int(conn.execute(facts.enabled_query()).scalar_one())
            disabled = sorted(str(n) for n in conn.execute(facts.disabled_query()).scalars())
            # a name not as DNS compares it may duplicate a row SQL skipped: read that one too
            keys = set()
            for name in wanted:
                try:
                    keys.add(check_name(name))
                except CsrError:
                    keys.add(name.rstrip())
            names = sorted(wanted | keys)
            raws: builtins.list[Any] = []
            for start in range(0, len(names), 500):
                raws += conn.execute(select(certs).where(certs.c.name.in_(names[start:start + 500]))
                                     ).mappings().all()
        unchanged = enabled - len([raw for raw in raws if raw["enable"] == "Y"])
        rows = self._marked([CertRow.from_db(r) for r in raws], raws)
        return Swept([SweptRow(str(raw["name"]), facts.signature(self.dialect, raw), row)
                      for raw, row in zip(raws, rows, strict=True)], unchanged, disabled)

    def listing(self, now: int) -> Iterator[FreshRow | ListedRow]:
        """Every row for ``lecentral list``, streamed (one pass of the database server over
        ``certs``, the blobs only checksummed: lecentral/store/facts.py):

        - rows whose facts are ``ok`` and unchanged as :class:`FreshRow`, without their blobs,
          in list's order at ``now`` (:func:`facts.list_order`), or on MariaDB/MySQL by name
          alone (the order of ``certs``' key: the server streams the rows as it reads them
          instead of sorting them all first, which cost it about twice the scan; the caller
          puts each in its place, checking the order within each day);
        - then every other row (changed by any writer, bad, invalid, never swept, a column the
          facts do not vouch for not as expected, or possibly sharing its DNS name with another
          row) read in full, 500 at a time, as :class:`ListedRow`, each sharing a DNS name
          marked as :meth:`list` marks it.

        Memory: the names of the rows of the second kind, and one batch of their blobs."""
        f, s = cert_facts.c, cert_settings.c
        fresh = case((func.coalesce(facts.recorded(self.dialect), false()), 1), else_=0)
        query = (select(certs.c.name, certs.c.enable, certs.c.certbot, certs.c.ts_expire,
                        certs.c.ts_last_update, certs.c.count_fail_update, certs.c.webroot_path,
                        certs.c.comment, f.names, f.not_before, f.not_after, s.profile,
                        s.issuer_ca, s.issuer_ca_directory, fresh.label("fresh"))
                 .select_from(certs.outerjoin(cert_facts, f.name == certs.c.name)
                              .outerjoin(cert_settings, s.name == certs.c.name))
                 .order_by(*(facts.list_order(self.dialect, now)
                             if self.dialect not in ("mysql", "mariadb") else [certs.c.name])))
        with self.transaction("listing certificates") as conn:
            sharing = self._sharing(conn)
            involved = {name for names in sharing.values() for name in names}
            later: builtins.list[str] = []
            streamed = conn.execution_options(stream_results=True, yield_per=1000)
            for part in streamed.execute(query).partitions():
                for raw in part:
                    name = raw[0]
                    # what the facts do not vouch for, checked as CertRow.from_db checks it
                    if raw[14] and name not in involved and raw[1] in ("Y", "N", None) \
                            and type(raw[4]) in INT_OR_NONE and type(raw[5]) in INT_OR_NONE:
                        names = facts.names_of(raw[8])
                        if names is not None:
                            yield FreshRow(*raw[:8], names, *raw[9:14])
                            continue
                    later.append(str(name))
            yield from self._listed(conn, list(dict.fromkeys(later)), sharing)

    def read_named(self, names: builtins.list[str]) -> builtins.list[ListedRow]:
        """The rows stored as ``names``, read in full and validated as :meth:`listing` reads the
        rows it cannot vouch for (a row sharing its DNS name with another marked), in one
        transaction; a name no longer stored is left out."""
        with self.transaction("reading certificates") as conn:
            return builtins.list(self._listed(conn, names, self._sharing(conn)))

    def _sharing(self, conn: Connection) -> dict[str, builtins.list[str]]:
        """DNS name -> the stored names of the rows with that DNS name, for every row whose name
        may not be written as DNS compares it and the rows it may duplicate (usually none)."""
        odd = [str(n) for n in conn.execute(select(certs.c.name)
                                            .where(facts.odd_names(self.dialect))).scalars()]
        keys = {n: _key(n) for n in odd}
        partners = [str(n) for n in conn.execute(select(certs.c.name).where(
            certs.c.name.in_(sorted(set(keys.values()))))).scalars()] if keys else []
        for name in partners:
            keys[name] = _key(name)
        by_key: dict[str, builtins.list[str]] = {}
        for name, key in keys.items():
            by_key.setdefault(key, []).append(name)
        return {key: sorted(set(names)) for key, names in by_key.items()}

    def _listed(self, conn: Connection, names: builtins.list[str],
                sharing: dict[str, builtins.list[str]]) -> Iterator[ListedRow]:
        """``names`` read in full and validated, 500 at a time, with their settings."""
        s = cert_settings.c
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            fulls = conn.execute(select(certs).where(certs.c.name.in_(chunk))
                                 .order_by(certs.c.name)).mappings().all()
            rows = [CertRow.from_db(full) for full in fulls]
            keys = sorted({_dns(row.name) for row in rows})
            settings = {str(r[0]): r for r in conn.execute(
                select(s.name, s.profile, s.issuer_ca, s.issuer_ca_directory)
                .where(s.name.in_(keys)))}
            for full, row in zip(fulls, rows, strict=True):
                stored = sharing.get(row.name, [])
                if len(stored) > 1:
                    row = row.with_twins(str(full["name"]), self._same_name(row.name, stored))
                found = settings.get(_dns(row.name))
                profile = None if found is None or found[1] is None else str(found[1])
                issuer = None if found is None or found[2] is None else \
                    (str(found[2]), str(found[3] or ""))
                yield ListedRow(row, profile, issuer)

    def record_facts(self, swept: builtins.list[SweptRow]) -> None:
        """Derive and store the facts of the swept rows (replacing what was there)."""
        if not swept:
            return
        now = now_ts()
        values = [{"name": s.stored_name, **s.signature, **facts.derive(s.stored_name, s.row),
                   "ts_checked": now} for s in swept]
        self._replace_rows(cert_facts, values, "remembering the checked certificates")

    def ari_windows(self, names: builtins.list[str]) -> dict[str, AriWindowRow]:
        found: dict[str, AriWindowRow] = {}
        with self.transaction("reading the cached renewal windows") as conn:
            for start in range(0, len(names), 500):
                for raw in conn.execute(select(ari_windows).where(
                        ari_windows.c.name.in_(names[start:start + 500]))).mappings():
                    found[str(raw["name"])] = AriWindowRow(**dict(raw))
        return found

    def ari_failing(self, began_before: int, asked_after: int) -> tuple[int, int | None]:
        """(how many, since when the first) enabled rows whose renewal-information requests
        have failed since before ``began_before`` and were still failing at a request after
        ``asked_after``: the failure rows of lecentral/renew/ari.py (a window of 0 to 0; their
        ``ts_fetched`` is when the failures began, their ``ts_retry`` the last failure's time
        plus its back-off)."""
        a, c = ari_windows.c, certs.c
        query = (select(func.count(), func.min(a.ts_fetched))
                 .select_from(ari_windows.join(certs, c.name == a.name))
                 .where(a.window_start == 0, a.window_end == 0, a.due_at == 0,
                        a.ts_fetched < began_before, a.ts_retry > asked_after,
                        func.upper(c.enable) == "Y"))
        with self.transaction("reading the failing renewal-information requests") as conn:
            count, first = conn.execute(query).one()
        return int(count or 0), (int(first) if count and first is not None else None)

    def save_ari_windows(self, windows: builtins.list[AriWindowRow]) -> None:
        if not windows:
            return
        self._replace_rows(ari_windows, [dataclasses.asdict(w) for w in windows],
                           "remembering the renewal windows")

    def _replace_rows(self, table: Any, values: builtins.list[dict[str, Any]], what: str) -> None:
        """``values`` written into ``table`` (keyed by ``name``), replacing the rows of their
        names, 500 at a time in one transaction."""
        with self.transaction(what) as conn:
            for start in range(0, len(values), 500):
                chunk = values[start:start + 500]
                conn.execute(delete(table).where(table.c.name.in_([v["name"] for v in chunk])))
                conn.execute(insert(table), chunk)

    def events(self, name: str | None = None, limit: int = 50) -> builtins.list[EventRow]:
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(events.c.name == _dns(name))
        with self.transaction("reading the event log") as conn:
            return [EventRow(**dict(r)) for r in conn.execute(query).mappings()]

    # -- writing ---------------------------------------------------------------------------------------

    def _event(self, conn: Connection, name: str, kind: str, message: str, now: int,
               host: str = "") -> None:
        conn.execute(insert(events).values(**_event_row(name, kind, message, now, host)))

    def add(self, row: CertRow) -> None:
        try:
            with self.transaction(f"adding {row.name}") as conn:
                stored = self._matching(conn, row.name)
                if stored:  # ascii_bin would take 'www.x' beside 'WWW.x': the same DNS name
                    as_ = f" (as {stored[0]!r})" if stored != [row.name] else ""
                    raise StoreError(f"{row.name} is already in the database{as_}; use lecentral "
                                     "set-csr to replace its CSR")
                conn.execute(insert(certs).values(**row.to_db()))
                self._event(conn, row.name, "added", f"added (enable={'Y' if row.enable else 'N'})", 0)
        except StoreError as exc:
            if "Duplicate" in str(exc) or "UNIQUE" in str(exc) or "duplicate key" in str(exc):
                raise StoreError(f"{row.name} is already in the database; use lecentral set-csr "
                                 "to replace its CSR") from None
            raise

    def _update(self, name: str, what: str, kind: str, message: str, now: int,
                **values: Any) -> None:
        with self.transaction(what) as conn:
            key = self._need(conn, name)
            conn.execute(update(certs).where(certs.c.name == key).values(**values))
            self._event(conn, name, kind, message, now)

    def set_csr(self, name: str, csr: bytes, md5_modulus: str, now: int = 0) -> None:
        self._update(name, f"replacing the CSR of {name}", "csr", f"new CSR, md5_modulus {md5_modulus}",
                     now, csr=csr, md5_modulus=md5_modulus)

    def set_enable(self, name: str, enable: bool, now: int = 0) -> bool:
        flag = "Y" if enable else "N"
        with self.transaction(f"setting enable of {name}") as conn:
            key = self._need(conn, name)
            current = conn.execute(select(certs.c.enable).where(certs.c.name == key)).scalar()
            if current == flag:  # already so: no write, no event (NULL is made 'N' by disable)
                return False
            conn.execute(update(certs).where(certs.c.name == key).values(enable=flag))
            self._event(conn, name, "enable", f"enable={flag}", now)
        return True

    def remove(self, name: str, now: int = 0) -> None:
        with self.transaction(f"removing {name}") as conn:
            key = self._need(conn, name, exact=True)
            conn.execute(delete(certs).where(certs.c.name == key))
            conn.execute(delete(cert_facts).where(cert_facts.c.name == key))
            conn.execute(delete(ari_windows).where(ari_windows.c.name == key))
            if len(self._matching(conn, name)) == 0:  # a name re-added later starts afresh
                conn.execute(delete(cert_settings).where(cert_settings.c.name == _dns(name)))
                conn.execute(delete(ari_windows).where(ari_windows.c.name == _dns(name)))
            self._event(conn, name, "removed", "row removed", now)

    # -- per-certificate settings (lecentral_cert_settings) --------------------------------------

    def profiles(self) -> dict[str, str]:
        with self.transaction("reading the certificates' settings") as conn:
            found = conn.execute(select(cert_settings.c.name, cert_settings.c.profile)
                                 .where(cert_settings.c.profile.is_not(None))).all()
        return {str(name): str(profile) for name, profile in found}

    def set_profile(self, name: str, profile: str | None, now: int = 0) -> None:
        now = now or now_ts()
        with self.transaction(f"setting the profile of {name}") as conn:
            self._need(conn, name)
            key = _dns(name)
            self._settings(conn, key, now, profile=profile)
            message = (f"profile {profile}" if profile
                       else "profile cleared ([acme] profile applies)")
            self._event(conn, name, "settings", message, now)

    @staticmethod
    def _settings(conn: Connection, key: str, now: int, **values: Any) -> None:
        """Set ``values`` in the settings row of ``key``, made if missing (its other columns kept:
        a profile survives a renewal recording its CA, and the other way round)."""
        done = conn.execute(update(cert_settings).where(cert_settings.c.name == key)
                            .values(ts_changed=now, **values))
        if not done.rowcount:
            conn.execute(insert(cert_settings).values(name=key, ts_changed=now, **values))

    def issuing_cas(self) -> dict[str, tuple[str, str]]:
        with self.transaction("reading the certificates' issuing CAs") as conn:
            found = conn.execute(select(cert_settings.c.name, cert_settings.c.issuer_ca,
                                        cert_settings.c.issuer_ca_directory)
                                 .where(cert_settings.c.issuer_ca.is_not(None))).all()
        return {str(name): (str(ca), str(directory or "")) for name, ca, directory in found}

    def save_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int, now: int,
                    issuer_ca: tuple[str, str] | None = None) -> None:
        lease = self._lease
        if lease is None:
            self._save_issued(name, crt, ca, ts_expire, now, issuer_ca)
            return
        try:
            self._save_issued(name, crt, ca, ts_expire, now, issuer_ca, lease)
        except (CsrError, UnknownNameError):
            raise  # this row's problem; the lease was extended in the same transaction
        except StoreError as exc:
            # the save and the lease's extension failed together (the node went down, Galera
            # refused the commit): whether the lease is still ours is unknown, so the run stops
            lease.lose(f"saving {name} failed ({exc})")
            raise

    def _save_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int, now: int,
                     issuer_ca: tuple[str, str] | None,
                     lease: renewlock.Lease | None = None) -> None:
        with self.transaction(f"saving the new certificate of {name}") as conn:
            if lease is not None:  # Galera: saved only while the lease is ours
                lease.fence(conn)
            self._write_issued(conn, self._need(conn, name),
                               IssuedSave(name, crt, ca, ts_expire, now, issuer_ca))

    def save_issued_many(self, saves: builtins.list[IssuedSave]
                         ) -> builtins.list[LecentralError | None]:
        """One transaction for all (one commit: on SQLite one set of fsyncs instead of one per
        certificate), and one look-up of their rows instead of one scan each. A row's own
        problem (unknown, its CSR replaced, two rows of one DNS name) is found before anything
        is written for it: that certificate gets its error, the others are saved. A database
        error fails the transaction; then each is saved on its own, as :meth:`save_issued`
        would (one row's failure never costs the others), except under a Galera lease, which
        is then lost: every one gets the error (their spool copies keep them)."""
        if len(saves) < 2:
            return super().save_issued_many(saves)
        lease = self._lease
        names = ", ".join(save.name for save in saves)
        results: builtins.list[LecentralError | None] = []
        try:
            with self.transaction(f"saving the new certificates of {names}") as conn:
                if lease is not None:  # Galera: saved only while the lease is ours
                    lease.fence(conn)
                stored = self._matching_many(conn, [save.name for save in saves])
                for save in saves:
                    try:
                        key = self._one_stored(save.name, stored.get(_dns(save.name), []))
                        self._write_issued(conn, key, save)
                    except LecentralError as exc:  # raised before this row's first write
                        results.append(exc)
                    else:
                        results.append(None)
        except StoreError as exc:
            if lease is not None:
                lease.lose(f"saving {names} failed ({exc})")
                return [exc for _ in saves]
            if isinstance(exc, DatabaseUnavailable):  # each alone would wait as long again
                return [exc for _ in saves]
            log.warning("%s; saving each of them on its own", exc)
            return super().save_issued_many(saves)
        return results

    @staticmethod
    def _matching_many(conn: Connection, names: builtins.list[str]
                       ) -> dict[str, builtins.list[str]]:
        """:meth:`_matching` of several names with one statement: the stored names by the DNS
        name (``_dns``) of the names asked for."""
        keys = {_dns(name) for name in names}
        folded = func.lower(func.trim(certs.c.name))
        query = select(certs.c.name, folded).where(
            folded.in_(sorted(keys | {f"{key}." for key in keys})))
        found: dict[str, builtins.list[str]] = {}
        for stored, key in conn.execute(query).all():
            found.setdefault(str(key).removesuffix("."), []).append(str(stored))
        return {key: sorted(stored) for key, stored in found.items()}

    def _one_stored(self, name: str, stored: builtins.list[str]) -> str:
        """:meth:`_need`'s answer from the names :meth:`_matching` found."""
        if not stored:
            raise UnknownNameError(f"no certificate named {name!r} in the database (see lecentral "
                                   "list)")
        if len(stored) > 1:
            raise StoreError(self._same_name(name, stored))
        return stored[0]

    def _write_issued(self, conn: Connection, key: str, save: IssuedSave) -> None:
        """The writes of :meth:`save_issued` to the row stored as ``key``; CsrError, nothing
        written, if its CSR was replaced meanwhile."""
        name, crt, ca, ts_expire, now, issuer_ca = (save.name, save.crt, save.ca, save.ts_expire,
                                                    save.now, save.issuer_ca)
        previous, modulus, stored_md5_ca = conn.execute(
            select(certs.c.ca, certs.c.md5_modulus, certs.c.md5_ca)
            .where(certs.c.name == key).with_for_update()).one()
        from lecentral.certificates import Certificate

        leaf = Certificate.load(crt, f"the certificate issued for {name}").md5_modulus
        if normalise_digest(str(modulus)) != leaf:
            # lecentral set-csr ran while the CA was issuing: this certificate goes with the
            # old key, which the server no longer has
            raise CsrError(f"{name}: its CSR was replaced while this certificate was being "
                             f"issued (md5_modulus is now {modulus}, the certificate's key "
                             f"{leaf}); not saved: the next renew orders one for the new CSR")
        # old_crt is assigned before crt: MySQL evaluates SET left to right, the others use
        # the old values throughout; either way old_crt receives the previous certificate.
        values: dict[Any, Any] = {certs.c.old_crt: certs.c.crt}
        if _ca_changed(previous, ca):  # the seed: old_ca is the old CA once a new CA came
            values[certs.c.old_ca] = previous
        new_md5_ca = md5_ca(ca)
        if previous is not None and bytes(previous) == ca and stored_md5_ca and \
                normalise_digest(str(stored_md5_ca)) == new_md5_ca:
            # the same CA: md5_ca stays as written (a seed's "(stdin)= hex" included), or a
            # Perl agent comparing it with what it installed would see a new CA
            new_md5_ca = str(stored_md5_ca)
        values.update({
            certs.c.crt: crt, certs.c.ca: ca, certs.c.md5_ca: new_md5_ca,
            certs.c.ts_expire: ts_expire, certs.c.ts_last_update: now,
            certs.c.count_fail_update: 0,
        })
        conn.execute(update(certs).where(certs.c.name == key).ordered_values(*values.items()))
        by = ""
        if issuer_ca is not None:
            self._settings(conn, _dns(name), now, issuer_ca=issuer_ca[0],
                           issuer_ca_directory=issuer_ca[1][:500])
            by = f" by CA {issuer_ca[0]} ({issuer_ca[1]})"
        self._event(conn, name, "issued", f"issued{by}, expires at {ts_expire}", now)

    def record_failure(self, name: str, error: str, now: int) -> int:
        with self.transaction(f"recording a failure of {name}") as conn:
            key = self._need(conn, name)
            conn.execute(update(certs).where(certs.c.name == key).values(
                count_fail_update=certs.c.count_fail_update + 1, ts_last_update=now))
            # a NULL count (populate.pl leaves it NULL) + 1 stays NULL: start it at 1
            conn.execute(update(certs).where(certs.c.name == key,
                                             certs.c.count_fail_update.is_(None))
                         .values(count_fail_update=1))
            count = conn.execute(select(certs.c.count_fail_update)
                                 .where(certs.c.name == key)).scalar_one()
            self._event(conn, name, "failed", error, now)
        return int(count)

    def record_event(self, name: str, kind: str, message: str, now: int, host: str = "") -> None:
        with self.transaction(f"logging an event for {name}") as conn:
            self._event(conn, name, kind, message, now, host)

    def record_events(self, records: Sequence[tuple[str, str, str, int]]) -> None:
        """The events in one transaction, 1,000 rows to a statement."""
        if not records:
            return
        rows = [_event_row(name, kind, message, now) for name, kind, message, now in records]
        with self.transaction(f"logging {len(rows)} events") as conn:
            for start in range(0, len(rows), 1000):
                conn.execute(insert(events), rows[start:start + 1000])

    # -- challenge records left behind ------------------------------------------------------------

    def add_leftover(self, leftover: Leftover, now: int) -> Leftover:
        with self.transaction(f"recording a leftover of {leftover.name}") as conn:
            result = conn.execute(insert(leftover_table).values(
                ts=now, name=leftover.name, kind=leftover.kind, host=leftover.host,
                target=leftover.target, data=json.dumps(leftover.data, sort_keys=True),
                error=_clipped(leftover.error), attempts=1, ts_last_try=now))
            self._event(conn, leftover.name, "leftover",
                        f"left behind: {leftover.describe()} ({leftover.error})", now)
            key = result.inserted_primary_key
        return dataclasses.replace(leftover, id=int(key[0]) if key else None, ts=now,
                                   ts_last_try=now)

    def leftovers(self) -> builtins.list[Leftover]:
        with self.transaction("reading lecentral_leftovers") as conn:
            rows = conn.execute(select(leftover_table).order_by(leftover_table.c.id)).mappings().all()
        return [_leftover(r) for r in rows]

    def leftover_removed(self, leftover: Leftover, now: int) -> None:
        with self.transaction(f"forgetting a leftover of {leftover.name}") as conn:
            conn.execute(delete(leftover_table).where(leftover_table.c.id == leftover.id))
            self._event(conn, leftover.name, "cleaned", f"removed: {leftover.describe()}", now)

    def leftover_still_there(self, leftover: Leftover, error: str, now: int) -> Leftover:
        with self.transaction(f"updating a leftover of {leftover.name}") as conn:
            conn.execute(update(leftover_table).where(leftover_table.c.id == leftover.id).values(
                attempts=leftover_table.c.attempts + 1, error=_clipped(error), ts_last_try=now))
            self._event(conn, leftover.name, "leftover",
                        f"still left behind after {leftover.attempts + 1} removals: "
                        f"{leftover.describe()} ({error})", now)
        return dataclasses.replace(leftover, error=error, attempts=leftover.attempts + 1,
                                   ts_last_try=now)

    # -- the renew lock (lecentral.store.renewlock) ---------------------------------------------

    @contextmanager
    def renew_lock(self, timeout: float = 0, lease: float = renewlock.LEASE_SECONDS
                   ) -> Iterator[bool]:
        if self.dialect == "sqlite":
            with self._file_lock(timeout) as got:
                yield got
            return
        try:
            conn = self._connect("taking the renew lock")
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.shown_url}: cannot connect: {_reason(exc)}") from None
        try:
            try:
                galera = self.dialect in ("mysql", "mariadb") and renewlock.wsrep_on(conn)
            except SQLAlchemyError as exc:
                raise StoreError(f"database {self.shown_url}: taking the renew lock failed: "
                                 f"{_reason(exc)}") from None
            if galera:
                conn.close()  # the lease is rows, not a session: no connection is held
                with self._lease_lock(timeout, lease) as got:
                    yield got
                return
            try:
                got = self._acquire(lambda wait: renewlock.db_try_lock(conn, self.dialect, wait),
                                    timeout)
            except SQLAlchemyError as exc:
                raise StoreError(f"database {self.shown_url}: taking the renew lock failed: "
                                 f"{_reason(exc)}") from None
            if not got:
                yield False
                return
            holder = renewlock.this_holder()
            try:
                with self.transaction("recording the renew lock's holder") as record:
                    renewlock.db_record_holder(record, holder)
                yield True
            finally:
                self._db_release(conn, holder)
        finally:
            try:
                conn.close()
            except SQLAlchemyError as exc:  # a server gone: its rollback cannot be read back
                # (the lock dies with the connection; the run's own error, if any, goes on)
                log.warning("closing the renew lock's connection failed: %s", _reason(exc))

    @contextmanager
    def _lease_lock(self, timeout: float, seconds: float) -> Iterator[bool]:
        """The renew lock of a Galera cluster: a lease row (lecentral.store.renewlock.Lease)."""
        lease = renewlock.Lease(self.engine, seconds, self.shown_url, _reason)

        def attempt(wait: float) -> bool:
            deadline = time.monotonic() + wait
            while not lease.try_take():
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)
            return True

        if not self._acquire(attempt, timeout):
            yield False
            return
        self._lease = lease
        try:
            yield True
        finally:
            self._lease = None
            lease.release()

    @property
    def leased(self) -> bool:
        """Whether the renew lock is a lease (Galera) checked per certificate."""
        return self._lease is not None

    def renew_lock_check(self) -> None:
        if self._lease is not None:
            self._lease.check()

    def renew_lock_holder(self) -> LockHolder | None:
        if self.dialect == "sqlite":
            path = self._lock_path()
            return renewlock.file_read_holder(path) if path else None
        with self.transaction("reading the renew lock's holder") as conn:
            return renewlock.db_read_holder(conn)

    def _acquire(self, attempt: Callable[[float], bool], timeout: float) -> bool:
        """Try at once; if taken and ``timeout`` allows, say who holds it, then wait for it."""
        if attempt(0):
            return True
        if timeout <= 0:
            return False
        holder = self._holder_quietly()
        log.warning("the renew lock of %s is held (%s); waiting up to %g s for it",
                    self.shown_url, holder or "its holder is not recorded", timeout)
        return attempt(timeout)

    def _holder_quietly(self) -> LockHolder | None:
        try:
            return self.renew_lock_holder()
        except StoreError as exc:  # only for a message: the lock itself is what counts
            log.warning("%s", exc)
            return None

    def _db_release(self, conn: Connection, holder: LockHolder) -> None:
        try:
            with self.transaction("removing the renew lock's holder") as record:
                renewlock.db_clear_holder(record, holder)
        except StoreError as exc:  # a stale record only misnames a holder; the next one replaces it
            log.warning("%s", exc)
        try:
            renewlock.db_unlock(conn, self.dialect)
        except SQLAlchemyError as exc:  # the lock dies with the connection anyway
            log.warning("releasing the renew lock failed: %s", _reason(exc))

    def _lock_path(self) -> str | None:
        if self.sqlite_path and self.sqlite_path != ":memory:":
            return f"{self.sqlite_path}.lock"
        return None

    @contextmanager
    def _file_lock(self, timeout: float) -> Iterator[bool]:
        path = self._lock_path()
        if path is None:  # an in-memory database lives in one process: nothing to lock against
            yield True
            return
        try:
            created = not os.path.exists(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if created:
                give_to_owner(path)
        except OSError as exc:
            raise StoreError(f"cannot open the renew lock file {path}: {exc.strerror}; "
                             f"{file_access_hint(path)}") from None
        try:
            got = self._acquire(lambda wait: renewlock.file_try_lock(fd, wait), timeout)
            if got:
                renewlock.file_record_holder(fd, renewlock.this_holder())
            try:
                yield got
            finally:
                if got:
                    renewlock.file_clear_holder(fd)
        finally:
            os.close(fd)  # closing releases the flock


#: the types CertRow.from_db accepts in an integer column (a bool is not an int there)
INT_OR_NONE = (int, type(None))


def _key(name: str) -> str:
    """A stored name as rows compare it (what CertRow.from_db makes of it)."""
    try:
        return check_name(name.rstrip())
    except CsrError:
        return name.rstrip()


def _pymysql_connect(shown_url: str, dialect: Any, cargs: Any, cparams: Any) -> Any:
    """PyMySQL's connection as the dialect would make it, minus the system CA store its
    preferred-TLS context loads for nothing (:func:`lecentral.store.direct.connection_class`:
    20-40 ms of every command on MariaDB); with ``ssl`` options in the URL, PyMySQL's own.

    An option of the URL PyMySQL cannot use (an ``ssl_ca`` file missing, a directory, not
    PEM certificates; a misspelt option) is a :class:`StoreError` naming it, not the raw
    exception (PyMySQL reports the socket's errors as its own; these come before any)."""
    try:
        return connection_class(dialect.loaded_dbapi)(*cargs, **cparams)
    except (OSError, TypeError, ValueError) as exc:
        ssl = cparams.get("ssl") if isinstance(exc, OSError) else None  # (a file's error)
        named = "; ".join(f"ssl_{key} = {ssl[key]}" for key in ("ca", "capath", "cert", "key")
                          if isinstance(ssl, dict) and ssl.get(key))
        raise StoreError(
            f"database {shown_url}: its options cannot be used: {exc}"
            + (f" ({named}: a readable PEM file of certificates, or of the client's key)"
               if named else "")
            + "; check the options of [database] url (docs/agent.md, \"The central database "
            "over TLS\")") from None


def _register_sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    """The blob checksum SQL compares in a sweep (lecentral/store/facts.py), on a new connection."""
    dbapi_connection.create_function(facts.SQLITE_SUM, 3, facts.sqlite_sum, deterministic=True)


def _leftover(row: Any) -> Leftover:
    """A row of lecentral_leftovers; unreadable ``data`` becomes ``{}`` (the retry then says so)."""
    try:
        data = json.loads(row["data"])
    except ValueError:
        data = {}
    return Leftover(kind=str(row["kind"]), name=str(row["name"]), target=str(row["target"]),
                    data=data if isinstance(data, dict) else {}, error=str(row["error"]),
                    host=str(row["host"]), id=int(row["id"]), ts=int(row["ts"]),
                    attempts=int(row["attempts"]), ts_last_try=int(row["ts_last_try"]))
