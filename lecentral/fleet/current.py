"""The deployments SQL can call current, so that only the others reach Python as rows.

At 100,000 certificates on 3 hosts, reading and judging 300,000 deployment rows one by one in
Python is what ``check``, ``metrics`` and ``fleet`` cost. Almost all of them are current: the
agent installed and serves the database's certificate and reported recently. SQL decides that
split here, conservatively: a row counts as current only if

- its certificate row is enabled and has a recorded fingerprint (``lecentral_cert_facts``), the
  installed fingerprint equals it, byte for byte, the served one is that one or none, and no
  serving error was recorded;
- the agent reported the row within ``[fleet] agent_max_age`` (a row older than that may still
  be saved by the host's latest agent run: Python decides, as before).

Everything else (no facts, any difference, a silent-looking row) reaches Python in full and is
judged by :mod:`lecentral.fleet.states` as before. The recorded fingerprint is only a hint: SQL
counts the rows it called current per certificate row, next to the hint it compared against,
and Python trusts a count only if the hint is the fingerprint the judge itself holds for that
certificate (:meth:`Split.verify`); the rows of a count not trusted are read again in full. So SQL can only
send more rows to Python, never hide one that is not current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
)

from lecentral.store.schema import cert_facts, certs, deployments

#: names per IN list (well below every database's limit on bound parameters)
CHUNK = 500
#: between the targets SQL lists per certificate (a target holding it is counted, not listed:
#: the list then does not add up to the count, and those rows are read in full)
SEP = "\x1f"
#: a target not current in the list of ``json`` and ``text`` (a list item no target can be:
#: JSON escapes it, a ``text`` item holds SOH)
NOT_CURRENT = "\x02"
#: between a list of targets and their keys; between a key's host and entry (and a ``text``
#: target's label and the rest)
GS, SOH = "\x1d", "\x01"
#: between the values of a current target that the database sends for ``fleet --json``
#: (:meth:`Split.target_json` where :attr:`Split.raw_targets`)
FS = "\x1c"
#: those values, in order
RAW_FIELDS = ("host", "entry", "installed_not_after", "served", "served_not_after",
              "served_url", "served_error", "ts_served", "ts_reported", "result", "db_user")
#: above this many names with rows SQL does not call current (no facts recorded yet: the first
#: run after the upgrade), one scan of the deployments instead of lists of names
SCAN_ABOVE = 10_000


@dataclass
class Split:
    """What SQL said about the deployments: counts of current rows, per deployment name."""

    dialect: str
    cutoff: int  # reports older than this are not called current by SQL
    #: deployment names (exactly as stored) whose current rows Python verified
    verified: set[str] = field(default_factory=set)
    #: verified current rows per lower-case deployment name (how the judge groups deployments)
    counts: dict[str, int] = field(default_factory=dict)
    #: with ``listing``: the verified current targets ("host (entry)") per certificate name
    listing: bool = False
    listed: dict[str, list[str]] = field(default_factory=dict)
    #: with ``json`` (``fleet --json``'s pass): the current targets per certificate as
    #: :meth:`target_json` writes them (their JSON, or their values), in :meth:`counts_column`
    json: bool = False
    #: with ``text`` (``fleet``'s pass): per current target ``host (entry)``, SOH, ``1`` if
    #: it is served (else ``0``) and when it was reported, in :meth:`counts_column`
    text: bool = False
    #: MariaDB and MySQL cut an aggregated string at ``group_concat_max_len`` bytes (MySQL's
    #: default: 1,024): a listing of at least this many characters may have been cut, and is
    #: not trusted (:meth:`cut`); None where nothing is cut
    max_chars: int | None = None
    #: SQLite before 3.44: the plan reads each certificate's deployments through their
    #: (name, host, entry) key, so an aggregate sees them in (host, entry) order
    #: (:func:`reads_in_key_order`) and their keys need not be listed
    in_key_order: bool = False
    #: names whose list did not add up to their count (``json``, ``text``: :meth:`parse`)
    uncounted: set[str] = field(default_factory=set)
    #: True where the pass's ``probed`` column is a constant and :attr:`probed_names` (the
    #: names of the probe results, exactly as stored, read in the pass's transaction before
    #: it) says which rows have one (:meth:`probed_column`)
    probes_read: bool = False
    probed_names: frozenset[str] | None = None

    def cut(self, listed: str) -> bool:
        """True if ``listed`` (an aggregated string) may have been cut by the database."""
        return self.max_chars is not None and len(listed) >= self.max_chars

    def same(self, col: Any) -> Any:
        """``col`` compared byte for byte (MariaDB's default collations ignore case)."""
        return func.binary(col) if self.dialect in ("mysql", "mariadb") else col

    def current(self) -> Any:
        """True for a deployment row SQL calls current (with its ``certs`` row and facts)."""
        return and_(self._checked(), self._deployment_current())

    @staticmethod
    def _checked() -> Any:
        """What :meth:`current` asks of the ``certs`` row and its facts."""
        return and_(func.upper(certs.c.enable) == "Y", cert_facts.c.fingerprint.is_not(None))

    def _deployment_current(self) -> Any:
        """What :meth:`current` asks of the deployment row."""
        d, f = deployments.c, cert_facts.c
        same = self.same
        return and_(
            same(d.installed_fp) == same(f.fingerprint),
            # (its length: MariaDB's PAD SPACE collations find "  " equal to "")
            or_(d.served_error.is_(None), func.length(d.served_error) == 0),
            or_(d.served_fp.is_(None), same(d.served_fp) == same(f.fingerprint)),
            d.ts_reported >= self.cutoff,
        )

    def is_current(self) -> Any:
        """1 for a deployment row SQL calls current, else 0."""
        return case((self.current(), 1), else_=0)

    def joined(self) -> Any:
        """``lecentral_deployments`` with its certificate row (the exact name) and its facts."""
        f = cert_facts.c
        return (deployments.outerjoin(certs, self._exact(certs.c.name))
                .outerjoin(cert_facts, f.name == certs.c.name))

    def _mine(self) -> Any:
        """A deployment of the outer ``certs`` row: its exact name (the key's index is used)."""
        return self._exact(certs.c.name)

    def _exact(self, name: Any) -> Any:
        """``lecentral_deployments.name`` is ``name``, byte for byte: on MariaDB the plain
        comparison (which uses the key; its collation ignores case) and the binary one."""
        d = deployments.c
        if self.same(d.name) is d.name:
            return d.name == name
        return and_(d.name == name, self.same(d.name) == name)

    def among(self, names: Sequence[str]) -> Any:
        """``certs.name`` is one of ``names``, byte for byte (the key is used)."""
        name = certs.c.name
        if self.same(name) is name:
            return name.in_(names)
        return and_(name.in_(names), self.same(name).in_(names))

    def probed(self) -> Any:
        """The probe results of the outer ``certs`` row's exact name (the index on their
        name is used: on MariaDB the plain comparison, then the binary one)."""
        from lecentral.store.schema import probes

        p = probes.c
        if self.same(p.name) is p.name:
            return select(p.name).where(p.name == certs.c.name)
        return select(p.name).where(p.name == certs.c.name, self.same(p.name) == certs.c.name)

    def probed_column(self) -> Any:
        """The pass's ``probed`` column: 1 if a probe result of the ``certs`` row's exact
        name exists. With :attr:`probes_read`, a constant 0 instead, and :meth:`is_probed`
        looks the name up in :attr:`probed_names` (one EXISTS per row cost MariaDB 0.13 s of
        its 1.7 s at 100,000 certificates; the snapshot reads the probe results anyway)."""
        if self.probes_read:
            return literal(0, Integer).label("probed")
        return case((self.probed().exists(), 1), else_=0).label("probed")

    def is_probed(self, name: Any, flag: Any) -> bool:
        """True if the ``certs`` row ``name``, whose ``probed`` column is ``flag``, has a probe
        result of its exact name."""
        if not self.probes_read:
            return bool(flag)
        if self.probed_names is None:  # (never a row taken as if nothing were probed)
            raise AssertionError("the pass's rows came before the probe results were read")
        return (name if type(name) is str else str(name)) in self.probed_names

    def _among(self, names: Sequence[str]) -> Any:
        """``lecentral_deployments.name`` is one of ``names``, byte for byte (the key is used)."""
        d = deployments.c
        if self.same(d.name) is d.name:
            return d.name.in_(names)
        return and_(d.name.in_(names), self.same(d.name).in_(names))

    def counts_column(self) -> Any:
        """Per row of ``certs`` (joined to its facts), in one pass over its deployments through
        their (name, host, entry) key: ``total:current``, the number of its deployments and how
        many SQL calls current; with ``listing``, ``total:current:targets`` (the current
        targets joined by :data:`SEP`); with ``json``, ``total::json``, every target joined
        by :data:`SEP` in the order :meth:`current_json` reads them (by host and entry), a
        current one as :meth:`target_json` writes it, :data:`NOT_CURRENT` for another (Python
        counts them: :meth:`parse`; SQLite before 3.44 cannot order an aggregate: unless the plan reads them
        in key order, ``total::json<GS>keys``, each current target's ``host<SOH>entry`` in the
        same order, for Python to check it); with ``text``, likewise ``total::targets``, each
        current target as ``host (entry)<SOH>`` and ``1`` if served (else ``0``) and
        ``ts_reported``.
        NULL for a row without deployments. What the ``certs`` row must be for any of its
        deployments to be current is asked once per row, not once per deployment. With
        ``json`` or ``text`` its type is ``Text``: a long text, read as a column of its own
        (:mod:`lecentral.store.packed`)."""
        counts: Any = case((self._checked(), self._counts(self._deployment_current())),
                           else_=self._counts(false_()))
        if self.json or self.text:
            counts = type_coerce(counts, Text)
        return counts.label("fleet_counts")

    def _counts(self, current: Any) -> Any:
        """:meth:`counts_column`'s look-up, ``current`` saying which deployments are."""
        d = deployments.c
        if self.json or self.text:  # each target listed: the current ones counted in Python
            # (NULL without deployments, as the sum below makes it)
            value: Any = cast(func.nullif(func.count(), 0), String) + ":"
            if self.json:
                each = self.target_json()
            else:
                served = case((func.coalesce(d.served_fp, "") != "", "1"), else_="0")
                each = d.host + " (" + d.entry + ")" + SOH + served + cast(d.ts_reported, String)
            return (select(value + ":" + self._ordered_targets(
                case((current, each), else_=NOT_CURRENT), current))
                .select_from(deployments).where(self._exact(certs.c.name)).scalar_subquery())
        value = (cast(func.count(), String) + ":"
                 + cast(func.sum(case((current, 1), else_=0)), String))
        if self.listing:
            target = d.host + " (" + d.entry + ")"
            value = value + ":" + func.coalesce(
                func.aggregate_strings(case((current, target)), SEP), "")
        return (select(value).select_from(deployments)
                .where(self._exact(certs.c.name)).scalar_subquery())

    def account(self, row: Mapping[str, Any], hint: str | None, counts: str,
                rows: Mapping[str, Mapping[str, Any]], probed: bool = False) -> str | None:
        """Take what :meth:`counts_column` said of ``row``: ``"again"`` if its current count is
        not trusted (``hint``, the fingerprint SQL compared against, is not the judge's
        fingerprint of that row, which is not the judge's row for its name or not enabled; or
        the list does not add up), ``"partial"`` if some of its rows are not current, else
        None (every row current and counted). With ``json`` or ``text`` (the passes of
        ``fleet --json`` and ``fleet``), a row with targets the judge lists anyway (rows not
        current; ``probed``: a probe result of its name) is ``"again"``: its targets are
        judged together, in the judge's order, in this read (none counted), not read again
        after it (:func:`lecentral.cli.fleet._mixed_in_full`)."""
        name = str(row["name"])
        total, current, listed = self.parse(counts)
        if current is None:  # not counted exactly: every row read (a pass gives up)
            self.uncounted.add(name)
            return "again"
        if (self.json or self.text) and (current < total or probed):
            return "again"
        if (hint is None or row["fingerprint"] != hint
                or rows.get(name.lower().rstrip(".")) is not row
                # (a final dot: the judge files its deployments under another key, unclaimed)
                or name.endswith(".")
                or str(row["enable"] or "").upper() != "Y"):
            return "again" if current else "partial"
        if self.listing and current:
            targets = listed.split(SEP)
            # a separator in a target, or a list the database cut (the count can still add up
            # when the cut falls in the last target)
            if len(targets) != current or self.cut(listed):
                return "again"
            self.listed[name] = targets
        self.verified.add(name)
        # the judge groups deployments by their lower-case name (no final-dot strip)
        key = name.lower()
        self.counts[key] = self.counts.get(key, 0) + current
        return "partial" if current < total else None

    def others(self, conn: Connection, cols: Sequence[Any], wanted: Sequence[str],
               partial: Sequence[str], again: Sequence[str],
               attached: int | None = None) -> list[Any]:
        """The rows Python judges: every deployment without a ``certs`` row of its exact name,
        those of ``partial`` (verified names with rows SQL does not call current) that SQL
        does not call current, and every row of ``again`` (names whose count was not
        trusted); by exact name, each name's rows in the order the database sorts them by
        (host, entry), as the full view reads them (MariaDB's collations ignore case, and
        weigh ``_`` after letters), each row once. ``attached``: the deployments of an exact
        ``certs`` name, counted over every ``certs`` row (a pass): if that is all of them,
        none is without one and they are not looked for."""
        d = deployments.c
        order = (d.name, d.host, d.entry)
        found: list[Any] = []
        query: Any
        scan = len(partial) > SCAN_ABOVE
        if scan:  # the rows not current, those without a certs row too
            query = select(*cols).select_from(self.joined()).where(self.is_current() == 0)
            lists: tuple[tuple[Sequence[str], int | None], ...] = ((again, None),)
        else:
            query = select(*cols).where(self.same(d.name).not_in(select(certs.c.name)))
            lists = ((partial, 0), (again, None))
            if not wanted and attached is not None and attached == conn.execute(
                    select(func.count()).select_from(deployments)).scalar_one():
                query = None
            elif not wanted:
                found, query = self._without_certs(conn, query)
        if wanted:
            query = query.where(func.lower(d.name).in_(wanted))
        if query is not None:
            found += conn.execute(query.order_by(*order)).all()
        if scan and again:  # (``again``'s rows are all read below)
            listed = set(again)
            found = [r for r in found if r[0] not in listed]
        for names, current in lists:
            for start in range(0, len(names), CHUNK):
                query = select(*cols).select_from(self.joined()).where(
                    self._among(list(names[start:start + CHUNK])))
                if current is not None:
                    query = query.where(self.is_current() == current)
                if wanted:
                    query = query.where(func.lower(d.name).in_(wanted))
                found += conn.execute(query.order_by(*order)).all()
        # (a row twice: two spellings of a name in two lists of names compared ignoring case)
        seen: set[tuple[Any, Any, Any]] = set()
        unique = []
        for row in found:
            key = (row[0], row[1], row[2])
            if key not in seen:
                seen.add(key)
                unique.append(row)
        unique.sort(key=lambda r: r[0])  # (stable: each name's rows came from one statement)
        return unique

    def _without_certs(self, conn: Connection, query: Any) -> tuple[list[Any], Any]:
        """The deployments without a ``certs`` row of their exact name (``query``'s rows),
        found by name: one pass over the deployments' key groups their names as the database
        compares them (on MariaDB ignoring case), and only groups whose first and last exact
        name differ, or whose name has no ``certs`` row, are read (usually none). On MariaDB a
        look-up per deployment name instead of per deployment row: about half the time.
        Returns (the rows found, None), or ([], ``query``) to read them with it (many names)."""
        d = deployments.c
        if self.same(d.name) is d.name:  # a group is one exact name (SQLite, PostgreSQL)
            found_names: Any = (select(d.name, d.name).group_by(d.name)
                                .having(d.name.not_in(select(certs.c.name))))
        else:
            groups = (select(func.min(self.same(d.name)).label("lo"),
                             func.max(self.same(d.name)).label("hi"))
                      .group_by(d.name).subquery())
            found_names = select(groups.c.lo, groups.c.hi).where(or_(
                groups.c.lo != groups.c.hi, groups.c.lo.not_in(select(certs.c.name))))
        names: set[str] = set()
        for lo, hi in conn.execute(found_names):
            names.update(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in (lo, hi))
            if len(names) > SCAN_ABOVE:
                return [], query
        found: list[Any] = []
        ordered = sorted(names)
        for start in range(0, len(ordered), CHUNK):
            found += conn.execute(query.where(d.name.in_(ordered[start:start + CHUNK]))
                                  .order_by(d.name, d.host, d.entry)).all()
        return found, None

    def current_rows(self, conn: Connection, cols: Sequence[Any],
                     names: Sequence[str]) -> list[Any]:
        """The current rows of the verified certificates ``names`` (exact names), in the
        judge's order (name, host, entry): what the full view would list as current for them."""
        d = deployments.c
        chosen = [n for n in names if n in self.verified]
        found: list[Any] = []
        for start in range(0, len(chosen), CHUNK):
            found += conn.execute(
                select(*cols).select_from(self.joined())
                .where(self._among(chosen[start:start + CHUNK]),
                       self.is_current() == 1)
                .order_by(d.name, d.host, d.entry)).all()
        return found

    def ordered_aggregates(self) -> bool:
        """True if the database orders an aggregate's values as asked (SQLite from 3.44)."""
        if self.dialect != "sqlite":
            return True
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 44)

    def keys_listed(self) -> bool:
        """True if an aggregate of targets comes with their keys, for Python to check their
        order (:meth:`_ordered_targets`)."""
        return not (self.ordered_aggregates() or self.in_key_order)

    def _ordered_targets(self, each: Any, current: Any) -> Any:
        """``each`` of the targets joined by :data:`SEP` in (host, entry) order (for
        :meth:`counts_column`); where the database cannot order an aggregate, in the order
        the plan reads them (:attr:`in_key_order`), or followed by GS and the keys
        (``host<SOH>entry``) of the ``current`` ones in the same order."""
        d = deployments.c
        if self.ordered_aggregates():
            return func.coalesce(func.aggregate_strings(each, SEP)
                                 .aggregate_order_by(d.host, d.entry), "")
        if self.in_key_order:
            return func.coalesce(func.aggregate_strings(each, SEP), "")
        keys = func.aggregate_strings(case((current, d.host + SOH + d.entry)), SEP)
        return (func.coalesce(func.aggregate_strings(each, SEP), "")
                + GS + func.coalesce(keys, ""))

    def parse(self, counts: str) -> tuple[int, int | None, str]:
        """(total, current, listed) of what :meth:`counts_column` said of a row; with ``json``
        or ``text`` the current ones are counted in the list (None where the list does not add
        up to the total: a separator in a target, a list the database cut)."""
        total_text, _, rest = counts.partition(":")
        current_text, _, listed = rest.partition(":")
        total = int(total_text)
        if not (self.json or self.text):
            return total, int(current_text), listed
        items = listed
        if self.keys_listed():
            if listed.count(GS) != 1:
                return total, None, listed
            items = listed.partition(GS)[0]
        found = items.split(SEP)
        if len(found) != total or self.cut(listed):
            return total, None, listed
        return total, total - found.count(NOT_CURRENT), listed

    @property
    def raw_targets(self) -> bool:
        """True if the database sends a current target's values (:meth:`target_json`), for
        Python to write its JSON (:func:`lecentral.fleet.jsonpass.target_text`): MariaDB and
        PostgreSQL build JSON slowly (on MariaDB 1.2 s of the server's 1.8 s for 100,000
        certificates on 3 hosts, and three times the bytes on the wire); SQLite builds it
        faster than it joins the values."""
        return self.dialect != "sqlite"

    def target_json(self) -> Any:
        """What the database writes of a deployment row for ``lecentral fleet --json``'s
        current target: on SQLite its JSON (compact, as Python's separators; values outside
        ASCII stay UTF-8); elsewhere (:attr:`raw_targets`) its values joined by :data:`FS`, in
        the order of :data:`RAW_FIELDS`: a text between double quotes (as it is: JSON where
        it needs no escaping, else Python escapes it), an integer as its digits, NULL as
        ``null`` (``host`` and ``entry`` without quotes), ``served`` ``1`` if a fingerprint
        was served (else ``0``). Python checks them
        (:func:`lecentral.fleet.jsonpass.targets_text`)."""
        d = deployments.c
        if self.raw_targets:
            def text(col: Any) -> Any:
                return func.coalesce(literal('"', String) + col + '"', "null")

            def number(col: Any) -> Any:
                return func.coalesce(cast(col, String), "null")

            served = case((func.coalesce(d.served_fp, "") != "", "1"), else_="0")
            values = (d.host, d.entry, number(d.installed_not_after), served,
                      number(d.served_not_after), text(d.served_url), text(d.served_error),
                      number(d.ts_served), number(d.ts_reported), text(d.result),
                      text(d.db_user))
            return func.concat_ws(FS, *values, type_=String)  # (none is NULL)

        def seen(fp: Any, not_after: Any, url: Any, error: Any, ts: Any) -> Any:
            return func.json_object("fingerprint", fp, "not_after", not_after, "url", url,
                                    "error", error, "ts", ts)

        served_seen = case((or_(func.coalesce(d.served_fp, "") != "",
                                func.coalesce(d.served_error, "") != ""),
                            seen(d.served_fp, d.served_not_after, d.served_url, d.served_error,
                                 d.ts_served)), else_=null())
        return func.json_object(
            "kind", "agent", "target", d.host + " (" + d.entry + ")", "host", d.host,
            "installed", seen(d.installed_fp, d.installed_not_after, null(), null(),
                              d.ts_reported),
            "served", served_seen, "ts", d.ts_reported, "state", "current",
            "detail", "the database's certificate", "result", d.result, "db_user", d.db_user)

    def current_json(self, conn: Connection, names: Sequence[str]) -> list[Any]:
        """(name, what :meth:`target_json` writes, the fingerprint it is current against) of
        the current rows of the verified certificates ``names``, in the judge's order: one
        string per target crosses the wire, not 13 values that PyMySQL decodes one by one in
        Python."""
        d = deployments.c
        target = self.target_json()
        chosen = [n for n in names if n in self.verified]
        found: list[Any] = []
        for start in range(0, len(chosen), CHUNK):
            found += conn.execute(
                select(d.name, target, cert_facts.c.fingerprint).select_from(self.joined())
                .where(self._among(chosen[start:start + CHUNK]),
                       self.is_current() == 1)
                .order_by(d.name, d.host, d.entry)).all()
        return found


