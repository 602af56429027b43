"""Judge the fleet: compare what agents and probes saw with the ``certs`` table.

A target (a host's entry, or a probed endpoint) is:

- ``current``: it serves, and has installed, the database's certificate;
- ``pending``: it still has the previous (or an older) certificate for the same name and key,
  and the database's certificate is younger than ``[fleet] stale_after``;
- ``stale``: the same, for longer than ``stale_after``;
- ``mismatch``: it serves a certificate for another key or without the name;
- ``unreachable``: the agent or the probe could not read a certificate there;
- ``silent``: its host's agent has not reported within ``[fleet] agent_max_age``.

A certificate with no target at all is ``never-reported``; a disabled one is not judged. The renew
timer is ``dead-timer`` when no renew run was recorded within ``[fleet] renew_max_age``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lecentral.fleet.model import (
    ALERTING,
    CURRENT,
    CURRENT_DETAIL,
    DEAD_TIMER,
    DISABLED,
    MISMATCH,
    NEVER_REPORTED,
    NEVER_RUN,
    NOT_ISSUED,
    PENDING,
    RUN_ERROR,
    RUN_ERROR_EXITS,
    SEVERITY,
    SILENT,
    STALE,
    TIMER_OK,
    UNREACHABLE,
    CertFleet,
    FleetSettings,
    FleetView,
    Seen,
    Target,
    Unclaimed,
    worst,
)
from lecentral.fleet.store import FleetStore, Snapshot, StateRow, json_list, subject_key

if TYPE_CHECKING:
    from lecentral.records import Notification

log = logging.getLogger(__name__)

#: the subject of the renew timer's state (no certificate name)
TIMER_NAME = "-"
TIMER_TARGET = "renew-timer"


def ago(seconds: int) -> str:
    """A duration in the largest unit that fits (``3d``, ``5h``, ``12m``, ``40s``)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Judge:
    """Compares one certificate's observations with its row; looks up old_crt only when needed."""

    def __init__(self, store: FleetStore | None, snapshot: Snapshot, settings: FleetSettings,
                 now: int) -> None:
        self.store = store
        self.settings = settings
        self.now = now
        self.rows = {str(c["name"]).lower().rstrip("."): c for c in snapshot.certs}
        self._previous: dict[str, str | None] | None = None
        self._issued: dict[str, int | None] = {}
        self._need_previous: set[str] = set()
        #: names whose age may be asked (:meth:`age_state`) and is not in their row (filled by
        #: :func:`compute`); their certificates are read in one go when the first is needed
        self._need_issued: set[str] = set()
        self._pems: dict[str, bytes | None] | None = None

    def previous(self, name: str) -> str | None:
        if self._previous is None:
            self._previous = {}
            if self.store is not None and self._need_previous:
                raw = self.store.previous_fingerprints(
                    [str(self.rows[n]["name"]) for n in self._need_previous if n in self.rows])
                self._previous = {k.lower().rstrip("."): v for k, v in raw.items()}
        return self._previous.get(name)

    def issued_at(self, name: str) -> int | None:
        """Since when the database has had its certificate: ``ts_last_update`` when no attempt
        failed since (save_issued sets it), else the certificate's notBefore (CAs backdate it,
        Let's Encrypt by an hour: only the fallback)."""
        if name not in self._issued:
            self._issued[name] = None
            row = self.rows.get(name)
            stored = _stored_issue(row) if row is not None else None
            if stored is not None:
                self._issued[name] = stored
            elif self.store is not None and row is not None:
                from lecentral.certificates import Certificate
                from lecentral.errors import CsrError

                pem = self._pem(name)
                try:
                    self._issued[name] = Certificate.load(pem).not_before if pem else None
                except CsrError:
                    self._issued[name] = None
        return self._issued[name]

    def _pem(self, name: str) -> bytes | None:
        """The stored certificate of ``name``: on the first call, those of every name in
        :attr:`_need_issued` whose issue time is not stored, in one read (a thousand failing
        certificates are not a thousand transactions); a name not foreseen there, alone."""
        assert self.store is not None
        if self._pems is None:
            wanted = self._need_issued | {name}
            raw = self.store.current_pems(str(self.rows[n]["name"]) for n in wanted)
            found = {k.lower().rstrip("."): v for k, v in raw.items()}
            self._pems = {n: found.get(n) for n in wanted}
        if name not in self._pems:
            stored_name = str(self.rows[name]["name"])
            return self.store.current_pems([stored_name]).get(stored_name)
        return self._pems.pop(name)  # (asked once: issued_at keeps the answer)

    def seen_state(self, name: str, fp: str | None, not_after: int | None,
                   names_json: str | None, key_md5: str | None) -> tuple[str, str]:
        """The state of one certificate seen somewhere, and why (``names_json``: its DNS names
        as stored, a JSON list; None when unknown)."""
        row = self.rows[name]
        if fp is not None and fp == row["fingerprint"]:
            return CURRENT, CURRENT_DETAIL
        names = json_list(names_json) if names_json else None
        if key_md5 and row["md5_modulus"] and key_md5.lower() != str(row["md5_modulus"]).lower():
            return MISMATCH, f"a certificate for another key ({_short(fp)})"
        if names is not None and not _covers(names, name):
            shown = ", ".join(names[:3]) or "no name"
            return MISMATCH, f"a certificate for {shown}, not {name} ({_short(fp)})"
        db_expiry = _int(row["ts_expire"])
        older = fp is not None and fp == self.previous(name)
        if not older and not_after is not None and db_expiry and not_after < db_expiry:
            older = True
        if not older:
            return MISMATCH, f"a certificate the database does not hold ({_short(fp)})"
        return self.age_state(name, f"the previous certificate ({_short(fp)})")

    def age_state(self, name: str, what: str) -> tuple[str, str]:
        """``pending`` or ``stale``: a host has ``what`` instead of the database's certificate,
        which has been there for how long?"""
        issued = self.issued_at(name)
        age = self.now - issued if issued else None
        if age is not None and age < self.settings.stale_after:
            return PENDING, f"{what}; the new one is {ago(age)} old"
        since = f" for {ago(age)}" if age is not None else ""
        return STALE, f"{what}; the database has had a newer one{since}"


