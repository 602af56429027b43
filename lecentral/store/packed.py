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
  value PyMySQL returned as text); binary columns (``crt``) and any other type cross the wire
  as their own columns, as before.

The rows come in the query's order, with the query's keys, as sequences of the same values
(``rows[i][j]`` is what the plain query would give) on every database; on the others the query
is executed as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, String, func
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
    result = conn.execute(query.with_only_columns(one, *(cols[i] for i in raw),
                                                  maintain_column_froms=True)
                          .execution_options(yield_per=yield_per))
    keys = [str(c.key) for c in cols]
    return keys, _unpacked(result, len(packed), raw,
                           [j for j, i in enumerate(packed) if kinds[i] == "int"])


def _kind(col: Any) -> str:
    """``str`` or ``int`` for a column packed as such, else ``""`` (its own column)."""
    kind = col.type
    if isinstance(kind, sqltypes.Integer):
        return "int"
    if isinstance(kind, String):
        return "str"
    return ""


def _escaped(col: Any) -> Any:
    return func.replace(col, FS, FS + ESCAPED)


def _unpacked(result: Any, count: int, raw: Sequence[int],
              ints: Sequence[int]) -> Iterator[list[Any]]:
    """The rows of ``result`` (the ``count`` values packed, then the columns at ``raw``) as
    the plain query's."""
    at = list(enumerate(raw, 1))
    for row in result:
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

