"""PyMySQL's unbuffered rows read off the wire in one loop (lecentral/store/wire.py), against
a real MariaDB: the same values PyMySQL gives (NULLs, every length encoding, a row of more than
16 MiB in several packets, text outside ASCII, bytes), the same errors (the server's in the
middle of the stream, a connection killed, packets out of step), and a connection that works
on after a stream read to its end or stopped early."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy.engine import make_url

from lecentral.store import packed, wire

#: lengths on both sides of each length encoding's limits (1, 3, 4 bytes)
LENGTHS = [0, 1, 250, 251, 252, 255, 256, 65535, 65536, 70000]


def _connect(url: str) -> Any:
    u = make_url(url)
    return pymysql.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           database=u.database, charset="utf8mb4")


@pytest.fixture
def db(mariadb_url: str) -> Iterator[Any]:
    """A connection to a table of a text (utf8mb4), a blob and a short text per row: a row
    per length, one of NULLs, one of text outside ASCII."""
    conn = _connect(mariadb_url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE wire_probe (id INT PRIMARY KEY, note MEDIUMTEXT CHARACTER SET"
                    " utf8mb4, data MEDIUMBLOB, label VARCHAR(250) CHARACTER SET utf8mb4)")
        rows: list[tuple[Any, ...]] = [(i, "é" * (n // 2) + "x" * (n % 2), b"\x00\xfe\xff" * n,
                                        "l" * min(n, 250)) for i, n in enumerate(LENGTHS)]
        rows += [(100, None, None, None), (101, "証明書 \x1e\x00", b"", ""),
                 (102, "\x00" * 9, b"\xfe" * 8, "\xff")]
        cur.executemany("INSERT INTO wire_probe VALUES (%s, %s, %s, %s)", rows)
    conn.commit()
    yield conn
    conn.close()


def _both(conn: Any, statement: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """(PyMySQL's rows, this module's) of ``statement``, each from a fresh unbuffered
    cursor on ``conn``, which then answers another statement."""
    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute(statement)
    theirs = [list(row) for row in cur.fetchall()]
    cur.close()
    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute(statement)
    read = wire.rows(cur)
    assert read is not None
    ours = list(read)
    cur.close()
    assert _answers(conn)
    return theirs, ours


def _answers(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 'still here'")
        return cur.fetchall() == (("still here",),)


def test_the_rows_are_pymysqls(db: Any) -> None:
    theirs, ours = _both(db, "SELECT note, data, label, CAST(id AS CHAR) FROM wire_probe"
                             " ORDER BY id")
    assert ours == theirs and len(ours) == len(LENGTHS) + 3
    assert ours[len(LENGTHS)] == [None, None, None, "100"]
    assert ours[len(LENGTHS) + 2] == ["\x00" * 9, b"\xfe" * 8, "\xff", "102"]
    assert [len(row[1]) for row in ours[:len(LENGTHS)]] == [3 * n for n in LENGTHS]


def test_a_row_of_more_than_16_mib_comes_in_several_packets(db: Any, mariadb_url: str,
                                                            mariadb_server: Any) -> None:
    """A value longer than a packet holds (16 MiB - 1): its length in 8 bytes, its row
    continued over two packets and more; the packets' numbers stay in step."""
    ((before,),) = mariadb_server.execute("SELECT @@GLOBAL.max_allowed_packet")
    mariadb_server.execute("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
    try:
        big = _connect(mariadb_url)
        try:
            theirs, ours = _both(big, "SELECT CAST(id AS CHAR), REPEAT('ab', 17000000 + id), data FROM"
                                      " wire_probe WHERE id IN (0, 1, 100) ORDER BY id")
            assert ours == theirs
            assert [len(row[1]) for row in ours] == [34_000_000, 34_000_002, 34_000_200]
        finally:
            big.close()
    finally:
        mariadb_server.execute(f"SET GLOBAL max_allowed_packet = {int(before)}")


@pytest.mark.parametrize("left", ["closed", "suspended"])
def test_a_stream_stopped_early_is_read_to_its_end_by_pymysql(db: Any, left: str) -> None:
    """A stream left after a row: closed (the cursor then closed), or left suspended while
    the connection is asked something else (an error in the caller's loop, then the
    transaction's rollback): PyMySQL reads the rest, the packets in step."""
    cur = db.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT note, data FROM wire_probe ORDER BY id")
    read = wire.rows(cur)
    assert read is not None
    assert next(read)[0] == "" and next(read)[0] == "x"
    if left == "closed":
        read.close()
        cur.close()
        assert _answers(db)
    else:
        with pytest.warns(UserWarning, match="unbuffered result was left incomplete"):
            assert _answers(db)
        read.close()
        cur.close()
        assert _answers(db)


def test_the_servers_error_in_the_stream_is_pymysqls(db: Any) -> None:
    """The server fails at a row after sending those before it: PyMySQL's error, the rows
    before it given, and the connection works on."""
    statement = ("SELECT label, IF(id = 9, (SELECT label FROM wire_probe), 'x')"
                 " FROM wire_probe ORDER BY id")
    errors = []
    for ours in (False, True):
        cur = db.cursor(pymysql.cursors.SSCursor)
        cur.execute(statement)
        read = wire.rows(cur) if ours else iter(cur.fetchone, None)
        assert read is not None
        got = []
        with pytest.raises(pymysql.MySQLError) as raised:
            got.extend(read)
        assert len(got) == 9
        errors.append((type(raised.value), raised.value.args))
        cur.close()
        assert _answers(db)
    assert errors[0] == errors[1] and errors[0][1][0] == 1242  # (more than one row)


def test_a_connection_killed_in_the_stream_is_lost(db: Any, mariadb_url: str) -> None:
    """KILL while the rows stream (more than the sockets hold): PyMySQL's error for a
    connection lost, and the connection closed as PyMySQL closes it."""
    with db.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        ((own,),) = cur.fetchall()
    cur = db.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT a.data, b.note FROM wire_probe a, wire_probe b, wire_probe c,"
                " wire_probe d")
    read = wire.rows(cur)
    assert read is not None
    next(read)
    other = _connect(mariadb_url)
    with other.cursor() as killer:
        killer.execute(f"KILL {int(own)}")
    other.close()
    with pytest.raises(pymysql.OperationalError) as raised:
        for _ in read:
            pass
    assert raised.value.args[0] in (2013, 1927) and db._sock is None  # (1927: killed)
    packed._let_go(cur)


