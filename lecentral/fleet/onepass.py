"""What ``lecentral fleet`` and ``fleet --json`` share in their one pass over ``certs``: a
spool of the plainly current certificates' text, and the places of the held ones.

The snapshot's own pass (:meth:`lecentral.fleet.store.FleetStore.snapshot`, ``taker``) hands
every ``certs`` row to a subclass of :class:`OnePass` first. A *plainly current* row (the rule
of :mod:`lecentral.fleet.spool`: enabled, its fingerprint the one SQL compared its deployments
against, every deployment current, no probe result, its name its own lower-case key) is written
into an anonymous temporary file in ``$TMPDIR`` at once, its current targets aggregated by the
database in the same statement (:meth:`lecentral.fleet.current.Split.counts_column`). Every
other row is held, judged by :mod:`lecentral.fleet.states` as before, and written at its place:
the pass notes the file's size where each held row came in the pass's order.

Where SQLite cannot order an aggregate (before 3.44), the targets' keys come with them and a
row whose targets did not come in (host, entry) order is held. If anything could differ from
the judge's view (a row, deployment or probe filed under a key taken, two rows of one key), the
pass is abandoned and the command computes its output as before.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Self

from lecentral.fleet.current import GS, NOT_CURRENT, SEP, SOH, Split
from lecentral.fleet.spool import COLUMNS, merged
from lecentral.fleet.tempfiles import append, discard, temp_dir, temp_error

#: copies (file descriptor, offset, count) to stdout in the kernel; False if it cannot
Send = Callable[[int, int, int], bool]


class OnePass:
    """A spool of the taken rows' text and the places of the held ones (a ``taker``: see the
    module's docstring). Subclasses say what the database aggregates (:attr:`wants`) and
    turn a taken row into its text (:meth:`text`)."""

    #: what :meth:`lecentral.fleet.current.Split.counts_column` aggregates per target
    wants = ""
    #: the temporary file's name prefix
    prefix = "lecentral-fleet-"
    #: rows between two writes of the collected text into the file
    flush_every = 2048

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
        self._read_at = 0  # where chunks() and sent() go on reading the file
        try:
            self._file: IO[bytes] | None = tempfile.TemporaryFile(  # noqa: SIM115 - close()
                prefix=self.prefix, dir=temp_dir())
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
        self.ordered = not split.keys_listed()
        if tuple(keys) != COLUMNS:
            raise AssertionError(f"the fleet pass expects the columns {COLUMNS}, not {keys}")

    def abandon(self, why: str) -> None:
        self.abandoned = self.abandoned or why

    def twin(self) -> Self:
        """Another pass of the same kind with a file of its own, for the rows of ``certs``
        a forked process reads (:mod:`lecentral.fleet.halves`)."""
        return type(self)()

    def handoff(self) -> dict[str, Any]:
        """In that process, after its rows: the text written into the file, what else the
        pass learned (for :meth:`merge`)."""
        self.flush()
        assert self._file is not None
        try:
            self._file.flush()
        except OSError as exc:
            raise temp_error(exc) from None
        return {"taken": self.taken, "offsets": self.offsets, "held_keys": self._held_keys,
                "abandoned": self.abandoned}

    def merge(self, twin: Self, state: dict[str, Any]) -> None:
        """After this pass's own rows: ``twin``'s file appended to this one's, and what it
        learned (``state``: its :meth:`handoff`), as if this pass had taken its rows."""
        self.flush()
        assert self._file is not None and twin._file is not None
        at = append(self._file, twin._file)
        self.offsets += [at + offset for offset in state["offsets"]]
        self._held_keys = merged(self, self._held_keys, state)

    def take(self, row: Any, fp: str | None) -> bool:
        """Spool ``row``'s text if it is plainly current (True: the snapshot drops it); else
        note where it goes and hold it (False)."""
        (name, enable, _, _, _, expire, update, fails, _, _, hint, counts, probed, _, _) = row
        text = None
        if counts and fp is not None and fp == hint and not self._split.is_probed(name, probed) and (
                enable == "Y" or str(enable or "").upper() == "Y"):
            targets = self._listed(str(name), str(counts))
            if targets is not None:
                text = self.text(str(name), fp, expire, update, fails, targets)
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
        if len(self._parts) >= self.flush_every:
            self.flush()
        return True

    def _listed(self, name: str, counts: str) -> str | None:
        """The aggregated targets of a row (``total::aggregate``: joined by :data:`SEP`), if
        every one of them is current and they came whole and in order; else None (the row is
        not plainly current)."""
        total_text, _, rest = counts.partition(":")
        listed = rest.partition(":")[2]  # each target, NOT_CURRENT for one not current
        total = int(total_text)
        if not total or NOT_CURRENT in listed or name != name.lower().rstrip("."):
            return None
        if not self.ordered:
            listed, _, keys = listed.partition(GS)
            if not _in_order(keys, total):
                return None
        if listed.count(SEP) + 1 != total or self._split.cut(listed):
            return None
        return listed

    def text(self, name: str, fp: str, expire: Any, update: Any, fails: Any,
             targets: str) -> str | None:
        """The spooled text of a plainly current row (``targets``: its current targets'
        aggregate, joined by :data:`SEP`), or None to hold it."""
        raise NotImplementedError

    def flush(self) -> None:
        if self._parts:
            assert self._file is not None
            try:
                self._file.write("".join(self._parts).encode("utf-8"))
            except OSError as exc:
                raise temp_error(exc) from None
            self._parts.clear()

    def chunks(self, end: int | None) -> Iterator[str]:
        """The spooled text from where the previous call stopped up to byte ``end`` (None: to
        the end), in pieces of about a megabyte (the last one may be empty)."""
        f = self._synced()
        decoder = codecs.getincrementaldecoder("utf-8")()
        while end is None or self._read_at < end:
            try:  # (an error of the caller's ``write`` is the caller's: not caught here)
                chunk = f.read(1 << 20 if end is None else min(1 << 20, end - self._read_at))
            except OSError as exc:
                raise temp_error(exc) from None
            if not chunk:
                break
            self._read_at += len(chunk)
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)

    def _synced(self) -> IO[bytes]:
        """The file, everything collected written into it, at :attr:`_read_at`."""
        self.flush()
        assert self._file is not None
        f = self._file
        try:
            f.flush()
            f.seek(self._read_at)
        except OSError as exc:
            raise temp_error(exc) from None
        return f

    def sent(self, end: int | None, send: Send, skip: int = 0) -> int | None:
        """Copy the spooled bytes from where the previous copy stopped up to byte ``end``
        (None: to the end) but the first ``skip`` through ``send`` (the kernel copying them
        to stdout: :func:`lecentral.cli.output.send`); how many bytes there were (``skip``
        included), or None where ``send`` cannot (nothing copied: :meth:`chunks` then)."""
        f = self._synced()
        start = self._read_at
        try:
            stop = os.fstat(f.fileno()).st_size if end is None else end
        except OSError as exc:
            raise temp_error(exc) from None
        if stop - start > skip and not send(f.fileno(), start + skip, stop - start - skip):
            return None
        self._read_at = max(start, stop)
        return max(0, stop - start)


def _in_order(keys: str, count: int) -> bool:
    """True if ``keys`` (``host<SOH>entry`` joined by SEP) are ``count`` keys in (host, entry)
    order, as ORDER BY host, entry sorts them on SQLite (bytes: Python's order of strings)."""
    if keys.count(SOH) != count or "\x00" in keys:
        return False
    if count == 1:
        return SEP not in keys
    found = keys.split(SEP)
    # with one SOH in each and none below it, comparing the joined strings compares the pairs
    # (no two are equal: (name, host, entry) is the key)
    return len(found) == count and found == sorted(found)