#: at most this many names of rows not plainly OK are listed (and read by name) after the pass
#: that counts the others; above, a second pass over ``certs`` reads them
LIST_AT_MOST = 10_000
def expiry_key(dialect: str, ts_expire: Any, name: Any) -> Any:
    """``ts_expire`` as 20 digits, then ``name``: their minimum is the row expiring first,
    and among those the first by name as the database orders names (for a positive
    ``ts_expire``; the caller checks the digits against ``min(ts_expire)``)."""
    if dialect == "sqlite":
        digits: Any = func.printf("%020d", ts_expire)
    else:
        digits = func.lpad(cast(ts_expire, String), 20, "0")
    return func.concat(digits, name) if dialect != "sqlite" else digits.concat(name)


#: seconds SQL adds to every expiry threshold, so that rounding can only send a certificate to
#: Python, never keep one that is near a threshold away from it
MARGIN = 2


@dataclass(frozen=True)
class Limit:
    """One expiry threshold as :class:`lecentral.fleet.nagios.Thresholds` applies it: ``days``
    left, or (``days`` None) ``fraction`` of the certificate's lifetime."""

    days: float | None
    fraction: float


def plainly_ok(split: Split, now: int, limits: Sequence[Limit]) -> Any:
    """True in SQL for a ``certs`` row (joined to its facts) that ``lecentral check`` would find
    nothing to say about, judged completely by the database; NULL or false for anything else
    (Python then judges the row as before). A superset of the doubts is sent to Python:

    - the facts are ``ok`` and still describe the stored row (:func:`facts.recorded`: the
      server's checksum of ``crt``, ``csr``, ``ca``; the name was valid when they were derived),
      the name needs no normalising (:func:`facts.odd_names`), ``enable`` is exactly ``Y``,
      ``certbot`` ``Y``/``N``/NULL, ``md5_modulus`` a hex digest, ``csr`` not empty;
    - no failed renewal (``count_fail_update`` 0), so its lifetime is ``ts_expire -
      ts_last_update`` as :func:`lecentral.fleet.nagios.lifetimes` reads it, and the days left
      are above every threshold by :data:`MARGIN` seconds (integer arithmetic);
    - every deployment of its exact name is one SQL calls current (:meth:`Split.current`) and
      no probe result of its exact name exists.

    Rows of other names that the judge would attach to it (other cases, a final dot) are not
    seen here: :meth:`lecentral.fleet.store.FleetStore.snapshot` looks them up and falls back
    to the plain split view when there are any."""
    from fractions import Fraction

    from sqlalchemy import not_

    from lecentral.store import facts

    c, same = certs.c, split.same
    left = c.ts_expire - now
    lifetime = c.ts_expire - c.ts_last_update
    conditions: list[Any] = [
        facts.recorded(split.dialect), not_(facts.odd_names(split.dialect)),
        same(c.enable) == "Y",
        or_(c.certbot.is_(None), same(c.certbot).in_(["Y", "N"])),
        func.length(c.md5_modulus).in_([32, 64]), func.length(c.csr) > 0,
        cert_facts.c.fingerprint.is_not(None),
        c.count_fail_update == 0, c.ts_last_update > 1, c.ts_expire > c.ts_last_update,
    ]
    if split.dialect == "sqlite":
        conditions += [c.md5_modulus.op("NOT GLOB")("*[^0-9a-f]*"),
                       func.typeof(c.ts_expire) == "integer"]
    elif split.dialect == "postgresql":
        conditions.append(c.md5_modulus.op("~")("^[0-9a-f]+$"))
    else:
        conditions.append(func.binary(c.md5_modulus).op("REGEXP")("^[0-9a-f]+$"))
    for limit in limits:
        if limit.days is not None:
            seconds = int(limit.days * 86400) + 1 + MARGIN
            # beyond any certificate's days left (and a 64-bit integer): Python judges them all
            conditions.append(left >= seconds if seconds < 2 ** 62 else false_())
        else:
            share = Fraction(limit.fraction).limit_denominator(1000)
            if abs(float(share) - limit.fraction) > 1e-12:
                conditions.append(false_())
                continue
            # left >= lifetime * share + MARGIN, in integers
            conditions.append((left - MARGIN) * share.denominator
                              >= lifetime * share.numerator)
    d = deployments.c
    not_current = (select(d.name).select_from(deployments)
                   .where(split._exact(c.name), split.is_current() == 0))
    conditions += [not_(not_current.exists()), not_(split.probed().exists())]
    return and_(*conditions)


