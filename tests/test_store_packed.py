"""Rows read as one string each on MariaDB (lecentral/store/packed.py): the fleet's pass over
``certs`` must see exactly the values the plain query gives, whatever the table holds (the
separator itself, the markers, NULLs, empty strings, text outside ASCII, an integer column
holding text), and the fleet's outputs must stay the same bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
)

from lecentral.store import packed
from lecentral.store.packed import ESCAPED, FS

ODD = ["", FS, FS + FS, FS + ESCAPED, ESCAPED, "=", "!", "=" + FS + "!", FS + "=x", "x" + FS,
       "é ü 証明書", "a\x00b", "tab\tline\n", "NULL"]


@pytest.fixture
def table(mariadb_url: str) -> Iterator[tuple[Any, Table]]:
    """A table whose ``ts`` column SQLAlchemy reads as an integer but the database holds as
    text (a seed table's column of another type), with a blob and a row per odd value."""
    engine = create_engine(mariadb_url)
    meta = MetaData()
    probe = Table("packed_probe", meta,
                  Column("id", Integer, primary_key=True), Column("name", String(250)),
                  Column("note", Text), Column("n", BigInteger), Column("ts", BigInteger),
                  Column("data", LargeBinary), Column("label", String(250)))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS packed_probe")
        conn.exec_driver_sql(
            "CREATE TABLE packed_probe (id INT PRIMARY KEY, name VARCHAR(250) CHARACTER SET ascii COLLATE ascii_bin,"
            " note TEXT CHARACTER SET utf8mb4, n BIGINT, ts VARCHAR(20), data BLOB,"
            " label VARCHAR(250) CHARACTER SET utf8mb4)")
        rows = [{"id": i, "name": f"n{i}.example.test", "note": value, "n": -i * 10 ** 12,
                 "ts": str(1_700_000_000 + i), "data": value.encode() + b"\x1e\x00",
                 "label": value}
                for i, value in enumerate(ODD)]
        rows += [{"id": 100, "name": None, "note": None, "n": None, "ts": None, "data": None,
                  "label": None},
                 {"id": 101, "name": "x", "note": "", "n": 0, "ts": "soon", "data": b"",
                  "label": ""},
                 {"id": 102, "name": "y", "note": FS, "n": 2 ** 62, "ts": "-5", "data": b"1",
                  "label": FS}]
        conn.execute(insert(probe), rows)
    yield engine, probe
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE packed_probe")
    engine.dispose()


def _plain(value: Any, declared_int: bool) -> Any:
    """What the packed read gives for a value the plain query gave: an integer column's text
    as the integer, where it is one."""
    if declared_int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def test_packed_rows_are_the_plain_rows(table: tuple[Any, Table]) -> None:
    engine, probe = table
    c = probe.c
    query = (select(c.name, c.data, c.note, c.n, func.length(c.note, type_=Integer).label("len"),
                    c.ts, c.label, c.id)
             .order_by(c.id))
    with engine.connect() as conn:
        plain = [tuple(r) for r in conn.execute(query)]
        keys, rows = packed.rows(conn, query, yield_per=3)
        got = [tuple(r) for r in rows]
    assert keys == ["name", "data", "note", "n", "len", "ts", "label", "id"]
    ints = (False, False, False, True, True, True, False, True)
    assert got == [tuple(_plain(v, i) for v, i in zip(r, ints, strict=True)) for r in plain]
    by_id = {r[-1]: r for r in got}
    assert by_id[101][5] == "soon" and by_id[102][5] == -5 and by_id[0][5] == 1_700_000_000
    assert by_id[100] == (None, None, None, None, None, None, None, 100)
    assert [by_id[i][2] for i in range(len(ODD))] == ODD  # (a long text: its own column)
    assert [by_id[i][6] for i in range(len(ODD))] == ODD  # (packed, FS escaped)
    assert by_id[101][6] == "" and by_id[102][6] == FS


def _spied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The calls of ``packed._streamed`` (rows straight from the driver's cursor)."""
    calls: list[int] = []
    streamed = packed._streamed

    def spy(conn: Any, query: Any, size: int) -> Any:
        calls.append(size)
        return streamed(conn, query, size)

    monkeypatch.setattr(packed, "_streamed", spy)
    return calls


def test_a_long_text_is_its_own_column(table: tuple[Any, Table],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``Text`` column (the fleet's aggregated targets) is not packed: the server would copy
    and escape it into the packed string. Its values, FS and text outside ASCII among them,
    come as the plain query's, in a transaction (streamed) and outside one."""
    engine, probe = table
    c = probe.c
    query = select(c.name, c.note, c.n, c.data).order_by(c.id)
    assert [packed._kind(col) for col in query.selected_columns] == ["str", "", "int", ""]
    streamed = _spied(monkeypatch)
    with engine.connect() as conn:
        plain = [list(r) for r in conn.execute(query)]
        conn.rollback()
        for begin in (False, True):
            if begin:
                conn.exec_driver_sql("SELECT 1")
            assert conn.in_transaction() is begin
            keys, rows = packed.rows(conn, query, yield_per=4)
            assert keys == ["name", "note", "n", "data"]
            assert [list(r) for r in rows] == plain
            assert len(streamed) == int(begin)
            conn.rollback()


def test_a_query_of_one_column_is_not_packed(table: tuple[Any, Table]) -> None:
    engine, probe = table
    for col in (probe.c.label, probe.c.note):  # (one text to pack; a long text, none)
        with engine.connect() as conn:
            keys, rows = packed.rows(conn, select(col).order_by(probe.c.id))
            assert keys == [col.key] and [r[0] for r in rows][:len(ODD)] == ODD


def test_rows_with_another_type_come_through_sqlalchemy(table: tuple[Any, Table],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose unpacked columns are all blobs or long texts come from the driver's cursor
    (no value needs SQLAlchemy's processing); a column of another type keeps its processing
    (here a Boolean, which PyMySQL gives as 0 or 1): in a transaction too, the rows packed."""
    from sqlalchemy import Boolean, literal

    engine, probe = table
    c = probe.c
    flag = literal(True, Boolean).label("flag")
    streamed = _spied(monkeypatch)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # (in a transaction, as the store's reads are)
        keys, rows = packed.rows(conn, select(c.name, c.n, c.note, flag).order_by(c.id))
        got = list(rows)
    assert keys == ["name", "n", "note", "flag"]
    assert got[0] == ["n0.example.test", 0, "", True] and got[0][3] is True
    assert streamed == []


def test_a_failing_packed_read_is_sqlalchemys_error(table: tuple[Any, Table]) -> None:
    """The driver's error at the statement is raised as SQLAlchemy's, its statement shown,
    and the connection is usable again."""
    from sqlalchemy import column
    from sqlalchemy import table as sql_table
    from sqlalchemy.exc import DBAPIError

    engine, probe = table
    missing = sql_table("packed_missing", column("a", String), column("b", Integer))
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # (in a transaction, as the store's reads are)
        query = (select(missing.c.a, missing.c.b, probe.c.data)
                 .select_from(missing.join(probe, probe.c.id == missing.c.b)))
        with pytest.raises(DBAPIError, match="packed_missing"):
            packed.rows(conn, query)
        conn.rollback()
        assert conn.execute(select(func.count()).select_from(probe)).scalar_one() == len(ODD) + 3


@pytest.mark.parametrize("when", ["before the statement", "while its rows stream"])
def test_a_connection_lost_is_the_stores_clear_error(table: tuple[Any, Table], mariadb_url: str,
                                                      when: str) -> None:
    """The connection killed before the pass's statement or while its rows stream (more than
    the sockets hold): the store's error says the connection was lost (not the failed
    rollback after it), and the store works again."""
    from lecentral.errors import StoreError
    from lecentral.store.sql import SqlStore

    engine, probe = table
    a, b, c, d = (probe.alias(x) for x in "abcd")
    wide = func.repeat(a.c.name, 200, type_=String)  # (about 280 MB in all: never read)
    store = SqlStore(mariadb_url)
    try:
        with (pytest.raises(StoreError, match="reading the fleet failed: .*Lost connection"),
              store.transaction("reading the fleet") as conn):
            own = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
            if when == "before the statement":
                with engine.connect() as other:
                    other.exec_driver_sql(f"KILL {own}")
            _, rows = packed.rows(conn, select(wide, b.c.name, c.c.note, d.c.data),
                                  yield_per=1)
            next(rows)
            with engine.connect() as other:
                other.exec_driver_sql(f"KILL {own}")
            for _ in rows:
                pass
        with store.transaction("counting") as conn:
            assert conn.execute(select(func.count()).select_from(probe)).scalar_one() == (
                len(ODD) + 3)
    finally:
        store.close()


def test_a_split_that_does_not_add_up_is_loud() -> None:
    """A packed string that cannot be the values it stands for is never read as some other
    values."""
    assert packed._joined(["=a", ESCAPED + "b", "!"], 2) == ["=a" + FS + "b", "!"]
    with pytest.raises(AssertionError):
        packed._joined(["=a", "=b", "!"], 2)
    with pytest.raises(AssertionError):
        packed._joined(["=a", "b"], 2)


@pytest.fixture
def odd_fleet(tmp_path: Path, mariadb_url: str, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Fleet]:
    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.names
    from lecentral.config import RenewConfig

    fleet = Fleet(tmp_path, mariadb_url)
    for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
        monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
    for i in range(3):
        name = f"p{i}.packed.example.test"
        cert = fleet.issue(name, age=2)
        fleet.report("web1", name, cert, cert)
        fleet.report("web2" + FS + ESCAPED, name, cert, cert, entry=f"e{FS}=x{i}")
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    yield fleet
    fleet.close()


def test_fleet_outputs_are_the_bytes_of_the_plain_read(odd_fleet: Fleet,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts and entries holding the separator: every fleet command writes what it wrote when
    every column crossed the wire on its own."""
    commands = (("metrics",), ("fleet", "--json"), ("fleet",), ("check",),
                ("fleet", "--problems", "--json"))
    outputs = [odd_fleet.run(*args) for args in commands]

    def plain(conn: Any, query: Any, yield_per: int = 2000) -> tuple[list[str], Any]:
        result = conn.execute(query.execution_options(yield_per=yield_per))
        return list(map(str, result.keys())), iter(result)

    monkeypatch.setattr(packed, "rows", plain)
    for args, packed_out in zip(commands, outputs, strict=True):
        plain_out = odd_fleet.run(*args)
        assert packed_out.exit_code == plain_out.exit_code, args
        assert packed_out.stdout_bytes == plain_out.stdout_bytes, args
    assert FS.encode() in outputs[1].stdout_bytes or b"\\u001e" in outputs[1].stdout_bytes
