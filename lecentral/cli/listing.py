"""``lecentral list`` over 100,000 rows in about 2 s of CPU, in flat memory (issue 16).

The store streams the rows known good and unchanged since the last renew sweep (their facts,
no blobs, no parsing) in list's order computed in SQL, or on MariaDB/MySQL by name alone (the
server then sends rows as it reads them instead of sorting them first); each becomes its line (a
JSON object, or the table's cells) at once and goes to a spill file (memory while small, then a
temporary file), in the bucket of its sort key's first two parts (never issued, days left): a
row whose name does not come after the last one of its bucket (SQL and Python disagreeing) is
held in memory instead, like every row the store reads in full (changed by anyone, bad,
invalid, never swept), which :func:`lecentral.cli.admin._summary` summarises as ``show`` does.
The buckets, each in name order, are written in order with the held rows merged in, so memory
grows with the rows read in full, not with the table. The text table needs its column widths
before its first line: they are counted while spilling.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii
from typing import IO, TYPE_CHECKING, Any

import click

from lecentral.certificates import now_ts
from lecentral.cli.admin import (
    DAY,
    HELD,
    _issuing_ca,
    _profile,
    _renews,
    _state,
    _summary,
    pass_app,
)
from lecentral.cli.central import App
from lecentral.cli.common import guarded
from lecentral.fleet.tempfiles import discard, temp_dir, temp_error
from lecentral.renew.checks import held_until
from lecentral.store.rows import ENABLE_NULL, CertRow, FreshRow, ListedRow
from lecentral.window import Window, renew_at

if TYPE_CHECKING:
    from lecentral.config import RenewConfig
    from lecentral.interfaces import Store

HEADERS = ["NAME", "ON", "METHOD", "NAMES", "EXPIRES (UTC)", "DAYS", "LIFE", "PROFILE", "CA",
           "RENEWS (UTC)", "FAILS", "LAST ATTEMPT", ""]
#: what joins the cells of a spilled table line (a cell holding it, or a newline, is held in
#: memory instead of spilled)
UNIT = "\x1f"
#: bytes of spilled lines kept in memory before they go to a temporary file
SPILL_IN_MEMORY = 2 << 20
#: lines written to stdout at once
CHUNK = 2000

Key = tuple[bool, int, str]
_encode = encode_basestring_ascii
CERTBOT, DNS = '"certbot"', '"dns"'
NO_CERT_YET = '"now: no certificate yet"'
TEXT = (str, type(None))
NOTE_NULL = f"[{_encode(ENABLE_NULL)}]"


class Dates:
    """``lecentral.cli.admin._date`` (``2027-03-01 10:00`` UTC, None for 0, 1 or None), with
    each day's date made once: three dates per row, 100,000 rows."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._minutes = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]

    def format(self, ts: int | None) -> str | None:
        if not ts or ts <= 1:
            return None
        try:
            return self._days[ts // DAY] + self._minutes[ts % DAY // 60]
        except KeyError:
            return self._first(ts)

    def _first(self, ts: int) -> str | None:
        """The first date of a day (a time before 1970-01-02: as _date writes it)."""
        from lecentral.cli.admin import _date

        if ts < DAY:
            return _date(ts)
        if len(self._days) > 10_000:
            self._days.clear()
        self._days[ts // DAY] = str(_date(ts // DAY * DAY))[:11]
        return self.format(ts)


def _json(value: Any) -> str:
    """``value`` as json.dumps writes it (None, bool, int, str; anything else: TypeError)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return _encode(value)
    raise TypeError(f"not written by lecentral list's fast path: {type(value).__name__}")


class FreshSummary:
    """:func:`lecentral.cli.admin._summary` of a :class:`FreshRow`: the same for a valid row
    with a good certificate (no problems; ``names``, notBefore and notAfter from the facts),
    made without a CertRow and without parsing: as a dictionary (:meth:`__call__`), and, for
    the 100,000 rows of a large listing, directly as its JSON object (:meth:`json`, the same
    text as ``json.dumps(item, sort_keys=True)``) or as its table cells (:meth:`cells`)."""

    def __init__(self, now: int, renew: RenewConfig, default_profile: str) -> None:
        self.now, self.renew, self.default_profile = now, renew, default_profile
        self.date = Dates().format
        self._windows: dict[int, tuple[Window, str]] = {}
        self._profiles: dict[str | None, tuple[dict[str, Any], str]] = {}
        self._issuers: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self._no_issuer = _issuing_ca(None)
        #: a last attempt at or before this is not held by renew.min_interval (a shortcut for
        #: the most rows, renewed long ago; held_until decides the others)
        self._held_before = now - renew.min_interval

    def held(self, r: FreshRow) -> int | None:
        """:func:`lecentral.renew.checks.held_until` of the row: when ``renew.min_interval``
        lets the renew job try it again, while it holds now. Its CSR is not replaced: the
        facts say the stored certificate fits it."""
        last = r.ts_last_update
        if last is None or last <= self._held_before:
            return None
        row = CertRow(name=r.name, csr=b"", md5_modulus="", ts_last_update=last,
                      count_fail_update=r.count_fail_update)
        return held_until(row, self.now, self.renew.min_interval, None)

    def window(self, not_before: int, not_after: int) -> tuple[int, str, str]:
        """(``renew_at``, its reason, the reason in JSON): ``renew_at`` depends on notAfter -
        notBefore only, then shifts: made once per lifetime."""
        lifetime = not_after - not_before
        found = self._windows.get(lifetime)
        if found is None:
            window = renew_at(0, lifetime, self.renew)
            found = self._windows[lifetime] = (window, _encode(window.reason))
        return found[0].at + not_before, found[0].reason, found[1]

    def profile(self, name: str, stored: str | None) -> tuple[dict[str, Any], str]:
        """(the profile fields, as JSON members); ``profile_problem`` left in the fields."""
        found = self._profiles.get(stored)
        if found is None:
            fields = _profile(name, stored, self.default_profile)
            if "profile_problem" in fields:  # names the row: not cached
                return fields, ""
            found = (fields, (f'"profile": {_json(fields["profile"])}, '
                              f'"profile_source": {_json(fields["profile_source"])}'))
            if len(self._profiles) < 1000:
                self._profiles[stored] = found
        return found

    def issuer(self, r: FreshRow) -> tuple[dict[str, Any], str]:
        """(the issuer fields, as JSON members)."""
        stored = (r.issuer_ca, r.issuer_ca_directory or "") if r.issuer_ca is not None else None
        if stored is None:
            return self._no_issuer, '"issuer_ca": null, "issuer_ca_directory": null'
        found = self._issuers.get(stored)
        if found is None:
            fields = _issuing_ca(stored)
            found = (fields, (f'"issuer_ca": {_json(fields["issuer_ca"])}, '
                              f'"issuer_ca_directory": {_json(fields["issuer_ca_directory"])}'))
            if len(self._issuers) < 1000:
                self._issuers[stored] = found
        return found

    def __call__(self, r: FreshRow) -> dict[str, Any]:
        has_cert = r.ts_expire is not None and r.ts_expire > 1
        ts_renew_at: int | None
        if has_cert:
            ts_renew_at, reason, _ = self.window(r.not_before, r.not_after)
        else:  # ts_expire NULL, 0 or 1 beside a good certificate: unknown, not wrong
            ts_renew_at, reason = None, "now: no certificate yet"
        held = self.held(r)  # as lecentral.cli.admin._renewal: the renew job waits for it
        if held is not None and (ts_renew_at is None or held > ts_renew_at):
            ts_renew_at, reason = held, HELD
        notes = [ENABLE_NULL] if r.enable is None else []
        fields = dict(self.profile(r.name, r.profile)[0])
        if "profile_problem" in fields:
            notes.append(fields.pop("profile_problem"))
        date, expire = self.date, r.ts_expire or 0
        return {
            "name": r.name, "enabled": r.enable == "Y",
            "method": "certbot" if r.certbot == "Y" else "dns", "names": r.names,
            "expires": date(expire) if has_cert else None, "ts_expire": r.ts_expire,
            "days_left": (expire - self.now) // DAY if has_cert else None,
            **fields, **self.issuer(r)[0],
            "lifetime_days": round((r.not_after - r.not_before) / DAY, 1) if has_cert else None,
            "renew_at": date(ts_renew_at), "ts_renew_at": ts_renew_at, "renew_reason": reason,
            "count_fail_update": r.count_fail_update or 0,
            "last_attempt": date(r.ts_last_update), "ts_last_update": r.ts_last_update,
            "webroot_path": r.webroot_path, "comment": r.comment,
            "problems": [], "invalid": False, "certificate_problems": [], "notes": notes,
        }

    def json(self, r: FreshRow) -> str:
        """``json.dumps(self(r), sort_keys=True, default=str)``, without the dictionary."""
        profile = self.profile(r.name, r.profile)[1]
        if not profile or type(r.comment) not in TEXT or type(r.webroot_path) not in TEXT or \
                self.held(r) is not None:
            return json.dumps(self(r), sort_keys=True, default=str)
        date, expire = self.date, r.ts_expire
        if expire is not None and expire > 1:
            at, _, reason = self.window(r.not_before, r.not_after)
            life = repr(round((r.not_after - r.not_before) / DAY, 1))
            expires, days = _json(date(expire)), str((expire - self.now) // DAY)
            renew, ts_at = _json(date(at)), str(at)
        else:
            reason = NO_CERT_YET
            life = expires = days = renew = ts_at = "null"
        names = ", ".join(map(_encode, r.names))
        enabled = "true" if r.enable == "Y" else "false"
        method = CERTBOT if r.certbot == "Y" else DNS
        notes = NOTE_NULL if r.enable is None else "[]"
        return (
            f'{{"certificate_problems": [], "comment": {_json(r.comment)}, '
            f'"count_fail_update": {r.count_fail_update or 0}, "days_left": {days}, '
            f'"enabled": {enabled}, "expires": {expires}, "invalid": false, '
            f'{self.issuer(r)[1]}, "last_attempt": {_json(date(r.ts_last_update))}, '
            f'"lifetime_days": {life}, "method": {method}, "name": {_encode(r.name)}, '
            f'"names": [{names}], "notes": {notes}, "problems": [], {profile}, '
            f'"renew_at": {renew}, "renew_reason": {reason}, "ts_expire": {_json(expire)}, '
            f'"ts_last_update": {_json(r.ts_last_update)}, "ts_renew_at": {ts_at}, '
            f'"webroot_path": {_json(r.webroot_path)}}}')

    def cells(self, r: FreshRow) -> list[str]:
        """``cells(self(r), now)``, without the dictionary."""
        fields, profile = self.profile(r.name, r.profile)
        if not profile or self.held(r) is not None:
            return cells(self(r), self.now)
        date, expire = self.date, r.ts_expire
        if expire is not None and expire > 1:
            at, reason, _ = self.window(r.not_before, r.not_after)
            life = f"{round((r.not_after - r.not_before) / DAY, 1):g}"
            expires, days = str(date(expire)), str((expire - self.now) // DAY)
            renews = f"{'due' if at <= self.now else date(at)} ({reason})"
        else:
            life = expires = days = "-"
            renews = "now"
        return [r.name, "Y" if r.enable == "Y" else "N", "certbot" if r.certbot == "Y" else "dns",
                ",".join(r.names), expires, days, life, fields["profile"] or "-",
                self.issuer(r)[0]["issuer_ca"] or "-", renews, str(r.count_fail_update or 0),
                date(r.ts_last_update) or "-", ENABLE_NULL if r.enable is None else ""]


def key_of(item: dict[str, Any]) -> Key:
    """list's order: never issued (no days left) first, then by days left, then by name."""
    days = item["days_left"]
    return days is not None, days or 0, item["name"]


def cells(item: dict[str, Any], now: int) -> list[str]:
    """One line of the text table."""
    name = item["name"]
    if not name.isprintable() or name != name.strip():  # a row's twin stored as 'www.x '
        name = repr(name)
    return [name, "Y" if item["enabled"] else "N", item["method"], ",".join(item["names"]),
            item["expires"] or "-", "-" if item["days_left"] is None else str(item["days_left"]),
            "-" if item["lifetime_days"] is None else f"{item['lifetime_days']:g}",
            item["profile"] or "-", item["issuer_ca"] or "-", _renews(item, now),
            str(item["count_fail_update"]), item["last_attempt"] or "-", _state(item)]


class Listing:
    """The rows summarised in list's order: the in-order ones spilled, the rest held.

    A line is in order when its name comes after the last spilled name of its bucket (never
    issued, or its days left): the buckets are written in list's order at the end, each in
    name order. So the store may send its rows sorted by name alone (MariaDB/MySQL: in the
    order of ``certs``' key, without a sort on the server) or in list's order. Each flush
    writes every bucket's pending lines as one segment of the spill file."""

    def __init__(self, now: int, as_json: bool, spill: IO[bytes]) -> None:
        self.now, self.as_json = now, as_json
        self.widths = [len(h) for h in HEADERS]
        self.held: list[tuple[Key, str | list[str]]] = []
        self.count = 0
        self._last: dict[tuple[bool, int], str] = {}  # per bucket: the last name spilled
        # per bucket: its segments of the spill file, (offset, size) pairs in one array (16
        # bytes each: rows spread over many days make many small segments)
        self._segments: dict[tuple[bool, int], array[int]] = {}
        self._size = 0
        self._spill = spill
        self._pending: list[tuple[Key, str | list[str]]] = []

    def item(self, item: dict[str, Any], in_order: bool) -> None:
        """Add a summary (:func:`lecentral.cli.admin._summary`)."""
        if self.as_json:
            self.add(key_of(item), json.dumps(item, sort_keys=True, default=str), in_order)
        else:
            self.add(key_of(item), cells(item, self.now), in_order)

    def add(self, key: Key, payload: str | list[str], in_order: bool) -> None:
        """Spill a line (JSON or cells) if its name comes after the last spilled one of its
        bucket, else hold it."""
        self.count += 1
        if in_order:
            bucket, name = (key[0], key[1]), key[2]
            last = self._last.get(bucket)
            if (last is None or name >= last) and "\t" not in name and "\n" not in name:
                self._last[bucket] = name
                self._pending.append((key, payload))
                if len(self._pending) >= CHUNK:
                    self._flush()
                return
        self._hold(key, payload)

    def _hold(self, key: Key, payload: str | list[str]) -> None:
        if not isinstance(payload, str):
            self.widths = list(map(max, self.widths, map(len, payload)))
        self.held.append((key, payload))

    def _flush(self) -> None:
        """Write the pending lines to the spill file, a segment per bucket (table: their column
        widths counted, a line that cannot be spilled held)."""
        pending = self._pending
        lines: dict[tuple[bool, int], list[str]] = {}
        if self.as_json:
            for k, p in pending:
                lines.setdefault((k[0], k[1]), []).append(f"{k[2]}\t{p}\n")
        elif pending:
            columns = zip(*(p for _, p in pending), strict=True)
            self.widths = [max(w, *map(len, c)) for w, c in zip(self.widths, columns, strict=True)]
            for k, p in pending:
                line = UNIT.join(p)
                if "\n" in line or line.count(UNIT) != len(HEADERS) - 1:
                    self.held.append((k, p))
                else:
                    lines.setdefault((k[0], k[1]), []).append(f"{k[2]}\t{line}\n")
        for bucket, chunk in lines.items():
            data = "".join(chunk).encode("utf-8", "surrogatepass")
            try:  # past SPILL_IN_MEMORY: the temporary file is made, then written
                self._spill.write(data)
            except OSError as exc:
                raise temp_error(exc) from None
            self._segments.setdefault(bucket, array("q")).extend((self._size, len(data)))
            self._size += len(data)
        pending.clear()

    def spilled(self) -> Iterator[tuple[tuple[bool, int], list[str]]]:
        """The spilled lines, in order, a segment at a time: (bucket, ``name\tpayload``
        lines)."""
        for bucket in sorted(self._segments):
            segments = self._segments[bucket]
            for i in range(0, len(segments), 2):
                offset, size = segments[i], segments[i + 1]
                try:
                    self._spill.seek(offset)
                    text = self._spill.read(size).decode("utf-8", "surrogatepass")
                except OSError as exc:
                    raise temp_error(exc) from None
                yield bucket, text.split("\n")[:-1]

    def payloads(self) -> Iterator[str | list[str]]:
        """Every line's payload in list's order: the spilled lines with the held ones merged in
        (a held line after the spilled lines of the same key, as a stable sort puts it)."""
        held = sorted(self.held, key=lambda entry: entry[0])  # stable: the store's order
        h = 0
        for bucket, lines in self.spilled():
            for line in lines:
                name, _, text = line.partition("\t")
                if h < len(held):
                    key = (bucket[0], bucket[1], name)
                    while h < len(held) and held[h][0] < key:
                        yield held[h][1]
                        h += 1
                yield text if self.as_json else text.split(UNIT)
        for _, payload in held[h:]:
            yield payload

    def finish(self) -> None:
        """Spill the pending lines (it counts widths and may hold a line): before :meth:`lines`;
        LecentralError if the temporary file cannot take them."""
        self._flush()

    def lines(self) -> Iterator[str]:
        """The output's lines, in order."""
        self._flush()  # first, if finish was not called: nothing pending then
        if self.as_json:
            last = self.count - 1
            yield "["
            for i, payload in enumerate(self.payloads()):
                yield f"{payload}," if i < last else str(payload)
            yield "]"
            return
        row = "  ".join(f"{{:<{w}}}" for w in self.widths)
        yield row.format(*HEADERS).rstrip()
        for cells_ in self.payloads():
            yield row.format(*cells_).rstrip()


def print_listing(store: Store, now: int, renew: RenewConfig, default_profile: str,
                  as_json: bool) -> None:
    """``lecentral list [--json]``: every row, never-issued ones first, then by days left and
    name; ``--json``: one object per row, one per line."""
    fresh = FreshSummary(now, renew, default_profile)
    # in $TMPDIR or a clear error (exit 1), never tempfile's silent fallback to /tmp; closed by
    # discard: the close of a full file's buffer must not replace that error
    spill = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - discard() in finally
        SPILL_IN_MEMORY, mode="w+b", dir=temp_dir())
    try:
        listing = Listing(now, as_json, spill)
        for entry in store.listing(now):
            if isinstance(entry, FreshRow):
                expire = entry.ts_expire
                key = (True, (expire - now) // DAY, entry.name) if expire is not None and \
                    expire > 1 else (False, 0, entry.name)
                listing.add(key, fresh.json(entry) if as_json else fresh.cells(entry), True)
            else:
                assert isinstance(entry, ListedRow)
                listing.item(_summary(entry.row, now, renew, default_profile, entry.profile,
                                      entry.issuer), False)
        if not listing.count:
            click.echo("[]" if as_json else "no certificates yet: lecentral add NAME")
            return
        listing.finish()  # before the first line: a temporary file's error leaves no output
        # JSON holds no raw control character (json escapes them): click need not look for
        # ANSI sequences to strip in 60 MB of it
        color = True if as_json else None
        out: list[str] = []
        for line in listing.lines():
            out.append(line)
            if len(out) >= CHUNK:
                click.echo("\n".join(out), color=color)
                out.clear()
        if out:
            click.echo("\n".join(out), color=color)
    finally:
        discard(spill)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
@guarded
def list_(app: App, as_json: bool) -> None:
    """Every certificate, soonest expiry first (never-issued ones on top)."""
    print_listing(app.store(), now_ts(), app.config.renew, app.config.acme.profile, as_json)
