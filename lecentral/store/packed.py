"""Many rows read as one string each on MariaDB and MySQL.

PyMySQL decodes every column of every row in Python: a length, a slice, a decode and a
conversion each. For the fleet's pass over ``certs`` (100,000 rows × 13 columns) that is about
half a second of the client's CPU, more than the server needs to send them. :func:`rows` has the
server join a row's text and integer columns into one string instead, which Python splits:

- each value is ``=`` and its text, or ``!`` for NULL, joined by :data:`FS`;
- an :data:`FS` inside a text value is sent as :data:`FS` ``+`` (no value starts with ``+``), so
  the split is exact whatever the table holds: a row that splits into more parts than it has
  values is joined again where a part starts with ``+``;
- an integer column comes back as the integer (or, if its text is not one, e.g. a seed table
  whose column holds something else, as the text, which the caller validates as it would a
  value PyMySQL returned as text); binary columns (``crt``), long texts (a column typed
  ``Text``: the fleet's aggregated targets, about a kilobyte a row; the server would copy
  each into the packed string and escape it, a sixth of its time for the pass of ``fleet
  --json``) and any other type cross the wire as their own columns.

The rows come in the query's order, with the query's keys, as sequences of the same values
(``rows[i][j]`` is what the plain query would give) on every database; on the others the query
is executed as it is. In a transaction, where the columns not packed are all blobs (the fleet's
``crt``), the rows come straight from PyMySQL's unbuffered cursor: no value needs SQLAlchemy's
processing, and its row objects cost a quarter of a second per 100,000 rows (:func:`_streamed`);
likewise where the others are long texts, which PyMySQL decodes as SQLAlchemy would have them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Integer, LargeBinary, String, Text, func
from sqlalchemy.sql import sqltypes

#: between the values of a packed row (ASCII's record separator)
FS = "\x1e"
#: after an FS that is part of a value
ESCAPED = "+"


def rows(conn: Connection, query: Any, yield_per: int = 2000
         ) -> tuple[list[str], Iterator[Sequence[Any]]]:
    """(the keys, the rows) of ``query`` (a ``select``), streamed ``yield_per`` at a time."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        result = conn.execute(query.execution_options(yield_per=yield_per))
        return list(map(str, result.keys())), iter(result)
    cols = list(query.selected_columns)
    kinds = [_kind(c) for c in cols]
    packed = [i for i, k in enumerate(kinds) if k]
    if len(packed) < 2:
        result = conn.execute(query.execution_options(yield_per=yield_per))
        return list(map(str, result.keys())), iter(result)
    raw = [i for i, k in enumerate(kinds) if not k]
    fields = [func.ifnull(func.concat("=", _escaped(cols[i]) if kinds[i] == "str" else cols[i]),
                          "!") for i in packed]
    one = func.concat_ws(FS, *fields, type_=String).label("packed")
    query = query.with_only_columns(one, *(cols[i] for i in raw), maintain_column_froms=True)
    fetched: Iterator[Sequence[Any]]
    if conn.in_transaction() and all(_plain_value(cols[i].type) for i in raw):
        fetched = _streamed(conn, query, yield_per)  # (no value needs SQLAlchemy's processing)
    else:
        fetched = iter(conn.execute(query.execution_options(yield_per=yield_per)))
    keys = [str(c.key) for c in cols]
    return keys, _unpacked(fetched, len(packed), raw,
                           [j for j, i in enumerate(packed) if kinds[i] == "int"])


def _kind(col: Any) -> str:
    """``str`` or ``int`` for a column packed as such, else ``""`` (its own column: a blob, a
    long text, any other type)."""
    kind = col.type
    if isinstance(kind, sqltypes.Integer):
        return "int"
    if isinstance(kind, String) and not isinstance(kind, Text):
        return "str"
    return ""


def _plain_value(kind: Any) -> bool:
    """True for a column type whose values PyMySQL gives as SQLAlchemy would: a blob's bytes,
    a text's string (SQLAlchemy converts neither on MariaDB and MySQL)."""
    return isinstance(kind, LargeBinary | Text)


def _escaped(col: Any) -> Any:
    return func.replace(col, FS, FS + ESCAPED)


def _unpacked(fetched: Iterator[Sequence[Any]], count: int, raw: Sequence[int],
              ints: Sequence[int]) -> Iterator[list[Any]]:
    """The rows ``fetched`` (the ``count`` values packed, then the columns at ``raw``) as
    the plain query's."""
    at = list(enumerate(raw, 1))
    for row in fetched:
        parts = str(row[0]).split(FS)
        if len(parts) != count:
            parts = _joined(parts, count)
        values: list[Any] = [None if p == "!" else p[1:] for p in parts]
        for j in ints:
            value = values[j]
            if value is not None:
                try:
                    values[j] = int(value)
                except ValueError:
                    pass  # not an integer's text: the caller validates it as text
        for j, i in at:  # in ascending order: each lands at its place
            values.insert(i, row[j])
        yield values


