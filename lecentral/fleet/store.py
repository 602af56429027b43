"""Reading and writing lecentral's fleet tables (the ``certs`` table is only read here).

An agent writes through :meth:`FleetStore.report` with its own, least-privileged database user:
its deployments (one current row per name, host and entry) and its run. On MariaDB and
PostgreSQL the database fills ``db_user`` itself and refuses a report for a host that
``lecentral_agents`` does not give to that user (triggers, see
:mod:`lecentral.store.migrations`); SQLite has no users, so there the column stays empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    LargeBinary,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from lecentral.errors import StoreError
from lecentral.fleet import halves
from lecentral.fleet.current import (
    Limit,
    Split,
    plainly_no_problem,
    plainly_ok,
    reads_in_key_order,
)
from lecentral.fleet.model import Run, RunInfo
from lecentral.fleet.taker import RowTaker
from lecentral.names import pem_fingerprint
from lecentral.store import facts, packed
from lecentral.store.schema import (
    agents,
    cert_facts,
    certs,
    deployments,
    endpoints,
    fleet_states,
    probes,
    runs,
)
from lecentral.store.sql import SqlStore

log = logging.getLogger(__name__)

__all__ = ["Deployment", "FleetStore", "ProbeResult", "ProbeTarget", "Run", "Snapshot",
           "StateRow", "json_list", "pem_fingerprint", "subject_key"]

#: bytes an aggregated string may take on MariaDB and MySQL (:meth:`FleetStore._aggregate_chars`)
AGGREGATE_BYTES = 64 << 20
#: above this many rows of ``certs``, ``check`` judges its two halves at once on MariaDB,
#: MySQL and PostgreSQL (:meth:`FleetStore._judged_halves`)
PARALLEL_ABOVE = 20_000
#: what :meth:`FleetStore._judged_part` says of some rows of ``certs``
_Part = tuple[int, int, Any, str | None, str, bool]


@dataclass(frozen=True)
class Deployment:
    """What an agent reports for one ``[[cert]]`` entry after a run."""

    name: str
    entry: str
    service: str
    installed_fp: str | None
    installed_not_after: int | None
    served_fp: str | None
    served_not_after: int | None
    served_names: list[str] | None
    served_key_md5: str | None
    served_url: str | None
    served_error: str | None
    ts_served: int | None
    verify_urls: list[str]
    paths: list[str]
    result: str
    message: str


@dataclass(frozen=True)
class ProbeTarget:
    """One endpoint for ``lecentral probe``: a reported verify URL or an operator's endpoint."""

    name: str
    url: str  # with the certificate's name as SNI, loopback replaced by the reporting host
    source: str  # "agent" or "operator"


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw."""

    name: str
    url: str
    source: str
    fingerprint: str | None = None
    not_after: int | None = None
    names: list[str] | None = None
    key_md5: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StateRow:
    subject: str
    name: str
    target: str
    state: str
    ts_since: int
    detail: str


@dataclass
class Snapshot:
    """The raw tables a :class:`~lecentral.fleet.model.FleetView` is computed from."""

    certs: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[Any] = field(default_factory=list)  # rows of lecentral_deployments' columns
    probes: list[Any] = field(default_factory=list)  # rows of lecentral_probes' columns
    runs: list[RunInfo] = field(default_factory=list)
    #: with a split, ``deployments`` holds only the rows SQL did not call current; the others
    #: are counted there (and read again, streamed, by the views that list them)
    split: Split | None = None
    #: certificates the database judged plainly OK for ``check`` and only counted
    #: (:func:`lecentral.fleet.current.plainly_ok`): in neither ``certs`` nor ``deployments``
    plain_ok: int = 0


def json_list(value: str | None) -> list[str]:
    """A JSON list column as strings (anything else: empty)."""
    if not value:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    return [str(v) for v in data] if isinstance(data, list) else []


def subject_key(*parts: str) -> str:
    """The primary key of a fleet state: a hash, so that long URLs fit any database's index."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def expiry_facts_columns() -> list[Any]:
    """``facts_not_after`` and ``facts_not_before`` of a split snapshot (joined to the facts):
    the notAfter and notBefore the last renew sweep read in the row's crt, only where
    ``ts_expire`` disagrees with that notAfter by :data:`~lecentral.store.rows.TS_EXPIRE_SLACK`
    or more (a hand edit, an old bug: the renew job calls that a bad certificate) or does not
    tell it (NULL, 0, populate.pl's 1), else NULL; ``lecentral metrics`` then tells the crt's
    notAfter, not ``ts_expire``. They describe the
    crt only where its fingerprint is the facts' (``hint_fp``): the caller checks that. No
    subtraction: ``ts_expire`` is UNSIGNED on MariaDB."""
    from lecentral.store.rows import TS_EXPIRE_SLACK

    c, f = certs.c, cert_facts.c
    off = and_(f.not_after.is_not(None),
               or_(c.ts_expire.is_(None), c.ts_expire <= 1,
                   c.ts_expire >= f.not_after + TS_EXPIRE_SLACK,
                   f.not_after >= c.ts_expire + TS_EXPIRE_SLACK))
    return [case((off, f.not_after), else_=None).label("facts_not_after"),
            case((off, f.not_before), else_=None).label("facts_not_before")]


