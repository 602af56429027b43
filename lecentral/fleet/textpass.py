"""``lecentral fleet`` (the text table) in one pass over ``certs``: nothing held per certificate
(:mod:`lecentral.fleet.onepass`).

A plainly current row is spooled as its table lines, their cells joined by :data:`UNIT`, one
line per certificate and one per current target (the database lists each as ``host (entry)``,
whether it is served, and when it was reported: :meth:`lecentral.fleet.current.Split.
counts_column` with ``text``); the widths of the columns are counted on the way. The held rows
are judged as before and their lines (:func:`cert_rows`) written at their places, every line
padded to the widths of the whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lecentral.fleet.current import SEP
from lecentral.fleet.onepass import SOH, OnePass
from lecentral.fleet.states import _int, ago

if TYPE_CHECKING:
    from lecentral.fleet.model import CertFleet

HEADERS = ("NAME / TARGET", "SEEN (installed/served)", "LAST", "AGE", "STATE", "WHY")
DAY = 86400
#: between the cells of a spooled line
UNIT = "\x1e"


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


def table_lines(rows: Sequence[Sequence[str]], widths: Sequence[int]) -> Iterator[str]:
    """``rows`` as the table's lines, padded to ``widths`` (``lecentral.cli.common.table``)."""
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


class TextPass(OnePass):
    """The ``taker`` of a ``lecentral fleet`` snapshot: see the module's docstring."""

    wants = "text"
    flush_every = 4096

    def __init__(self, now: int) -> None:
        super().__init__()
        self.now = now
        #: the widths of the spooled cells, per column
        self.widths = [len(h) for h in HEADERS]
        self._days: dict[int | None, str] = {}  # a UTC day (ts // DAY): its date
        self._ages: dict[int, tuple[str, str]] = {}  # ts: its date and age

    def text(self, name: str, fp: str, expire: Any, update: Any, fails: Any,
             targets: str) -> str | None:
        """The certificate's line and its targets' lines, each ended by a newline."""
        if UNIT in name or "\n" in name or UNIT in targets or "\n" in targets:
            return None
        if not (type(expire) is int and expire):
            expire = _int(expire)
        key = expire // DAY if expire is not None and expire > 1 else None
        day = self._days.get(key)
        if day is None:
            day = self._days[key] = date(expire)
        fp12 = fp[:12]
        lines = [f"{name}{UNIT}db {fp12}{UNIT}{day}{UNIT}{UNIT}current{UNIT}\n"]
        widths = self.widths
        longest = len(name)
        seen_width = 0
        for target in targets.split(SEP):
            label, _, rest = target.partition(SOH)
            served, ts_text = rest[:1], rest[1:]
            if served not in ("0", "1") or not (ts_text.isascii() and ts_text.isdigit()):
                return None
            ts = int(ts_text)
            known = self._ages.get(ts)
            if known is None:
                known = self._ages[ts] = (date(ts), age(self.now, ts))
                widths[2] = max(widths[2], len(known[0]))
                widths[3] = max(widths[3], len(known[1]))
            seen = f"agent {fp12}/{fp12}" if served == "1" else f"agent {fp12}/"
            seen_width = max(seen_width, len(seen))
            longest = max(longest, len(label) + 2)
            lines.append(f"  {label}{UNIT}{seen}{UNIT}{known[0]}{UNIT}{known[1]}"
                         f"{UNIT}current{UNIT}\n")
        widths[0] = max(widths[0], longest)
        widths[1] = max(widths[1], seen_width, 3 + len(fp12))
        widths[2] = max(widths[2], len(day))
        widths[4] = max(widths[4], 7)
        return "".join(lines)

    def write(self, write: Callable[[str], object], held: Sequence[list[list[str]]]) -> None:
        """The table (its header first): the spooled lines in order, the lines of each of
        ``held`` (the held certificates' rows, in the pass's order) at its place."""
        widths = list(self.widths)
        for rows in held:
            for row in rows:
                widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        write(next(table_lines([HEADERS], widths)) + "\n")
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        fmt = line.format

        def copy(end: int | None) -> None:
            carry = ""
            for text in self.chunks(end):
                lines = (carry + text).split("\n")
                carry = lines.pop()
                if lines:
                    write("\n".join([fmt(*li.split(UNIT)).rstrip() for li in lines]) + "\n")
            assert not carry, "a spooled line without its end"

        for offset, rows in zip(self.offsets, held, strict=True):
            copy(offset)
            write("".join(f"{li}\n" for li in table_lines(rows, widths)))
        copy(None)