def _stored_issue(row: Any) -> int | None:
    """When the row's certificate was issued, where the row says it: ``ts_last_update`` when
    no attempt failed since (save_issued sets it); else None (its notBefore tells)."""
    stored = _int(row["ts_last_update"])
    return stored if stored and not _int(row["count_fail_update"]) else None


def _short(fp: str | None) -> str:
    return f"sha256 {fp[:16]}" if fp else "none"


def _covers(names: list[str], name: str) -> bool:
    name = name.lower().rstrip(".")
    for n in names:
        n = n.lower().rstrip(".")
        if n == name or (n.startswith("*.") and name.split(".", 1)[-1] == n[2:] and "." in name):
            return True
    return False


def probe_url_host(url: str, host: str) -> str:
    """``url`` as the central host must dial it: a loopback host (an agent's own view of its
    service) replaced by the agent's host name."""
    parts = urlsplit(url)
    name = parts.hostname or ""
    port = parts.port  # ValueError for a port out of range: the caller's URL is bad
    loopback = name == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if not loopback:
        return url
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{port}" if port else shown
    return parts._replace(netloc=netloc).geturl()


def compute(snapshot: Snapshot, settings: FleetSettings, now: int,
            store: FleetStore | None = None) -> FleetView:
    """The :class:`FleetView` of ``snapshot`` at ``now``."""
    judge = _Judge(store, snapshot, settings, now)
    agent_runs = {r.host: r.ts_end for r in snapshot.runs if r.kind == "agent"}
    by_name: dict[str, list[Any]] = defaultdict(list)
    probes_by_name: dict[str, list[Any]] = defaultdict(list)
    for dep in snapshot.deployments:
        by_name[dep[0].lower()].append(dep)
    for probe in snapshot.probes:
        probes_by_name[str(probe.name).lower()].append(probe)
    # names whose previous certificate may be needed: anything seen that is not current;
    # whose issue time may be (age_state): an enabled row with a certificate, whose issue time
    # the row does not tell, judged past the fast path by a target not silent or by a probe
    # (rows in FleetStore.snapshot's column order: 3 installed_fp, 5 served_fp)
    # (only names with rows: 100,000 certificates, most of them without any in a split view)
    for name in {*by_name, *probes_by_name}:
        row = judge.rows.get(name)
        if row is None:
            continue
        current = row["fingerprint"]
        deps, probes = by_name.get(name, ()), probes_by_name.get(name, ())
        if (any((d[3] and d[3] != current) or (d[5] and d[5] != current) for d in deps)
                or any(p.fingerprint and p.fingerprint != current for p in probes)):
            judge._need_previous.add(name)
        if (current and str(row["enable"] or "").upper() == "Y" and _stored_issue(row) is None
                and (any(not _plainly_current(d, current)
                         and not _silent(judge, d, agent_runs) for d in deps)
                     or any(p.fingerprint is not None and p.fingerprint != current
                            for p in probes))):
            judge._need_issued.add(name)

    counts = snapshot.split.counts if snapshot.split is not None else {}
    result = []
    no_rows: list[Any] = []
    for name, row in judge.rows.items():
        enabled = str(row["enable"] or "").upper() == "Y"
        targets = [_deployment(judge, name, dep, agent_runs, enabled)
                   for dep in by_name.get(name, no_rows)]
        if probes_by_name:
            targets += [_probe(judge, name, probe, enabled)
                        for probe in probes_by_name.get(name, no_rows)]
        current = counts.get(name, 0)  # verified: an enabled row with this fingerprint
        if not enabled:
            state = DISABLED
        elif not row["fingerprint"]:
            state = NOT_ISSUED
        elif not targets and not current:
            state = NEVER_REPORTED
        elif not targets:
            state = CURRENT
        else:
            state = worst([t.state for t in targets] + ([CURRENT] if current else []))
        expire, update, fails = row["ts_expire"], row["ts_last_update"], row["count_fail_update"]
        result.append(CertFleet(
            name=str(row["name"]), enabled=enabled, fingerprint=row["fingerprint"],
            ts_expire=expire if type(expire) is int and expire else _int(expire),
            ts_last_update=update if type(update) is int and update else _int(update),
            count_fail_update=_count(fails), targets=targets, state=state,
            current_targets=current))
    renew_state, renew_detail = _timer(snapshot, settings, now)
    reports = sorted(
        [Unclaimed(str(d[0]), "agent", str(d[1]), f"{d[1]} ({d[2]})", d[14], str(d[2]))
         for name, deps in by_name.items() if name not in judge.rows for d in deps]
        + [Unclaimed(str(p.name), "probe", urlsplit(str(p.url)).hostname or "", str(p.url),
                     int(p.ts))
           for name, probes in probes_by_name.items() if name not in judge.rows for p in probes],
        key=lambda u: (u.name, u.target, -1 if u.ts is None else u.ts, u.kind, u.host))
    unclaimed = [(u.name, u.target, u.ts) for u in reports]
    return FleetView(now=now, settings=settings, certs=result, renew_state=renew_state,
                     renew_detail=renew_detail, runs=snapshot.runs,
                     split=snapshot.split is not None, plain_ok=snapshot.plain_ok,
                     unclaimed=unclaimed, unclaimed_reports=reports,
                     counted=(snapshot.split.listed if snapshot.split is not None
                              and snapshot.split.listing else None))