class FleetStore:
    """The fleet tables of a :class:`~lecentral.store.sql.SqlStore`."""

    def __init__(self, store: object) -> None:
        if not isinstance(store, SqlStore):
            raise StoreError("fleet reports need lecentral's SQL store (sqlite, mysql+pymysql, "
                             "mariadb+pymysql, postgresql+psycopg URLs)")
        self.store = store
        #: what :meth:`snapshot` read last (check judges the rows of ``certs`` from it too)
        self.last_snapshot = Snapshot()

    # -- agents ------------------------------------------------------------------------------------

    def report(self, host: str, items: Sequence[Deployment], run: Run, version: str,
               now: int) -> None:
        """Write an agent's deployments and its run in one transaction (all or nothing)."""
        with self.store.transaction(f"reporting the run of {host}") as conn:
            for item in items:
                self._upsert_deployment(conn, host, item, version, now)
            self._insert_run(conn, run, version)

    @staticmethod
    def _upsert_deployment(conn: Connection, host: str, item: Deployment, version: str,
                           now: int) -> None:
        values = {
            "service": item.service, "installed_fp": item.installed_fp,
            "installed_not_after": item.installed_not_after, "served_fp": item.served_fp,
            "served_not_after": item.served_not_after,
            "served_names": json.dumps(item.served_names) if item.served_names is not None else None,
            "served_key_md5": item.served_key_md5, "served_url": item.served_url,
            "served_error": item.served_error[:2000] if item.served_error else None,
            "ts_served": item.ts_served, "verify_urls": json.dumps(item.verify_urls),
            "paths": json.dumps(item.paths), "result": item.result,
            "message": item.message[:4000], "agent_version": version, "ts_reported": now,
        }
        where = and_(deployments.c.name == item.name, deployments.c.host == host,
                     deployments.c.entry == item.entry)
        if conn.execute(update(deployments).where(where).values(**values)).rowcount == 0:
            conn.execute(insert(deployments).values(name=item.name, host=host, entry=item.entry,
                                                    **values))

    @staticmethod
    def _insert_run(conn: Connection, run: Run, version: str) -> None:
        conn.execute(insert(runs).values(
            kind=run.kind, host=run.host, ts_start=run.ts_start, ts_end=run.ts_end,
            exit_code=run.exit_code, counts=json.dumps(run.counts, sort_keys=True),
            message=run.message[:4000], version=version))

    def record_run(self, run: Run, version: str, keep: int | None = None) -> None:
        """Append a central run (renew, probe) to ``lecentral_runs``; with ``keep`` (seconds),
        delete the runs that ended longer ago than that (``[fleet] keep_runs``), except the latest
        of each kind and host, so that a long-dead agent stays visible."""
        with self.store.transaction(f"recording the {run.kind} run") as conn:
            self._insert_run(conn, run, version)
            if keep is not None:
                latest = select(func.max(runs.c.id)).group_by(runs.c.kind, runs.c.host)
                keep_ids = [i for (i,) in conn.execute(latest).all()]
                conn.execute(delete(runs).where(runs.c.ts_end < run.ts_end - keep,
                                                runs.c.id.not_in(keep_ids)))

    def agents(self) -> list[dict[str, Any]]:
        with self.store.transaction("reading lecentral_agents") as conn:
            return [dict(r) for r in conn.execute(select(agents).order_by(agents.c.host)).mappings()]

    def add_agent(self, host: str, db_user: str, now: int) -> None:
        """Let ``db_user`` report for ``host`` (replacing the user it had)."""
        with self.store.transaction(f"registering the agent of {host}") as conn:
            if conn.execute(update(agents).where(agents.c.host == host)
                            .values(db_user=db_user, ts_added=now)).rowcount == 0:
                conn.execute(insert(agents).values(host=host, db_user=db_user, ts_added=now))

    def remove_agent(self, host: str) -> bool:
        with self.store.transaction(f"removing the agent of {host}") as conn:
            return bool(conn.execute(delete(agents).where(agents.c.host == host)).rowcount)

    def forget_host(self, host: str) -> int:
        """Delete a decommissioned host's deployments; return how many."""
        with self.store.transaction(f"forgetting {host}") as conn:
            return int(conn.execute(delete(deployments).where(deployments.c.host == host)).rowcount)

    # -- endpoints and probes ----------------------------------------------------------------------

    def add_endpoint(self, name: str, url: str, added_by: str, now: int) -> bool:
        """Add an operator endpoint; False if it was there already."""
        with self.store.transaction(f"adding endpoint {url} of {name}") as conn:
            exists = conn.execute(select(endpoints.c.id).where(
                endpoints.c.name == name, endpoints.c.url == url)).first()
            if exists:
                return False
            conn.execute(insert(endpoints).values(name=name, url=url, ts_added=now,
                                                  added_by=added_by))
        return True

    def remove_endpoint(self, name: str, url: str) -> bool:
        """Remove an operator endpoint and its probe result; False if there was none."""
        with self.store.transaction(f"removing endpoint {url} of {name}") as conn:
            gone = conn.execute(delete(endpoints).where(endpoints.c.name == name,
                                                        endpoints.c.url == url)).rowcount
            conn.execute(delete(probes).where(probes.c.name == name, probes.c.url == url,
                                              probes.c.source == "operator"))
        return bool(gone)

    def endpoints(self, names: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The operator's endpoints (of ``names``, by lower-case name, as the judge files
        them; all when empty)."""
        query = select(endpoints).order_by(endpoints.c.name, endpoints.c.url)
        wanted = [n.lower() for n in names]
        if wanted:
            query = query.where(func.lower(endpoints.c.name).in_(wanted))
        with self.store.transaction("reading lecentral_endpoints") as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def reported_urls(self, names: Iterable[str] = ()) -> Iterator[tuple[str, str, str]]:
        """(name, host, verify URL) of every deployment that reported verify URLs (of
        ``names``, by lower-case name, as the judge files them: a report under another
        spelling is probed for its certificate too; all when empty)."""
        query = select(deployments.c.name, deployments.c.host, deployments.c.verify_urls)
        wanted = [n.lower() for n in names]
        if wanted:
            query = query.where(func.lower(deployments.c.name).in_(wanted))
        with self.store.transaction("reading lecentral_deployments") as conn:
            rows = conn.execute(query).all()
        for name, host, urls in rows:
            for url in json_list(urls):
                yield str(name), str(host), url

    def save_probes(self, results: Sequence[ProbeResult], prober: str, now: int) -> None:
        """Replace the latest probe result of each (name, url) probed."""
        with self.store.transaction("saving probe results") as conn:
            for r in results:
                values = {
                    "source": r.source, "ts": now, "prober": prober, "fingerprint": r.fingerprint,
                    "not_after": r.not_after,
                    "names": json.dumps(r.names) if r.names is not None else None,
                    "key_md5": r.key_md5, "error": r.error[:2000] if r.error else None,
                }
                where = and_(probes.c.name == r.name, probes.c.url == r.url)
                if conn.execute(update(probes).where(where).values(**values)).rowcount == 0:
                    conn.execute(insert(probes).values(name=r.name, url=r.url, **values))

    def forget_probes(self, keep: set[tuple[str, str]]) -> int:
        """Delete probe results whose (name, url) is no longer an endpoint; return how many."""
        with self.store.transaction("pruning probe results") as conn:
            known = conn.execute(select(probes.c.id, probes.c.name, probes.c.url)).all()
            gone = [i for i, n, u in known if (n, u) not in keep]
            for start in range(0, len(gone), 500):
                conn.execute(delete(probes).where(probes.c.id.in_(gone[start:start + 500])))
        return len(gone)

    # -- the snapshot the views are computed from --------------------------------------------------

    def snapshot(self, names: Iterable[str] = (), current_after: int | None = None,
                 listing: bool = False, ok_limits: Sequence[Limit] | None = None,
                 now: int | None = None, count_above: int = 0,
                 problems_only: bool = False, taker: RowTaker | None = None,
                 exact: bool = False) -> Snapshot:
        """``certs`` (the columns the fleet needs), deployments, probes and the latest runs.

        Only what the judge reads is selected, and JSON columns stay text until a target needs
        them (``served_names``, ``names``: only when what is served is not the current leaf):
        10,000 certificates on 3 hosts must be judged in well under a second.

        With ``current_after`` (the oldest report that may still be current: now minus
        ``[fleet] agent_max_age``), the deployments SQL finds current are only counted
        (:mod:`lecentral.fleet.current`): 100,000 certificates on 3 hosts in about a second;
        with ``listing`` too, their targets are listed per certificate (``split.listed``).

        With ``ok_limits`` and ``now`` too (``check`` of the whole fleet), the certificates the
        database finds plainly OK at ``now`` (:func:`~lecentral.fleet.current.plainly_ok`) are
        only counted (``plain_ok``), if more than ``count_above`` of them, except those expiring
        first (the soonest expiry is named): only the others reach Python. With
        ``problems_only`` instead (``fleet --problems``), those it finds disabled or plainly
        current (:func:`~lecentral.fleet.current.plainly_no_problem`).

        With ``taker`` (and ``current_after``: ``lecentral metrics`` with ``listing``,
        ``lecentral fleet --json`` with the targets' JSON), every ``certs`` row is handed to it
        first, with a column ``probed`` (a probe result of its exact name exists); the rows it
        takes are left out of the snapshot. If a row read may belong to one it took (the judge
        files rows under their lower-case name), it is told to abandon them and the snapshot is
        read again without it.

        With ``exact``, ``names`` are stored names, and only rows of exactly those names are
        read (through the tables' keys); the caller knows no row of another spelling exists.
        """
        if taker is not None and current_after is None:
            raise ValueError("a taker reads a split snapshot (current_after)")
        names = list(names)  # (read twice with ``exact``)
        wanted = [n.lower().rstrip(".") for n in names]
        # the crt's fingerprint as the last renew sweep recorded it, while the database's
        # checksum of the stored crt (with csr and ca) is still the recorded one
        # (lecentral/store/facts.py; on SQLite a function registered on the connection);
        # otherwise the crt itself, fingerprinted here: only changed certificates cross the
        # wire (on SQLite, 100,000 fingerprints in Python cost three times the checksums).
        # The checksum is computed once per row: a NULL ``crt`` column says the facts'
        # fingerprint (``cached_fp``) is the crt's; a NULL crt not so described comes as empty
        f, c = cert_facts.c, certs.c
        split = (Split(self.store.dialect, current_after, listing=listing,
                       json=taker is not None and taker.wants == "json",
                       text=taker is not None and taker.wants == "text",
                       # (SQLite's pass may be read in two processes: the column says it)
                       probes_read=taker is not None and self.store.dialect != "sqlite")
                 if current_after is not None else None)
        fresh = and_(f.name.is_not(None), f.fingerprint.is_not(None),
                     facts.sum_sql(self.store.dialect) == f.blobs_sum)
        sent = fresh
        if taker is not None:  # and where the lifetime is the crt's (lifetimes())
            # (on SQLite a text in these INTEGER columns is no number, its affinity made the
            # numbers' texts numbers: as a text sorts above every number, a text ts_last_update
            # sends the crt, and a text ts_expire is no expiry, whose lifetime is not asked)
            sent = and_(fresh, func.coalesce(c.count_fail_update, 0) == 0,
                        c.ts_last_update > 1, c.ts_last_update < c.ts_expire)
        crt = case((sent, None), else_=func.coalesce(c.crt, literal(b"", LargeBinary))
                   ).label("crt")
        cached = f.fingerprint.label("cached_fp")
        joined = certs.outerjoin(cert_facts, f.name == c.name)

        def columns() -> list[Any]:
            cols = [certs.c.name, certs.c.enable, crt, cached, certs.c.md5_modulus,
                    certs.c.ts_expire, certs.c.ts_last_update, certs.c.count_fail_update,
                    certs.c.certbot,
                    func.length(certs.c.csr, type_=Integer).label("csr_length")]  # for check's row problems
            if split is not None:  # the hint SQL compared the deployments against, their count
                cols += [f.fingerprint.label("hint_fp"), split.counts_column()]
                if taker is not None:
                    cols.append(split.probed_column())
                cols += expiry_facts_columns()
            return cols

        cols = columns()
        if split is not None and (split.json or split.text) and split.keys_listed():
            # SQLite before 3.44: no keys to list if the plan reads the targets in key order
            split.in_key_order = True
            query = select(*columns()).select_from(joined).order_by(certs.c.name)
            with self.store.transaction("planning the fleet pass") as conn:
                split.in_key_order = reads_in_key_order(conn, query)
            cols = columns()
        d = deployments.c
        dep_cols = (d.name, d.host, d.entry, d.installed_fp, d.installed_not_after, d.served_fp,
                    d.served_not_after, d.served_names, d.served_key_md5, d.served_url,
                    d.served_error, d.ts_served, d.result, d.message, d.ts_reported, d.db_user)
        p = probes.c
        probe_cols = (p.name, p.url, p.source, p.ts, p.fingerprint, p.not_after, p.names, p.key_md5,
                      p.error, p.db_user)
        cert_q = select(*cols).select_from(joined).order_by(certs.c.name)
        dep_q = select(*dep_cols).order_by(d.name, d.host, d.entry)
        probe_q = select(*probe_cols).order_by(p.name, p.url)
        if wanted and exact:  # (a look-up by key: no scan of the tables)
            cert_q = cert_q.where(certs.c.name.in_(list(names)))
            dep_q = dep_q.where(d.name.in_(list(names)))
            probe_q = probe_q.where(p.name.in_(list(names)))
        elif wanted:
            # as the judge files them: a certificate under its lower-case name without a final
            # dot, a deployment or probe under its lower-case name (a report filed under
            # another spelling was left out of `fleet NAME` and `check NAME`, which then said
            # "current" where the whole fleet's view said "stale")
            cert_q = cert_q.where(func.lower(certs.c.name).in_(
                [*wanted, *(f"{n}." for n in wanted)]))
            dep_q = dep_q.where(func.lower(d.name).in_(wanted))
            probe_q = probe_q.where(func.lower(p.name).in_(wanted))
        snap = Snapshot(split=split)
        extra = ("cached_fp", "crt", "hint_fp", "fleet_counts", "plain_ok", "probed")
        # above FORK_ABOVE rows, a child reads the names from the middle one on (halves.py)
        half = (self._other_half(cert_q, split, taker)
                if taker is not None and split is not None and not wanted and ok_limits is None
                and not problems_only else None)
        with half or contextlib.nullcontext(), self.store.transaction("reading the fleet") as conn:
            if half is None:  # (two halves are two reads: no lock kept while the child reads)
                self._one_snapshot(conn)
            if split is not None:  # its aggregated strings may be cut (Split.cut)
                split.max_chars = self._aggregate_chars(conn)
            others: set[str] | None = None  # the names SQL did not find plainly OK
            if split is not None and ok_limits is not None and now is not None and not wanted:
                ok = plainly_ok(split, now, ok_limits)
                count, soonest, first, others = self._judged_ok(conn, split, ok)
                if count > count_above:  # else every row is read, as before
                    snap.plain_ok = count
                    cert_q = cert_q.add_columns(case((ok, 1), else_=0).label("plain_ok"))
                    if others is None:  # too many to list: a second pass over certs
                        cert_q = cert_q.where(
                            case((and_(ok, certs.c.ts_expire > soonest), 1), else_=0) == 0)
                    else:  # by name (the key): the others, and the first to expire
                        cert_q = cert_q.where(split.among(sorted({*others, first})))
            elif split is not None and problems_only and not wanted:
                # counted as all the rows but those read (no second pass over certs)
                snap.plain_ok = int(conn.execute(select(func.count()).select_from(certs))
                                    .scalar_one())
                cert_q = cert_q.where(case((plainly_no_problem(split), 1), else_=0) == 0)
            if split is not None and split.probes_read:  # (before the pass: Split.is_probed)
                snap.probes = list(conn.execute(probe_q).all())
                split.probed_names = frozenset(str(r[0]) for r in snap.probes)
            # in batches (fetchmany): 100,000 rows one fetchone at a time cost a third more;
            # on MariaDB each row's values as one string (PyMySQL decodes columns in Python)
            own_q = cert_q if half is None else cert_q.where(certs.c.name < half.middle)
            keys, result = packed.rows(conn, own_q, yield_per=2000)
            kept = [(k, i) for i, k in enumerate(keys) if k not in extra]
            counted: list[tuple[dict[str, Any], Any, str, bool]] = []
            at_hint = keys.index("hint_fp") if split is not None else 0
            at_probed = keys.index("probed") if "probed" in keys else -1
            at_ok = keys.index("plain_ok") if "plain_ok" in keys else -1
            at_facts = keys.index("facts_not_after") if "facts_not_after" in keys else -1
            scan = halves.Scan(keys, taker)  # (with a taker: counts the deployments of each row)
            if taker is not None and split is not None:
                taker.start(keys, split)
            if half is None or split is None:
                held = scan.held(result)
            else:
                above = cert_q.where(certs.c.name >= half.middle)
                held = half.rest((keys, result), scan, split,
                                 lambda: packed.rows(conn, above, yield_per=2000))
            for row, fingerprint in held:
                if at_ok >= 0 and row[at_ok] and (others is None or row[0] not in others):
                    snap.plain_ok -= 1  # plainly OK and expiring first: judged here
                item = {k: row[i] for k, i in kept}
                item["fingerprint"] = fingerprint
                if (at_facts >= 0 and row[at_facts] is not None
                        and (not fingerprint or fingerprint != row[at_hint])):
                    # facts of an older crt: they say nothing of this one's notAfter
                    item["facts_not_after"] = item["facts_not_before"] = None
                snap.certs.append(item)
                if split is not None and row[at_hint + 1]:  # it has deployments
                    counted.append((item, row[at_hint], str(row[at_hint + 1]),
                                    at_probed >= 0 and split.is_probed(row[0], row[at_probed])))
            if problems_only and snap.plain_ok:
                snap.plain_ok -= len(snap.certs)
            if split is None:
                # rows, not dicts: attribute access (dep.host), and no copy of 30,000 rows
                snap.deployments = list(conn.execute(dep_q).all())
            else:
                by_key = {str(c["name"]).lower().rstrip("."): c for c in snap.certs}
                read: dict[str, list[str]] = {"partial": [], "again": []}
                for item, hint, counts, probed in counted:
                    how = split.account(item, hint, counts, by_key, probed)
                    if how is not None:
                        read[how].append(str(item["name"]))
                if split.uncounted and taker is not None:  # read in full: not as counted
                    taker.abandon(f"the targets of {min(split.uncounted)} could not be counted")
                snap.deployments = split.others(conn, dep_cols, wanted, read["partial"],
                                                read["again"],
                                                scan.attached if taker is not None else None)
            if split is None or not split.probes_read:
                snap.probes = list(conn.execute(probe_q).all())
            snap.runs = self._latest_runs(conn)
            again = bool((snap.plain_ok or (taker is not None and taker.taken))
                         and self._attached_elsewhere(conn, snap))
        if again:  # (after this transaction: no lock held while another connection reads)
            if taker is not None:
                taker.abandon("a row read may belong to a certificate taken")
            return self.snapshot(names, current_after, listing)  # judged in full
        self.last_snapshot = snap
        return snap

    def _one_snapshot(self, conn: Connection) -> None:
        """Make the reading transaction (no statement run yet) one snapshot, every statement of
        the view seeing the tables as they were at its first read: a report landing between
        the pass over ``certs`` and the read of the rows SQL does not call current would
        otherwise be in neither (a target gone from the view, its remembered state forgotten:
        :func:`lecentral.fleet.states.changes`). pysqlite begins a transaction only before a
        write, so each read was its own; PostgreSQL's default, READ COMMITTED, takes a
        snapshot per statement; MariaDB's default is REPEATABLE READ, which a server's
        configuration may have changed. On SQLite the transaction holds a SHARED lock until it
        ends, so no other connection of this process reads meanwhile (a view read again in
        full is read after it; not with the pass in two processes: :mod:`lecentral.fleet.
        halves`): a writer at its commit would wait for this one, that connection for the
        writer."""
        dialect = self.store.dialect
        if dialect == "sqlite":
            conn.exec_driver_sql("BEGIN")
        elif dialect in ("postgresql", "mysql", "mariadb"):
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def _aggregate_chars(self, conn: Connection) -> int | None:
        """On MariaDB and MySQL: a length in characters from which an aggregated string may
        have been cut at ``group_concat_max_len`` bytes (up to 4 bytes a character), after
        raising the session's limit to :data:`AGGREGATE_BYTES` (at most the server's
        ``max_allowed_packet``): MySQL's default of 1,024 bytes cuts the targets of almost
        every certificate, and MariaDB's 1 MiB those of one deployed on a few thousand
        targets; a pass over such a list gives up and judges every row in Python."""
        if self.store.dialect not in ("mysql", "mariadb"):
            return None
        from sqlalchemy import text

        if AGGREGATE_BYTES:
            conn.execute(text("SET SESSION group_concat_max_len = GREATEST("
                              "@@SESSION.group_concat_max_len, "
                              "LEAST(:bytes, @@GLOBAL.max_allowed_packet))"),
                         {"bytes": AGGREGATE_BYTES})
        limit = int(conn.execute(text("SELECT @@SESSION.group_concat_max_len")).scalar_one())
        return max(0, (limit - 4) // 4)

    def _judged_ok(self, conn: Connection, split: Split, ok: Any
                   ) -> tuple[int, Any, str, set[str] | None]:
        """In one pass over ``certs``: how many rows are plainly OK, their soonest
        ``ts_expire``, the name of the first of them in the order the rows are read (by name:
        the soonest expiry check names, ties included), and the names of the others (None if
        more than :data:`~lecentral.fleet.current.LIST_AT_MOST` or not listed exactly: a
        separator in a name, a list the database cut or may have cut: a cut in the last name
        adds up too).

        On MariaDB, MySQL and PostgreSQL, above :data:`PARALLEL_ABOVE` rows, the two halves
        of ``certs`` by name are judged at once on two connections (:meth:`_judged_halves`):
        one statement runs on one core of the server, and this one is most of ``check``'s
        time there (0.9 s of 1.4 s at 100,000 certificates on 3 hosts)."""
        from lecentral.fleet.current import LIST_AT_MOST, SEP

        parts = None
        if self.store.dialect != "sqlite":
            parts = self._judged_halves(conn, split, ok)
        if parts is None:
            parts = [self._judged_part(conn, split, ok, None)]
        total = sum(p[0] for p in parts)
        count = sum(p[1] for p in parts)
        soonests = [p[2] for p in parts if p[2] is not None]
        soonest = min(soonests) if soonests else None
        # the first by the order the rows are read: by expiry, then by name (the halves are in
        # that order: a name of the first one sorts before each of the second)
        firsts = [p[3] for p in parts if p[3] is not None]
        odd = any(p[5] for p in parts)
        first = min(firsts, key=lambda f: int(f[:20])) if firsts and not odd else None
        listed = [p[4] for p in parts if p[4]]
        missing = total - count
        first_name = str(first or "")[20:]
        if (missing > LIST_AT_MOST or odd or
                (count and (first is None or int(first[:20]) != soonest))):
            return count, soonest, first_name, None
        names = set(SEP.join(listed).split(SEP)) if missing else set()
        return count, soonest, first_name, names if len(names) == missing else None

    def _judged_halves(self, conn: Connection, split: Split, ok: Any
                       ) -> list[_Part] | None:
        """:meth:`_judged_part` of the names below the middle one of ``certs`` on ``conn``
        while another connection judges the others (each its own transaction: a row changed
        in between is judged as one of them saw it; where no other connection is had at once,
        a server at its ``max_connections`` or a user at its ``max_user_connections``, or its
        statement fails, ``conn`` judges them after); None below :data:`PARALLEL_ABOVE`
        rows."""
        from concurrent.futures import ThreadPoolExecutor

        middle = self._middle(conn, PARALLEL_ABOVE)
        if middle is None:
            return None
        below = certs.c.name < middle

        def above() -> _Part | None:
            # one try, no waiting for a crowded server; any error on it (or another limit on
            # aggregated strings): ``conn`` judges this half after its own
            try:
                with self.store.engine.connect() as other, other.begin():
                    if self._aggregate_chars(other) != split.max_chars:
                        return None
                    return self._judged_part(other, split, ok, ~below)
            except SQLAlchemyError:
                return None

        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(above)
            first = self._judged_part(conn, split, ok, below)
            rest = second.result()
        return [first, rest if rest is not None else self._judged_part(conn, split, ok, ~below)]

    @staticmethod
    def _middle(conn: Connection, above: int) -> Any:
        """The name in the middle of ``certs`` by name, or None if it has ``above`` rows or
        fewer (or they were removed meanwhile)."""
        rows = int(conn.execute(select(func.count()).select_from(certs)).scalar_one())
        if rows <= above:
            return None
        return conn.execute(select(certs.c.name).order_by(certs.c.name)
                            .offset(rows // 2).limit(1)).scalar()

    def _other_half(self, query: Any, split: Split, taker: RowTaker) -> halves.OtherHalf | None:
        """A forked child reading the rows of ``query`` from the middle name on into a twin
        of ``taker`` (:mod:`lecentral.fleet.halves`); None where this process reads them all:
        :data:`~lecentral.fleet.halves.FORK_ABOVE` rows or fewer, or no fork here."""
        if not halves.usable(self.store):
            return None
        with self.store.transaction("halving the fleet pass") as conn:
            middle = self._middle(conn, halves.FORK_ABOVE)
        if middle is None:
            return None
        return halves.OtherHalf.fork(self.store, query.where(certs.c.name >= middle), middle, split,
                              taker, self._aggregate_chars)

    @staticmethod
    def _judged_part(conn: Connection, split: Split, ok: Any, where: Any
                     ) -> _Part:
        """:meth:`_judged_ok`'s statement over the rows of ``certs`` that ``where`` selects
        (None: all): (rows, plainly OK, their soonest ``ts_expire``, the first of them as
        ``expiry_key`` writes it, the others' names joined by SEP, True if that list may have
        been cut or a first does not tell its expiry). The derived table's LIMIT keeps the
        database from merging it into the outer query, which would evaluate ``ok`` once per
        use."""
        from lecentral.fleet.current import SEP, expiry_key

        flag = case((ok, 1), else_=0).label("flag")
        inner = (select(flag, certs.c.name, certs.c.ts_expire)
                 .select_from(certs.outerjoin(cert_facts, cert_facts.c.name == certs.c.name)))
        if where is not None:
            inner = inner.where(where)
        rows = inner.limit(2 ** 62).subquery()
        is_ok = rows.c.flag == 1
        total, count, soonest, first, listed = conn.execute(select(
            func.count(), func.sum(rows.c.flag), func.min(case((is_ok, rows.c.ts_expire))),
            func.min(case((is_ok, expiry_key(split.dialect, rows.c.ts_expire,
                                             rows.c.name)))),
            func.aggregate_strings(case((is_ok, None), else_=rows.c.name), SEP))).one()
        first_text = None if first is None else str(first)
        odd = first_text is not None and not (first_text[:20].isascii()
                                              and first_text[:20].isdigit())
        return (int(total), int(count or 0), soonest, first_text, str(listed or ""),
                split.cut(str(listed or "")) or odd)

    @staticmethod
    def _attached_elsewhere(conn: Connection, snap: Snapshot) -> bool:
        """True if a row read (a certificate, deployment or probe whose name is not exactly
        its own lower-case key) may belong to a certificate the database only counted: the
        judge groups by lower-case name, so such a certificate must be judged in Python (the
        caller reads everything again without counting; a rare table)."""
        read = {str(c["name"]) for c in snap.certs}
        keys = {str(c["name"]).lower().rstrip(".") for c in snap.certs
                if str(c["name"]) != str(c["name"]).lower().rstrip(".")}
        keys |= {str(r[0]).lower() for r in snap.deployments if str(r[0]) not in read}
        keys |= {str(r[0]).lower() for r in snap.probes if str(r[0]) not in read}
        found = sorted(keys - read)
        for start in range(0, len(found), 500):  # a name not read was counted
            if any(str(name) not in read for (name,) in conn.execute(
                    select(certs.c.name).where(certs.c.name.in_(found[start:start + 500])))):
                return True
        return False

    def current_targets(self) -> Iterator[tuple[str, str]]:
        """(name, target) of every deployment the last split snapshot with ``listing`` only
        counted as current (:mod:`lecentral.fleet.current`); nothing after a full snapshot."""
        split = self.last_snapshot.split
        if split is None:
            return
        for name, targets in split.listed.items():
            for target in targets:
                yield name, target

    def current_rows(self, names: Sequence[str]) -> list[Any]:
        """(name, host, entry, installed_fp, installed_not_after, served_fp, served_not_after,
        served_url, served_error, ts_served, ts_reported, result, db_user) of the deployments the
        last split snapshot counted as current for the certificates ``names``."""
        split = self.last_snapshot.split
        if split is None:
            return []
        d = deployments.c
        cols = (d.name, d.host, d.entry, d.installed_fp, d.installed_not_after, d.served_fp,
                d.served_not_after, d.served_url, d.served_error, d.ts_served, d.ts_reported,
                d.result, d.db_user)
        with self.store.transaction("reading the current deployments") as conn:
            return split.current_rows(conn, cols, names)

    def current_json(self, names: Sequence[str]) -> list[Any] | None:
        """(name, JSON) of the same targets as :meth:`current_rows`, the JSON written by the
        database as ``lecentral fleet --json`` writes it; None after a full snapshot."""
        split = self.last_snapshot.split
        if split is None:
            return None
        with self.store.transaction("reading the current deployments") as conn:
            return split.current_json(conn, names)

    def label_widths(self) -> tuple[int, bool]:
        """The longest label ``lecentral fleet`` may show in its first column (a certificate's
        name, ``host (entry)`` of a deployment, the URL of a probe, in characters where the
        database counts them so), and whether any deployment has a served fingerprint: what
        :class:`lecentral.fleet.textpass.TextPass` pads to before the table's widths are known.
        Read through the names' keys; the pass holds a row whose label is longer."""
        from sqlalchemy import exists

        d, p = deployments.c, probes.c
        with self.store.transaction("measuring the fleet table") as conn:
            widths = [conn.execute(select(func.max(func.length(certs.c.name)))).scalar(),
                      conn.execute(select(func.max(func.length(d.host)
                                                   + func.length(d.entry)))).scalar(),
                      conn.execute(select(func.max(func.length(p.url)))).scalar()]
            served = conn.execute(select(exists().where(
                func.coalesce(d.served_fp, "") != ""))).scalar()
        name, target, url = (int(w or 0) for w in widths)
        return max(name, target + 5, url + 2), bool(served)

    @staticmethod
    def _latest_runs(conn: Connection) -> list[RunInfo]:
        latest = select(func.max(runs.c.id).label("id")).group_by(runs.c.kind, runs.c.host).subquery()
        rows = conn.execute(select(runs).join(latest, runs.c.id == latest.c.id)).mappings().all()
        success = {(k, h): t for k, h, t in conn.execute(
            select(runs.c.kind, runs.c.host, func.max(runs.c.ts_end))
            .where(runs.c.exit_code == 0).group_by(runs.c.kind, runs.c.host)).all()}
        found = []
        for r in rows:
            try:
                counts = {str(k): int(v) for k, v in json.loads(r["counts"] or "{}").items()}
            except (ValueError, AttributeError, TypeError):
                counts = {}
            found.append(RunInfo(kind=r["kind"], host=r["host"], ts_start=int(r["ts_start"]),
                                 ts_end=int(r["ts_end"]), exit_code=int(r["exit_code"]),
                                 counts=counts, message=r["message"],
                                 last_success=success.get((r["kind"], r["host"]))))
        return sorted(found, key=lambda i: (i.kind, i.host))

    def previous_fingerprints(self, names: Iterable[str]) -> dict[str, str | None]:
        """The fingerprint of ``old_crt`` (the certificate before the current one) per name."""
        wanted = sorted(set(names))
        found: dict[str, str | None] = {}
        with self.store.transaction("reading previous certificates") as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for name, old in conn.execute(select(certs.c.name, certs.c.old_crt)
                                              .where(certs.c.name.in_(chunk))).all():
                    found[str(name)] = pem_fingerprint(old)
        return found

    def current_pems(self, names: Iterable[str]) -> dict[str, bytes]:
        """The ``crt`` of each name (to read its notBefore: when it was issued)."""
        wanted = sorted(set(names))
        found: dict[str, bytes] = {}
        with self.store.transaction("reading certificates") as conn:
            for start in range(0, len(wanted), 500):
                for name, crt in conn.execute(select(certs.c.name, certs.c.crt).where(
                        certs.c.name.in_(wanted[start:start + 500]))).all():
                    if crt:
                        found[str(name)] = bytes(crt)
        return found

    # -- remembered states, for notifying changes only -------------------------------------------

    def states(self) -> dict[str, str]:
        """The remembered state of every subject (subject -> state): all that
        :func:`lecentral.fleet.states.changes` compares (300,000 rows at 100,000 certificates
        × 3 hosts: their details are not read)."""
        with self.store.transaction("reading lecentral_fleet_states") as conn:
            _, rows = packed.rows(conn, select(fleet_states.c.subject, fleet_states.c.state))
            same: dict[str, str] = {}  # (one string per state, not one per row)
            return {str(subject): same.setdefault(str(state), str(state))
                    for subject, state in rows}

    def save_states(self, changed: Sequence[StateRow], gone: Sequence[str]) -> None:
        """Remember ``changed`` and forget ``gone``, in one transaction, in the order of their
        subjects: the changed rows written 1,000 to a statement with the database's upsert
        (an insert that updates the row of a subject already remembered, another run's
        meanwhile too: ON DUPLICATE KEY UPDATE on MariaDB and MySQL, ON CONFLICT on PostgreSQL
        and SQLite), which locks those rows only (a first look at 100,000 certificates × 3
        hosts remembers 300,000 subjects, a host gone silent changes every one deployed there:
        one statement each took minutes); on another database each row is updated, or else
        inserted, one by one."""
        rows = sorted(({"subject": row.subject, "name": row.name, "target": row.target[:800],
                        "state": row.state, "ts_since": row.ts_since,
                        "detail": row.detail[:4000]} for row in changed),
                      key=lambda r: str(r["subject"]))
        upsert = self._upsert() if rows else None
        with self.store.transaction("saving fleet states") as conn:
            if upsert is not None:
                for start in range(0, len(rows), 1000):
                    conn.execute(upsert, rows[start:start + 1000])
                rows = []
            self._save_states(conn, rows, sorted(gone))

    def _upsert(self) -> Any:
        """The upsert of a row of ``lecentral_fleet_states`` on this database, or None."""
        dialect = self.store.dialect
        values = ("name", "target", "state", "ts_since", "detail")
        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            on_key = mysql.insert(fleet_states)
            return on_key.on_duplicate_key_update({c: on_key.inserted[c] for c in values})
        if dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            on_conflict = (postgresql if dialect == "postgresql" else sqlite).insert(fleet_states)
            return on_conflict.on_conflict_do_update(
                index_elements=[fleet_states.c.subject],
                set_={c: on_conflict.excluded[c] for c in values})
        return None

    @staticmethod
    def _save_states(conn: Connection, rows: Sequence[dict[str, Any]],
                     gone: Sequence[str]) -> None:
        """Each of ``rows`` updated, or else inserted; ``gone`` deleted."""
        for row in rows:
            values = {k: v for k, v in row.items() if k != "subject"}
            if conn.execute(update(fleet_states).where(fleet_states.c.subject == row["subject"])
                            .values(**values)).rowcount == 0:
                conn.execute(insert(fleet_states).values(**row))
        for start in range(0, len(gone), 500):
            conn.execute(delete(fleet_states).where(
                fleet_states.c.subject.in_(list(gone)[start:start + 500])))
