"""``lecentral fleet`` (the text table) in one pass over ``certs``: nothing held per certificate
(:mod:`lecentral.fleet.onepass`).

A plainly current row is spooled as its table lines, one per certificate and one per current
target (the database lists each as ``host (entry)``, whether it is served, and when it was
reported: :meth:`lecentral.fleet.current.Split.counts_column` with ``text``), padded to
provisional widths (:class:`TextPass`). The held rows are judged as before and their lines
(:func:`cert_rows`) written at their places, every line padded to the widths of the whole
table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from lecentral.fleet.current import SEP, SOH
from lecentral.fleet.onepass import OnePass
from lecentral.fleet.states import _int, ago

if TYPE_CHECKING:
    from lecentral.fleet.model import CertFleet, FleetView

HEADERS = ("NAME / TARGET", "SEEN (installed/served)", "LAST", "AGE", "STATE", "WHY")
DAY = 86400
#: after each of the first four cells of a spooled line (padded to the provisional widths)
MARKS = ("\x1a", "\x1b", "\x1c", "\x1e")
_ODD = re.compile("[\n" + "".join(MARKS) + "]")


def date(ts: int | None) -> str:
    """A table's day (``2026-12-03``), ``-`` for none."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if ts and ts > 1 else "-"


def short_fp(fp: str | None) -> str:
    return fp[:12] if fp else "-"


def age(now: int, ts: int | None) -> str:
    return ago(now - ts) if ts else "-"


def cert_rows(cert: CertFleet, now: int, problems: bool) -> list[list[str]]:
    """A certificate's lines of the table: its own, then one per target (``problems``: only
    the targets not current)."""
    state = cert.state.upper() if cert.state not in ("current", "disabled") else cert.state
    rows = [[cert.name, f"db {short_fp(cert.fingerprint)}", date(cert.ts_expire), "", state, ""]]
    for t in cert.targets:
        if problems and t.state == "current":
            continue
        installed = short_fp(t.installed.fingerprint) if t.installed else ""
        served = short_fp(t.served.fingerprint) if t.served else ""
        seen = f"{installed}/{served}" if t.kind == "agent" else served
        rows.append([f"  {t.target}", f"{t.kind} {seen}", date(t.ts), age(now, t.ts), t.state,
                     t.detail if t.state != "current" else ""])
    return rows


def unclaimed_lines(view: FleetView) -> list[str]:
    """The reports filed under a name no row of ``certs`` has, one line each (after the
    table)."""
    return [f"unclaimed: {name} on {target} (last seen {date(ts)}): no row of certs is named "
            f"{name}: removed? nothing renews it" for name, target, ts in view.unclaimed]


def table_lines(rows: Sequence[Sequence[str]], widths: Sequence[int]) -> Iterator[str]:
    """``rows`` as the table's lines, padded to ``widths`` (``lecentral.cli.common.table``)."""
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