def _count(value: Any) -> int:
    """``count_fail_update`` as the views show it: anything not an integer (SQLite keeps what
    it is given; check tells the row's problem) counts as 0, never a crash of every view."""
    return _int(value) or 0


def _int(value: Any) -> int | None:
    """A timestamp column as the database holds it; anything not an integer (SQLite keeps
    what it is given) is no timestamp: the row's problem is told by check and list, not here."""
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def _deployment(judge: _Judge, name: str, dep: Any, agent_runs: Mapping[str, int],
                enabled: bool) -> Target:
    # one unpacking of the row (in FleetStore.snapshot's column order), not 20 attribute lookups
    (_, host, entry, installed_fp, installed_not_after, served_fp, served_not_after, served_names,
     served_key_md5, served_url, served_error, ts_served, result, message, ts, db_user) = dep
    installed = Seen(installed_fp, installed_not_after, None, None, ts)
    served = None
    if served_fp or served_error:
        served = Seen(served_fp, served_not_after, served_url, served_error, ts_served)
    last = max(ts, agent_runs.get(host, 0))
    target = f"{host} ({entry})"

    def made(state: str, detail: str) -> Target:
        return Target("agent", target, host, installed, served, ts, state, detail, result, db_user)

    if not enabled:
        return made(DISABLED, "the certificate is disabled")
    if _silent(judge, dep, agent_runs):
        return made(SILENT, f"the agent on {host} last reported {ago(judge.now - last)} ago "
                    f"([fleet] agent_max_age {ago(judge.settings.agent_max_age)})")
    current = judge.rows[name]["fingerprint"]
    if current is not None and _plainly_current(dep, current):  # the common case, judged fast
        return made(CURRENT, CURRENT_DETAIL)
    if current is None:
        return made(PENDING, "the database has no certificate yet")
    states: list[tuple[str, str]] = []
    if installed_fp is None:
        states.append(judge.age_state(name, f"nothing installed ({result}: {message})"))
    else:
        state, why = judge.seen_state(name, installed_fp, installed_not_after, None, None)
        states.append((state, f"installed: {why}"))
    if served is not None:
        if served.fingerprint is None:
            states.append((UNREACHABLE, f"{served.url}: {served.error}"))
        else:
            state, why = judge.seen_state(name, served.fingerprint, served.not_after,
                                          served_names, served_key_md5)
            if state == CURRENT or served.fingerprint != installed_fp or state != states[0][0]:
                states.append((state, f"served at {served.url}: {why}"))
    state = worst([s for s, _ in states])
    detail = "; ".join(why for s, why in states if s == state)
    if state in (STALE, PENDING) and result not in ("installed", "up-to-date"):
        detail += f" (the agent's last run: {result}: {message})"  # why it did not install
    return made(state, detail)