def _joined(parts: list[str], count: int) -> list[str]:
    """``parts`` with each one that starts with :data:`ESCAPED` joined to the one before (an FS
    that was in a value); it must then be ``count`` values."""
    out: list[str] = []
    for part in parts:
        if part[:1] == ESCAPED and out:
            out[-1] += FS + part[1:]
        else:
            out.append(part)
    if len(out) != count or any(p[:1] not in ("=", "!") for p in out):
        raise AssertionError(f"a packed row did not split into {count} values")
    return out


def _streamed(conn: Connection, query: Any, size: int) -> Iterator[Sequence[Any]]:
    """The rows of ``query`` as the driver gives them (PyMySQL's unbuffered cursor on the
    connection of ``conn``'s transaction, ``size`` at a time): SQLAlchemy's row objects cost
    a quarter of a second of the client's CPU per 100,000 rows, and the columns read here need
    none of its processing (text from the packed column and long texts, bytes from blobs).
    The statement runs now. Its parameters are sent as they are: those of types whose values
    SQLAlchemy would convert first (anything but texts, integers, blobs) make it run through
    SQLAlchemy instead. PyMySQL's rows are read off the wire in one loop where
    :func:`lecentral.store.wire.rows` can (half the client's time they took). The driver's
    errors, then or while the rows stream, are raised as
    SQLAlchemy's; one that lost the connection invalidates it, as SQLAlchemy does (the
    transaction's rollback then does not replace the error with its own)."""
    from sqlalchemy import exc
    from sqlalchemy.types import NullType

    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    if not all(isinstance(b.type, String | Integer | LargeBinary | NullType)
               for b in compiled.binds.values()):
        return iter(conn.execute(query.execution_options(yield_per=size)))
    statement, params = compiled.string, compiled.params
    dbapi = conn.dialect.loaded_dbapi
    connection = conn.connection.dbapi_connection
    assert connection is not None  # (a connection in a transaction)

    def failed(error: Exception, cursor: Any) -> Exception:
        lost = isinstance(error, dbapi.Error) and conn.dialect.is_disconnect(
            error, connection, cursor)
        if lost:
            conn.invalidate(error)
        return exc.DBAPIError.instance(statement, params, error, dbapi.Error,
                                       connection_invalidated=lost, dialect=conn.dialect)

    cursor = connection.cursor(dbapi.cursors.SSCursor)
    try:
        cursor.execute(statement, params)
    except dbapi.Error as error:
        raised = failed(error, cursor)
        _closed(cursor, dbapi)
        raise raised from error

    def fetched() -> Iterator[Sequence[Any]]:
        done = False
        try:
            read = _wire_rows(cursor) if conn.dialect.driver == "pymysql" else None
            if read is not None:  # (PyMySQL's rows read in one loop: lecentral/store/wire.py)
                try:
                    yield from read
                except dbapi.Error as error:
                    raise failed(error, cursor) from error
                done = True
                return
            while True:
                try:
                    batch = cursor.fetchmany(size)
                except dbapi.Error as error:
                    raise failed(error, cursor) from error
                if not batch:
                    done = True
                    return
                yield from batch
        finally:
            unclosed = _closed(cursor, dbapi)  # (reads what is left of the stream)
            if unclosed is not None and done:
                raise failed(unclosed, cursor) from unclosed

    return fetched()


def _wire_rows(cursor: Any) -> Iterator[Sequence[Any]] | None:
    from lecentral.store import wire

    return wire.rows(cursor)


def _closed(cursor: Any, dbapi: Any) -> Exception | None:
    """Close ``cursor``; its error, if that failed. A connection lost mid-stream fails the
    close too (PyMySQL: an AttributeError): the error already on its way is the one to show,
    and the cursor is let go."""
    try:
        cursor.close()
    except (dbapi.Error, AttributeError, OSError) as error:
        _let_go(cursor)
        return error
    return None


def _let_go(cursor: Any) -> None:
    """Forget the rest of a stream whose connection is lost: PyMySQL (2.2) would try to read
    it again when the cursor and its result are collected, and print that failure."""
    result = getattr(cursor, "_result", None)
    if result is not None:
        result.unbuffered_active = False
    cursor.connection = None
