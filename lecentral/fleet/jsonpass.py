"""``lecentral fleet --json`` in one pass over ``certs``: the document streamed, nothing held
per certificate.

The snapshot's own pass (:meth:`lecentral.fleet.store.FleetStore.snapshot`, ``taker``) hands
every ``certs`` row to :class:`JsonPass` first. A *plainly current* row (the rule of
:mod:`lecentral.fleet.spool`: enabled, its fingerprint the one SQL compared its deployments
against, every deployment current, no probe result, its name its own lower-case key) is written
into a temporary file at once, as ``cert_json`` writes it, with its targets' JSON written by the
database in the same statement (:meth:`lecentral.fleet.current.Split.counts_column` with
``json``): the same text :meth:`~lecentral.fleet.current.Split.current_json` reads. Every other
row is held, judged by :mod:`lecentral.fleet.states` as before, and written at its place: the
file is copied up to the point where the held row came in the pass, then the held row.

Where SQLite cannot order an aggregate (before 3.44), the targets' keys come with their JSON
and a row whose targets did not come in (host, entry) order is held. If anything could differ
from the judge's view (a row, deployment or probe filed under a key taken, two rows of one
key), the pass is abandoned and ``fleet --json`` computes the document as before. The file is
an anonymous temporary file in ``$TMPDIR`` (gone on every path).
"""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Self

from lecentral.fleet.current import SEP, Split
from lecentral.fleet.spool import COLUMNS, discard, temp_dir, temp_error
from lecentral.fleet.states import _int

#: rows between two writes of the collected text into the file
FLUSH_EVERY = 2048
#: between the targets' JSON and their keys; between a key's host and entry
_GS, _SOH = "\x1d", "\x01"


class JsonPass:
    """The ``taker`` of a ``fleet --json`` snapshot: see the module's docstring."""

    wants_json = True

    def __init__(self) -> None:
        #: the database orders the aggregated targets itself (else their keys come along and
        #: are checked); from the split (start)
        self.ordered = True
        self._split = Split("", 0)
        self.taken = 0
        self.abandoned: str | None = None
        #: the file's size where each held row came, in the pass's order
        self.offsets: list[int] = []
        self._held_keys: set[str] = set()
        self._parts: list[str] = []
        try:
            self._file: IO[bytes] | None = tempfile.TemporaryFile(  # noqa: SIM115 - close()
                prefix="lecentral-fleet-", dir=temp_dir())
        except OSError as exc:
            raise temp_error(exc) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close (and so remove) the file."""
        if self._file is not None:
            discard(self._file)
            self._file = None

    def start(self, keys: Sequence[str], split: Split) -> None:
        """The pass's columns, checked once, and its split (how the database aggregates)."""
        self._split = split
        self.ordered = split.ordered_aggregates()
        if tuple(keys) != COLUMNS:
            raise AssertionError(f"the fleet --json pass expects the columns {COLUMNS}, "
                                 f"not {keys}")

    def abandon(self, why: str) -> None:
        self.abandoned = self.abandoned or why

    def take(self, row: Any, fp: str | None) -> bool:
        """Write ``row`` if it is plainly current (True: the snapshot drops it); else note
        where it goes and hold it (False)."""
        (name, enable, _, _, _, expire, update, fails, _, _, hint, counts, probed) = row
        text = None
        if counts and not probed and fp is not None and fp == hint and (
                enable == "Y" or str(enable or "").upper() == "Y"):
            text = self._text(str(name), fp, expire, update, fails, str(counts))
        if text is None:
            key = str(name).lower().rstrip(".")
            if key in self._held_keys:
                self.abandon(f"two rows named {name} (case or a final dot differs)")
            self._held_keys.add(key)
            self.flush()
            assert self._file is not None
            self.offsets.append(self._file.tell())  # (flushed: the buffer's end, no I/O)
            return False
        self._parts.append(text)
        self.taken += 1
        if len(self._parts) >= FLUSH_EVERY:
            self.flush()
        return True

    def _text(self, name: str, fp: str, expire: Any, update: Any, fails: Any,
              counts: str) -> str | None:
        """``,`` and the certificate's JSON, or None if it is not plainly current."""
        total, _, rest = counts.partition(":")
        current_text, _, jsons = rest.partition(":")
        current = int(current_text)
        if not current or current != int(total) or name != name.lower().rstrip("."):
            return None
        if not self.ordered:
            jsons, _, keys = jsons.partition(_GS)
            if not _in_order(keys, current):
                return None
        if jsons.count(SEP) + 1 != current or self._split.cut(jsons):
            return None
        # CertFleet's values (lecentral.fleet.states.compute), as cert_json writes them
        if not (type(expire) is int and expire):
            expire = _int(expire)
        if not (type(update) is int and update):
            update = _int(update)
        return (f',{{"name":{_string(name)},"enabled":true,"fingerprint":{_string(fp)},'
                f'"ts_expire":{"null" if expire is None else expire},'
                f'"ts_last_update":{"null" if update is None else update},'
                f'"count_fail_update":{int(fails or 0)},"state":"current",'
                f'"targets":[{jsons.replace(SEP, ",")}]}}')

    def flush(self) -> None:
        if self._parts:
            assert self._file is not None
            try:
                self._file.write("".join(self._parts).encode("utf-8"))
            except OSError as exc:
                raise temp_error(exc) from None
            self._parts.clear()

    def write(self, write: Callable[[str], object], held: Iterable[str]) -> None:
        """The certificates of the document (after its ``"certs":[``), joined by commas:
        the file's text in order, each of ``held`` (the held rows' JSON, in the pass's
        order) at its place."""
        self.flush()
        assert self._file is not None
        f = self._file
        try:
            f.flush()
            f.seek(0)
        except OSError as exc:
            raise temp_error(exc) from None
        position, first = 0, True

        def copy(end: int | None) -> None:
            nonlocal position, first
            decoder = codecs.getincrementaldecoder("utf-8")()
            while end is None or position < end:
                try:  # (an error of ``write`` is the caller's: not caught here)
                    chunk = f.read(1 << 20 if end is None else min(1 << 20, end - position))
                except OSError as exc:
                    raise temp_error(exc) from None
                if not chunk:
                    break
                position += len(chunk)
                text = decoder.decode(chunk)
                if first and text:
                    text, first = text[1:], False  # the leading comma of the first
                write(text)
            write(decoder.decode(b"", final=True))

        texts = iter(held)
        for offset in self.offsets:
            copy(offset)
            write(("" if first else ",") + next(texts))
            first = False
        copy(None)


def _in_order(keys: str, count: int) -> bool:
    """True if ``keys`` (``host<SOH>entry`` joined by SEP) are ``count`` keys in (host, entry)
    order, as ORDER BY host, entry sorts them on SQLite (bytes: Python's order of strings)."""
    if keys.count(_SOH) != count or "\x00" in keys:
        return False
    if count == 1:
        return SEP not in keys
    found = keys.split(SEP)
    # with one SOH in each and none below it, comparing the joined strings compares the pairs
    # (no two are equal: (name, host, entry) is the key)
    return len(found) == count and found == sorted(found)


def _string(value: str) -> str:
    """``json.dumps(value)``, without the call for the usual printable ASCII."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)