class TextPass(OnePass):
    """The ``taker`` of a ``lecentral fleet`` snapshot: see the module's docstring.

    The spooled lines are padded as they are written, to provisional widths of the first four
    columns (:attr:`padded`: the longest label the database holds, a served target's
    ``agent <fp>/<fp>``, a date, ``AGE``), each cell followed by its column's mark; a row with
    a longer cell is held. At the end each mark becomes the two spaces between the columns and
    what the whole table's width adds: one replace per column and megabyte. Only a table
    narrower than the provisional widths (its longest label not shown) is padded again line by
    line."""

    wants = "text"
    flush_every = 4096

    def __init__(self, now: int, label_width: int, served: bool) -> None:
        super().__init__()
        self._given = (now, label_width, served)
        self.now = now
        self.padded = [max(len(HEADERS[0]), label_width), 31 if served else len(HEADERS[1]),
                       10, len(HEADERS[3])]
        #: the widths of the spooled cells, per column
        self.widths = [len(h) for h in HEADERS]
        self._days: dict[int | None, str] = {}  # a UTC day (ts // DAY): its padded date
        self._tails: dict[str, str] = {}  # served and ts as listed: a target line's end

    def text(self, name: str, fp: str, expire: Any, update: Any, fails: Any,
             targets: str) -> str | None:
        """The certificate's line and its targets' lines, each ended by a newline."""
        padded = self.padded
        if len(name) > padded[0] or _ODD.search(f"{name}{targets}"):
            return None
        if not (type(expire) is int and expire):
            expire = _int(expire)
        key = expire // DAY if expire is not None and expire > 1 else None
        day = self._days.get(key)
        if day is None:
            day = date(expire)
            if len(day) > padded[2]:
                return None
            day = self._days[key] = day.ljust(padded[2])
        fp12 = fp[:12]
        a, b, c, d = MARKS
        lines = [(f"{name.ljust(padded[0])}{a}{f'db {fp12}'.ljust(padded[1])}{b}{day}{c}"
                  f"{'':<{padded[3]}}{d}current\n")]
        served, plain = f"agent {fp12}/{fp12}", f"agent {fp12}/"
        seen_width = len(served) if SOH + "1" in targets else len(plain)
        if seen_width > padded[1]:
            return None
        served, plain = a + served.ljust(padded[1]), a + plain.ljust(padded[1])
        label_width = padded[0] - 2
        tails, longest = self._tails, 0
        for target in targets.split(SEP):
            label, _, rest = target.partition(SOH)
            tail = tails.get(rest) or self._tail(rest)
            if tail is None:
                return None
            longest = max(longest, len(label))
            lines.append(f"  {label.ljust(label_width)}{served if rest[0] == '1' else plain}"
                         f"{tail}")
        if longest > label_width:
            return None
        widths = self.widths  # what the spooled cells need (without the padding)
        widths[4] = max(widths[4], len("current"))
        widths[0] = max(widths[0], len(name), longest + 2)
        widths[1] = max(widths[1], seen_width, 3 + len(fp12))
        widths[2] = max(widths[2], len(day.rstrip(" ")))
        return "".join(lines)

    def twin(self) -> Self:
        return type(self)(*self._given)

    def handoff(self) -> dict[str, Any]:
        return {**super().handoff(), "widths": self.widths}

    def merge(self, twin: Self, state: dict[str, Any]) -> None:
        super().merge(twin, state)
        self.widths = [max(a, b) for a, b in zip(self.widths, state["widths"], strict=True)]

    def _tail(self, rest: str) -> str | None:
        """What follows a target line's SEEN cell, for ``rest`` (``1`` if served, else
        ``0``, then when it was reported); None if it is not that or does not fit."""
        served, ts_text = rest[:1], rest[1:]
        if served not in ("0", "1") or not (ts_text.isascii() and ts_text.isdigit()):
            return None
        ts = int(ts_text)
        day, when = date(ts), age(self.now, ts)
        padded = self.padded
        if len(day) > padded[2] or len(when) > padded[3]:
            return None
        self.widths[2] = max(self.widths[2], len(day))
        self.widths[3] = max(self.widths[3], len(when))
        _, b, c, d = MARKS
        tail = self._tails[rest] = (f"{b}{day.ljust(padded[2])}{c}{when.ljust(padded[3])}"
                                    f"{d}current\n")
        return tail

    def write(self, write: Callable[[str], object], held: Sequence[list[list[str]]]) -> None:
        """The table (its header first): the spooled lines in order, the lines of each of
        ``held`` (the held certificates' rows, in the pass's order) at its place."""
        widths = list(self.widths)
        for rows in held:
            for row in rows:
                widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        write(next(table_lines([HEADERS], widths)) + "\n")
        # each mark: the two spaces between the columns and what the table's width adds
        gaps = [" " * (w - p + 2) for w, p in zip(widths, self.padded, strict=False)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)

        def spread(text: str) -> str:
            """Whole spooled lines as the table's lines."""
            if all(w >= p for w, p in zip(widths, self.padded, strict=False)):
                for mark, gap in zip(MARKS, gaps, strict=True):
                    text = text.replace(mark, gap)
                return text
            out = []  # a table narrower than a provisional width: each line padded again
            for li in text.split("\n")[:-1]:
                cells = [li]
                for mark in MARKS:
                    cells[-1:] = cells[-1].split(mark, 1)
                out.append(line.format(*(c.rstrip(" ") for c in cells[:4]), cells[4], "")
                           .rstrip() + "\n")
            return "".join(out)

        def copy(end: int | None) -> None:
            carry = ""
            for text in self.chunks(end):
                text = carry + text
                cut = text.rfind("\n") + 1
                carry = text[cut:]
                if cut:
                    write(spread(text[:cut]))
            assert not carry, "a spooled line without its end"

        for offset, rows in zip(self.offsets, held, strict=True):
            copy(offset)
            write("".join(f"{li}\n" for li in table_lines(rows, widths)))
        copy(None)