def test_packets_out_of_step_close_the_connection(db: Any) -> None:
    cur = db.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT note FROM wire_probe ORDER BY id")
    read = wire.rows(cur)
    assert read is not None
    db._next_seq_id = (db._next_seq_id + 7) & 255  # (read as the first row is)
    with pytest.raises(pymysql.InternalError, match="Packet sequence number wrong"):
        next(read)
    assert db._sock is None and db._rfile is None
    packed._let_go(cur)  # (as the store lets go of a stream whose connection is gone)


def test_what_it_does_not_read_is_left_to_pymysql(db: Any) -> None:
    """A column PyMySQL converts (an integer), a buffered result, a result read to its end:
    None, and PyMySQL's own reading gives the rows."""
    cur = db.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT id, note FROM wire_probe ORDER BY id")
    assert wire.rows(cur) is None
    assert cur.fetchone()[0] == 0
    cur.close()
    with db.cursor() as buffered:
        buffered.execute("SELECT note FROM wire_probe")
        assert wire.rows(buffered) is None
    cur = db.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT note FROM wire_probe WHERE id = 1")
    read = wire.rows(cur)
    assert read is not None and list(read) == [["x"]]
    assert wire.rows(cur) is None and cur.fetchone() is None
    cur.close()
    assert _answers(db)