def false_() -> Any:
    """SQL's false (a threshold SQL cannot compute exactly: every row goes to Python)."""
    from sqlalchemy import false

    return false()


def plainly_no_problem(split: Split) -> Any:
    """True in SQL for a ``certs`` row (joined to its facts) that ``lecentral fleet --problems``
    would not list, judged completely by the database: its name needs no normalising
    (:func:`facts.odd_names`) and either it is not enabled (``disabled``, whatever its
    targets), or it is enabled, the server's checksum of its stored ``crt`` is the one its facts
    were derived from (so their fingerprint is the crt's), it has a deployment of its exact
    name, every such one SQL calls current (:meth:`Split.current`), and no probe result of its
    exact name exists (``current``). Everything else is judged in Python, as before; rows of
    other names the judge would attach to it are looked up by
    :meth:`lecentral.fleet.store.FleetStore.snapshot`."""
    from sqlalchemy import not_

    from lecentral.store import facts

    c, f = certs.c, cert_facts.c
    enabled = func.upper(func.coalesce(c.enable, "")) == "Y"
    # 1 when it has deployments and every one is current (NULL without any): one look-up
    # of its deployments, not one for "has any" and one for "has one not current"
    all_current = (select(func.min(split.is_current())).select_from(deployments)
                   .where(split._exact(c.name)).scalar_subquery())
    probed = split.probed()
    current = and_(
        enabled, f.fingerprint.is_not(None),
        facts.sum_sql(split.dialect) == f.blobs_sum,
        all_current == 1, not_(probed.exists()))
    return and_(not_(facts.odd_names(split.dialect)),
                or_(not_(enabled), current))


def reads_in_key_order(conn: Connection, query: Any) -> bool:
    """True if SQLite's plan for ``query`` reads ``lecentral_deployments`` only by equality on
    the name of their (name, host, entry) key, in its order: the rows of one name then come in
    (host, entry) order, byte for byte (the key's collations are BINARY), and an aggregate
    over them sees them so (SQLite before 3.44 cannot be told the order of an aggregate; its
    loop over an index is the index's order). Any other plan (an index an admin added, a
    collation) is False: the keys are then listed and checked."""
    table = deployments.name
    key = None
    for _, index, unique, _, _ in conn.exec_driver_sql(f"PRAGMA index_list({table})"):
        columns = [(row[2], row[4], row[3]) for row in
                   conn.exec_driver_sql(f"PRAGMA index_xinfo('{index}')") if row[5]]
        if unique and columns == [("name", "BINARY", 0), ("host", "BINARY", 0),
                                  ("entry", "BINARY", 0)]:
            key = index
    if key is None:
        return False
    compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
    details = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    searches = [d for d in details if table in d]
    return bool(searches) and all(
        d in (f"SEARCH {table} USING INDEX {key} (name=?)",
              f"SEARCH {table} USING COVERING INDEX {key} (name=?)") for d in searches)
