"""The agent's read of its own rows with the DBAPI driver itself, without SQLAlchemy.

``lecentral-install run`` reads a few rows of ``certs`` once per run; importing SQLAlchemy and a
dialect for that costs more than the rest of a no-op run. This reader handles the plain cases
only and says ``None`` (the caller then uses the store, :class:`~lecentral.store.sql.SqlStore`)
whenever it cannot promise the store's exact answer:

* a URL other than ``sqlite:///PATH`` or ``mysql+pymysql://`` / ``mariadb+pymysql://`` with at
  most ``?charset=``; a URL the store would refuse; another plugin handling the scheme;
* any SQLite error (the store says what it is, e.g. a missing file);
* a row whose stored name is not exactly the configured one (case, a final dot, blanks, two rows
  for one DNS name: the store's rules, and its messages, apply), or a value of a type other than
  the column's (the store's type handling and ``CertRow.from_db``'s checks decide).

Everything read still goes through :meth:`CertRow.from_db`, so a bad row carries the same
problems and the agent refuses it as loudly as through the store. A MariaDB error is raised as
the store raises it (the same :class:`StoreError` text), so an unreachable server is not tried
twice.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from lecentral.config import mask_url, url_password_problem
from lecentral.errors import StoreError
from lecentral.store.retry import (
    CERTIFICATE_REFUSED,
    GaveUp,
    RetryPolicy,
    gave_up_error,
    retrying,
)
from lecentral.store.rows import CertRow

#: the seed's columns, as ``CertRow.from_db`` reads them (old_ca/old_crt too: it validates them)
COLUMNS = ("name", "enable", "comment", "certbot", "csr", "ca", "crt", "md5_modulus", "md5_ca",
           "ts_expire", "ts_last_update", "count_fail_update", "old_ca", "old_crt", "webroot_path")
_BLOBS = {"csr", "ca", "crt", "old_ca", "old_crt"}
_INTEGERS = {"ts_expire", "ts_last_update", "count_fail_update"}
MYSQL_SCHEMES = ("mysql+pymysql", "mariadb+pymysql")
#: what SqlStore gives the driver (connect_args)
CONNECT_TIMEOUT = 10


class _Unsure(Exception):
    """This reader cannot promise the store's answer: use the store."""


def dns_key(name: str) -> str:
    """A name as DNS compares it (and as the event log files it): lower case, no final dot."""
    return name.strip().lower().rstrip(".")


def database_hint(reason: str) -> str:
    """What to do about a database error, from the server's message."""
    if "lecentral: " in reason:  # refused by lecentral's reporting triggers (migration 0002)
        return ("the database maps each host to one account: on the central host, lecentral "
                "agent add HOST --db-user USER (lecentral agent list shows the mapping)")
    if ("Access denied for user" in reason and "using password" in reason) or \
            "password authentication failed" in reason:
        return ("the database refused this account's name or password: check the user and the "
                "password in [database] url (MariaDB says the same of an account REQUIRE SSL "
                "reached without TLS)")
    if "log_bin_trust_function_creators" in reason:  # 1419: binary log or Galera, no SUPER
        return ("creating lecentral's triggers needs log_bin_trust_function_creators = ON on the "
                "server (on every node of a Galera cluster: docs/ha.md), or this command run by "
                "an account with SUPER")
    if any(words in reason.lower() for words in CERTIFICATE_REFUSED):
        return ("the server's TLS certificate was refused: the CA of the [database] url "
                "(MariaDB ssl_ca, PostgreSQL sslrootcert) must be the one that signed it, and "
                "the url's host a name it holds (docs/agent.md, \"The central database over "
                "TLS\")")
    if "denied" in reason:
        return "this database account lacks that right (contrib/sql/ lists what each account needs)"
    return "check that the server is up and the [database] url is right"


def read_rows(url: str, names: Sequence[str],
              retry: RetryPolicy | None = None) -> dict[str, CertRow | None] | None:
    """The rows of ``names`` (None for a name with no row), or None: ask the store instead.

    Raise :class:`StoreError` for a MariaDB/MySQL error, worded as the store words it; a crowded
    or restarting server is retried by ``retry`` as the store retries (:mod:`lecentral.store.retry`).
    """
    if not names or url_password_problem(url):
        return None
    if len({dns_key(n) for n in names}) != len(set(names)):
        return None  # two configured spellings of one DNS name: the store's lookup decides
    scheme = url.split(":", 1)[0]
    try:
        if scheme == "sqlite":
            raw = _sqlite(url, names)
        elif scheme in MYSQL_SCHEMES:
            raw = _mysql(url, names, retry or RetryPolicy())
        else:
            return None
        return _rows(raw, names)
    except _Unsure:
        return None