def _silent(judge: _Judge, dep: Any, agent_runs: Mapping[str, int]) -> bool:
    """True if the deployment's agent has not reported for longer than ``agent_max_age``."""
    return bool(judge.now - max(dep[14], agent_runs.get(dep[1], 0))
                > judge.settings.agent_max_age)


def _plainly_current(dep: Any, current: str) -> bool:
    """True if the deployment has the database's certificate ``current`` installed, and served
    if anything was served, with no error: current without more ado."""
    return bool(dep[3] == current and not dep[10] and dep[5] in (None, current))


def _probe(judge: _Judge, name: str, probe: Any, enabled: bool) -> Target:
    url = str(probe.url)
    seen = Seen(probe.fingerprint, probe.not_after, url, probe.error, int(probe.ts))
    common = {"kind": "probe", "target": url, "host": urlsplit(url).hostname, "installed": None,
              "served": seen, "ts": int(probe.ts), "db_user": probe.db_user}
    if not enabled:
        return Target(state=DISABLED, detail="the certificate is disabled", **common)
    if seen.fingerprint is None:
        return Target(state=UNREACHABLE, detail=f"probe: {seen.error}", **common)
    state, why = judge.seen_state(name, seen.fingerprint, seen.not_after, probe.names,
                                  probe.key_md5)
    return Target(state=state, detail=f"probe: {why}", **common)


def _timer(snapshot: Snapshot, settings: FleetSettings, now: int) -> tuple[str, str]:
    renews = [r for r in snapshot.runs if r.kind == "renew"]
    if not renews:
        return NEVER_RUN, "no lecentral renew run was ever recorded"
    latest = max(renews, key=lambda r: r.ts_end)
    age = now - latest.ts_end
    if age > settings.renew_max_age:
        return DEAD_TIMER, (f"the last lecentral renew run ended {ago(age)} ago ([fleet] "
                            f"renew_max_age {ago(settings.renew_max_age)}): is its timer running?")
    if latest.exit_code in RUN_ERROR_EXITS:
        problem = "a configuration problem" if latest.exit_code == 2 else "a plugin problem"
        return RUN_ERROR, (f"the last renew run ({latest.host}, {ago(age)} ago) exited "
                           f"{latest.exit_code} on {problem} and did not try the "
                           f"certificates it stopped: {latest.message}")
    return TIMER_OK, f"the last renew run ended {ago(age)} ago"


