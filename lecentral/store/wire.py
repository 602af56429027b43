"""The rows of PyMySQL's unbuffered cursor read off the wire in one loop.

PyMySQL reads each row of an unbuffered result through a dozen Python calls (a packet object,
its checks, a length-coded string per column, the cursor's batch): about 2.5 µs a row, a sixth
of the client's time in the fleet's pass over 100,000 certificates on MariaDB, where the client
is the bottleneck (bench/README.md). :func:`rows` reads the same packets the same way in one
loop (1.2 µs a row): a packet's header, then its payload, through the connection's own buffered
file and nothing more, the connection's sequence number kept in step after each, so a stream
left at any row is where PyMySQL expects it (``cursor.close()``, or the connection's next
statement, reads the rest). Its values are PyMySQL's: text decoded with the column's encoding, bytes for binary
columns, None for NULL.

What it does not read, it leaves to PyMySQL: :func:`rows` returns None unless the cursor holds
an unbuffered result still streaming whose every column PyMySQL gives without a converter
(texts and blobs), on a connection that ends a result with an EOF packet (PyMySQL does not ask
for ``CLIENT_DEPRECATE_EOF``). The errors are PyMySQL's, as PyMySQL raises them: the server's
error in the stream, a connection lost (closed, as PyMySQL closes it) or out of step.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import Any

from pymysql import err
from pymysql.constants import CLIENT, CR, SERVER_STATUS

#: a payload of this length is continued in the next packet
_MAX_PAYLOAD = 0xFFFFFF


def rows(cursor: Any) -> Iterator[list[Any]] | None:
    """The rest of the rows of ``cursor`` (PyMySQL's ``SSCursor``, its statement executed)
    as lists of values, or None where this module does not read them (see its docstring):
    then the cursor's own ``fetchmany``."""
    result = getattr(cursor, "_result", None)
    conn = getattr(result, "connection", None)
    if (type(result).__name__ != "MySQLResult" or conn is None
            or getattr(result, "unbuffered_active", False) is not True
            or conn is not getattr(cursor, "connection", None)
            or getattr(conn, "_result", None) is not result
            or not isinstance(getattr(conn, "_rfile", None), io.BufferedReader)
            or type(getattr(conn, "_next_seq_id", None)) is not int
            or getattr(conn, "client_flag", CLIENT.DEPRECATE_EOF) & CLIENT.DEPRECATE_EOF):
        return None
    encodings: list[str | None] = []
    for encoding, converter in getattr(result, "converters", None) or ():
        if converter is not None or not (encoding is None or isinstance(encoding, str)):
            return None
        encodings.append(encoding)
    if not encodings or len(encodings) != getattr(result, "field_count", None):
        return None
    return _read(result, conn, encodings)


def _read(result: Any, conn: Any, encodings: list[str | None]) -> Iterator[list[Any]]:
    read = conn._rfile.read
    seq = conn._next_seq_id
    try:
        while True:
            payload = _payload(conn, read, seq)
            seq = (seq + 1 + len(payload) // _MAX_PAYLOAD) & 255  # (the packets it took)
            conn._next_seq_id = seq  # (in step for PyMySQL: it reads the rest if not we)
            size = len(payload)
            first = payload[0]
            if first >= 0xFE:
                if first == 0xFF:  # the server's error instead of a row
                    result.unbuffered_active = False
                    err.raise_mysql_exception(payload)
                if size < 9:  # EOF: the rows are done
                    warnings, status = struct.unpack_from("<hh", payload.ljust(5, b"\0"), 1)
                    result.warning_count = warnings
                    result.has_next = status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS
                    result.unbuffered_active = False
                    result.connection = None
                    result.rows = None
                    return
            row: list[Any] = []
            at = 0
            for encoding in encodings:
                length = payload[at]
                if length < 251:
                    at += 1
                elif length == 252:
                    length = payload[at + 1] | payload[at + 2] << 8
                    at += 3
                elif length == 251:
                    at += 1
                    row.append(None)
                    continue
                elif length == 253:
                    length = payload[at + 1] | payload[at + 2] << 8 | payload[at + 3] << 16
                    at += 4
                elif length == 254:
                    length = int.from_bytes(payload[at + 1:at + 9], "little")
                    at += 9
                else:
                    raise _malformed(conn)
                value = payload[at:at + length]
                at += length
                row.append(value if encoding is None else value.decode(encoding))
            if at != size:
                raise _malformed(conn)
            yield row
    except IndexError:
        raise _malformed(conn) from None


def _payload(conn: Any, read: Callable[[int], bytes], seq: int) -> bytes:
    """The next payload, its first packet numbered ``seq`` (one of 16 MiB or more continues
    in the packets after it, each but the last of :data:`_MAX_PAYLOAD` bytes: one more
    number each)."""
    parts: list[bytes] = []
    size = _MAX_PAYLOAD
    try:
        while size == _MAX_PAYLOAD:
            head = read(4)
            size = head[0] | head[1] << 8 | head[2] << 16
            if head[3] != seq:
                raise _out_of_step(conn, head[3], seq)
            part = read(size)
            if len(part) < size:
                raise _lost(conn, None)
            if not parts and size < _MAX_PAYLOAD:
                return part
            parts.append(part)
            seq = (seq + 1) & 255
    except err.MySQLError:
        raise
    except (OSError, IndexError) as exc:  # (IndexError: a header cut short)
        raise _lost(conn, exc) from None
    except BaseException:
        conn._force_close()  # (an interrupt in a read: the stream's place is lost)
        raise
    return b"".join(parts)


def _lost(conn: Any, exc: OSError | IndexError | None) -> err.MySQLError:
    """The connection closed, as PyMySQL closes it when a read fails; the error to raise."""
    conn._force_close()
    detail = f" ({exc})" if isinstance(exc, OSError) else ""
    return err.OperationalError(CR.CR_SERVER_LOST,
                                f"Lost connection to MySQL server during query{detail}")


def _out_of_step(conn: Any, got: int, expected: int) -> err.MySQLError:
    """A packet out of sequence, as PyMySQL says it (MariaDB shutting down sends its error
    numbered 0): the connection is closed."""
    conn._force_close()
    if got == 0:
        return err.OperationalError(CR.CR_SERVER_LOST,
                                    "Lost connection to MySQL server during query")
    return err.InternalError(f"Packet sequence number wrong - got {got} expected {expected}")


def _malformed(conn: Any) -> err.MySQLError:
    """A row whose columns do not fill its packet: the stream cannot be trusted, the
    connection is closed."""
    conn._force_close()
    return err.InternalError("a row of the result is not the columns it announced")