def _where(names: Sequence[str], mark: str) -> tuple[str, list[str]]:
    """The store's match (``lower(trim(name))`` is the name or the name with a final dot)."""
    keys = sorted({k for n in names for k in (dns_key(n), f"{dns_key(n)}.")})
    sql = (f"SELECT {', '.join(COLUMNS)} FROM certs WHERE lower(trim(name)) IN "
           f"({', '.join([mark] * len(keys))})")
    return sql, keys


def _sqlite(url: str, names: Sequence[str]) -> list[tuple[Any, ...]]:
    parts = urlsplit(url)
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or parts.query or parts.fragment or "?" in path:
        raise _Unsure
    sql, keys = _where(names, "?")
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        raise _Unsure from None
    try:
        return conn.execute(sql, keys).fetchall()
    except sqlite3.Error:
        raise _Unsure from None
    finally:
        conn.close()


def _mysql(url: str, names: Sequence[str], retry: RetryPolicy) -> list[tuple[Any, ...]]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if set(query) - {"charset"} or parts.fragment or not parts.hostname:
        raise _Unsure
    try:
        port = parts.port or 3306
    except ValueError:
        raise _Unsure from None
    database = parts.path.lstrip("/")
    try:
        import pymysql
    except ImportError:
        raise _Unsure from None
    kwargs: dict[str, Any] = {
        "host": parts.hostname, "port": port, "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""), "database": unquote(database) or None,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    if "charset" in query:
        kwargs["charset"] = query["charset"]
    sql, keys = _where(names, "%s")
    what = f"reading {names[0]}"

    def once() -> list[tuple[Any, ...]]:
        conn = connection_class(pymysql)(**kwargs)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, keys)
                return list(cursor.fetchall())
        finally:
            conn.close()

    try:
        return retrying(retry, what, f"{parts.hostname}:{port}", once)
    except GaveUp as gave:
        raise gave_up_error(mask_url(url), what, f"{parts.hostname}:{port}", gave, retry) from None
    except pymysql.MySQLError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"database {mask_url(url)}: reading {names[0]} failed: {reason}; "
                         f"{database_hint(reason)}") from None


def connection_class(pymysql: Any) -> Any:
    """PyMySQL's Connection, minus the system CA store it loads for nothing.

    Without ``ssl_*`` options PyMySQL (1.2+) prefers TLS without verifying the server
    (``CERT_NONE``, no host name check), yet builds that context with
    ``ssl.create_default_context()``, which reads the system's CA certificates first: ~40 ms
    of a no-op run. This builds the same context without reading them; with any ``ssl``
    options (here: never; through SQLAlchemy, those of the URL) PyMySQL's own method runs.
    """
    base = pymysql.connections.Connection
    if not hasattr(base, "_create_ssl_ctx"):
        return base
    return _quiet_tls(base)


@functools.cache
def _quiet_tls(base: Any) -> Any:
    """:func:`connection_class` of PyMySQL's ``base`` (made once per process)."""
    import ssl

    class Connection(base):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp != {}:
                return super()._create_ssl_ctx(sslp)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
            ctx.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3
            return ctx

    return Connection


def _rows(raw: list[tuple[Any, ...]], names: Sequence[str]) -> dict[str, CertRow | None]:
    wanted = set(names)
    found: dict[str, Mapping[str, Any]] = {}
    for values in raw:
        row = dict(zip(COLUMNS, values, strict=True))
        name = row["name"]
        if not isinstance(name, str) or name not in wanted or name in found:
            raise _Unsure  # not stored exactly as configured, or two rows for one DNS name
        for col, value in row.items():
            if value is None:
                continue
            if col in _BLOBS and not isinstance(value, bytes):
                raise _Unsure
            if col in _INTEGERS and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Unsure
            if col not in _BLOBS and col not in _INTEGERS and not isinstance(value, str):
                raise _Unsure
        found[name] = row
    return {n: CertRow.from_db(found[n]) if n in found else None for n in names}