# --- state changes -----------------------------------------------------------------------------------


def counted_in_full(view: FleetView) -> bool:
    """True if every target of ``view`` is there to compare with its remembered state: a full
    view, or a split view whose counted current targets are all listed (:attr:`FleetView.
    counted`)."""
    if not view.split:
        return True
    return view.counted is not None and (sum(len(t) for t in view.counted.values())
                                         == sum(c.current_targets for c in view.certs))


def changes(view: FleetView, before: Mapping[str, str]
            ) -> tuple[list[tuple[str | None, StateRow]], list[str]]:
    """(the old state, the new row) for every subject whose state changed since ``before``
    (subject -> state: :meth:`FleetStore.states`), and the subjects gone.

    A subject seen for the first time is a change from nothing (None): :func:`notification_for`
    tells only those that are alerts. A split view must list the targets SQL only counted
    (``load_view(split=True, listing=True)``): each is current, as the full view judges it, with
    its detail. Two targets of one subject (one host and entry reported under two spellings of
    the name) are the worse of the two, in whatever order they were read.
    """
    if not counted_in_full(view):  # its counted targets would look gone
        raise ValueError("state changes need the full fleet view (load_view(split=False)) or "
                         "a split view with its current targets listed")
    counted = view.counted or {}
    # subject -> (name, target, state, detail); a row made only for a change (300,000 targets)
    now_states: dict[str, tuple[str, str, str, str]] = {}

    def seen(key: str, found: tuple[str, str, str, str]) -> None:
        known = now_states.get(key)
        if known is None or _rank(found[2]) < _rank(known[2]):
            now_states[key] = found

    for cert in view.certs:
        lower = cert.name.lower()
        for t in cert.targets:
            seen(subject_key(lower, t.kind, t.target), (cert.name, t.target, t.state, t.detail))
        if cert.current_targets:
            for target in counted.get(cert.name, ()):
                seen(subject_key(lower, "agent", target),
                     (cert.name, target, CURRENT, CURRENT_DETAIL))
    if view.renew_state != NEVER_RUN:
        now_states[subject_key(TIMER_NAME, TIMER_TARGET)] = (TIMER_NAME, TIMER_TARGET,
                                                             view.renew_state, view.renew_detail)
    changed: list[tuple[str | None, StateRow]] = []
    for key, (name, target, state, detail) in now_states.items():
        old = before.get(key)
        if old != state:
            changed.append((old, StateRow(key, name, target, state, view.now, detail)))
    gone = [k for k in before if k not in now_states]
    return changed, gone


def _rank(state: str) -> int:
    """Where ``state`` stands in :data:`SEVERITY` (worst first); a state it does not know
    first."""
    return SEVERITY.index(state) if state in SEVERITY else -1


def _word(state: str) -> str:
    """A state as the subject of an alert says it."""
    return {MISMATCH: "serving a mismatching certificate", SILENT: "silent (its agent stopped "
            "reporting)", DEAD_TIMER: "dead (no renew run)"}.get(state, state)


def notification_for(old: str | None, new: StateRow) -> Notification | None:
    """The alert for one change (``old``: the state before, None for a first sighting), or None
    when nothing worth telling happened."""
    from lecentral.records import Notification

    bad = (*ALERTING, DEAD_TIMER)  # not RUN_ERROR: the renew run alerted about its problem itself
    was_bad = old is not None and old in bad
    if new.state not in bad and not was_bad:
        return None
    what = "the central renew timer" if new.target == TIMER_TARGET else f"{new.name} on {new.target}"
    if new.state in bad:
        severity = "error" if new.state in (MISMATCH, DEAD_TIMER, SILENT) else "warning"
        before = f" (was {old})" if old is not None else ""
        return Notification(severity, f"fleet: {what} is {_word(new.state)}",
                            f"{what} is now {new.state}{before}:\n{new.detail}\n",
                            None if new.name == TIMER_NAME else new.name)
    assert old is not None
    return Notification("info", f"fleet: {what} is {new.state} again",
                        f"{what} was {old} and is now {new.state}:\n{new.detail}\n",
                        None if new.name == TIMER_NAME else new.name)
