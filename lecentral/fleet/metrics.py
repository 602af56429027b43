"""``lecentral metrics``: the fleet view as Prometheus metrics, for node_exporter's textfile collector.

The text exposition format is written here, line by line, straight into the (temporary) file:
at 100,000 certificates × 3 hosts that is ~700,000 samples, which prometheus_client's
exposition (it validates and escapes every label, ~4 µs a sample) and a document held whole
(~60 MB) could not do in the two seconds issue 16 asks for. The lines are what
``prometheus_client.generate_latest`` writes (its value formatting, its escaping, labels sorted
by name), checked by ``promtool check metrics`` in the tests. Names follow the Prometheus
conventions: ``lecentral_`` prefix, base units in the name (``_seconds``,
``_timestamp_seconds``), gauges only (every value here can go down).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lecentral.fleet.model import (
    CURRENT,
    DEAD_TIMER,
    DISABLED,
    NEVER_RUN,
    SEVERITY,
    CertFleet,
    FleetView,
)
from lecentral.fleet.states import _int

if TYPE_CHECKING:
    from lecentral.journal import JournalSurvey
    from lecentral.leftovers import Leftover

log = logging.getLogger(__name__)

TARGET_LABELS = ["name", "kind", "host", "target"]

Write = Callable[[str], Any]


def _go(value: Any) -> str:
    """``floatToGoString(value)``, without the float round trip for the integers written here
    (timestamps, counts: 400,000 of them at 100,000 certificates)."""
    if type(value) is int and 0 <= value < 10**15:
        digits = str(value)
        if len(digits) <= 6:
            return digits + ".0"
        mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
        return f"{mantissa}e+{len(digits) - 1:02d}"
    # anything else (a float, a negative count): prometheus_client's own formatting, imported
    # here only (its package imports its whole client: ~50 ms of every run)
    from prometheus_client import utils

    go: Callable[[Any], Any] = utils.floatToGoString  # (untyped there)
    return str(go(value))


def _esc(value: str) -> str:
    """A label value as the text format escapes it (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    """``{a="x",b="y"}``, sorted by label name (as prometheus_client writes them)."""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(pairs)) + "}"


def _family(write: Write, name: str, doc: str) -> None:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    write(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")


def _target_labels(name: str, kind: str, host: str, target: str) -> list[tuple[str, str]]:
    return [("name", name), ("kind", kind), ("host", host), ("target", target)]


def _shown(view: FleetView) -> tuple[list[CertFleet], list[CertFleet]]:
    """The certificates shown (one per name: two rows whose names differ only in case), and
    the managed ones among them (a disabled one: its state only, no series)."""
    shown: list[CertFleet] = []
    seen: set[str] = set()
    for cert in view.certs:
        key = cert.name.lower()
        if key in seen:
            log.warning("certs has two rows named %s (case differs): the metrics show the "
                        "first", cert.name)
            continue
        seen.add(key)
        shown.append(cert)
    return shown, [c for c in shown if c.enabled]


def write_exposition(write: Write, view: FleetView, leftovers: Sequence[Leftover],
                     lifetimes: Mapping[str, int] | None = None,
                     current: Iterable[tuple[str, str]] = (),
                     expiries: Mapping[str, tuple[int, int | None]] | None = None,
                     journals: JournalSurvey | None = None,
                     ari_failing: tuple[int, int | None] | None = None) -> None:
    """The Prometheus text format of ``view``, written piece by piece through ``write``.

    ``current``: (name, target) of the agent targets a split view only counted
    (:mod:`lecentral.fleet.current`), streamed from the database into
    ``lecentral_deployment_current``; ``expiries``: the crt's (notAfter, lifetime) of the
    certificates whose ``ts_expire`` is not their crt's notAfter (:func:`crt_expiries`);
    ``journals``: what the challenge journals of ``[renew] state_dir`` hold
    (:func:`lecentral.journal.survey`; None: not looked at, no journal family);
    ``ari_failing``: the certificates whose renewal-information requests have failed for a
    day (:meth:`lecentral.interfaces.Store.ari_failing`; None: ARI off, no family).
    """
    lifetimes = lifetimes or {}
    truths = expiries or {}
    go = _go
    shown, managed = _shown(view)
    issued = [c for c in managed if c.fingerprint
              and ((c.ts_expire and c.ts_expire > 1) or c.name in truths)]

    def per_cert(name: str, doc: str, values: Iterable[tuple[str, Any]]) -> None:
        _family(write, name, doc)
        prefix = name + '{name="'
        write("".join(f'{prefix}{_esc(n)}"}} {go(v)}\n' for n, v in values))

    def lifetime(c: CertFleet) -> int | None:
        return truths[c.name][1] if c.name in truths else lifetimes.get(c.name)

    docs = iter(PER_CERT_DOCS)
    per_cert(*next(docs), ((c.name, truths[c.name][0] if c.name in truths else c.ts_expire)
                           for c in issued))
    per_cert(*next(docs), ((c.name, life) for c in issued
                           if (life := lifetime(c)) is not None))
    per_cert(*next(docs), ((c.name, c.count_fail_update) for c in managed))
    per_cert(*next(docs), ((c.name, c.ts_last_update) for c in managed
                           if c.ts_last_update and c.ts_last_update > 1))
    per_cert(*next(docs), ((c.name, c.ts_expire) for c in issued
                           if c.name in truths and c.ts_expire and c.ts_expire > 1))

    def listed(shown_agents: set[tuple[str, str]]) -> None:
        chunk: list[str] = []
        for name, target in current:
            if (name, target) in shown_agents:
                continue
            chunk.append(f'lecentral_deployment_current{{name="{_esc(name)}",'
                         f'target="{_esc(target)}"}} 1.0\n')
            if len(chunk) >= 5000:
                write("".join(chunk))
                chunk.clear()
        write("".join(chunk))

    _write_the_rest(write, view, shown, managed, leftovers, listed, journals=journals,
                    ari_failing=ari_failing)


#: the per-certificate families (name, HELP), in the document's order
PER_CERT_DOCS = (
    ("lecentral_certificate_expiry_timestamp_seconds",
     ("notAfter of the database's certificate (ts_expire; its crt's own where ts_expire "
      "disagrees with it, see lecentral_certificate_ts_expire_timestamp_seconds, or is not "
      "set), Unix time.")),
    ("lecentral_certificate_lifetime_seconds",
     "notAfter - notBefore of the database's certificate (for alerts on a fraction of it)."),
    ("lecentral_certificate_failures",
     "Failed renewals in a row (count_fail_update; 0 after a success)."),
    ("lecentral_certificate_last_attempt_timestamp_seconds",
     "Last issuance or failed attempt (ts_last_update), Unix time."),
    ("lecentral_certificate_ts_expire_timestamp_seconds",
     ("ts_expire of a certificate where it disagrees with its crt's notAfter by an hour or "
      "more (a hand edit, an old bug; the Perl agents read it): the next lecentral renew "
      "replaces the certificate. Unix time.")),
)


def crt_expiry(ts_expire: int | None, not_after: Any, not_before: Any
               ) -> tuple[int, int | None] | None:
    """The crt's (notAfter, lifetime) where ``ts_expire`` disagrees with its notAfter as the
    last renew sweep read it (``not_after``, ``not_before``: the facts of this very crt) by
    :data:`~lecentral.store.rows.TS_EXPIRE_SLACK` or more (the renew job's rule), or does not
    tell it (None, 0, populate.pl's 1: no expiry sample otherwise); else None: ``ts_expire``
    stands."""
    from lecentral.store.rows import TS_EXPIRE_SLACK

    after = _int(not_after)
    if after is None or (ts_expire is not None and ts_expire > 1
                         and abs(ts_expire - after) < TS_EXPIRE_SLACK):
        return None
    before = _int(not_before)
    return after, (after - before if before is not None and after > before else None)


def crt_expiries(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int | None]]:
    """:func:`crt_expiry` of each row of a split snapshot (its ``facts_not_*`` columns: only
    those of its own crt are kept, lecentral.fleet.store.expiry_facts_columns), by name."""
    found: dict[str, tuple[int, int | None]] = {}
    for row in rows:
        if row.get("facts_not_after") is None:
            continue
        truth = crt_expiry(_int(row["ts_expire"]), row["facts_not_after"],
                           row["facts_not_before"])
        if truth is not None:
            found[str(row["name"])] = truth
    return found


#: the spool's file of the current targets SQL listed (after the per-certificate families')
SPOOLED_CURRENT = len(PER_CERT_DOCS)


def _write_the_rest(write: Write, view: FleetView, shown: Sequence[CertFleet],
                    managed: Sequence[CertFleet], leftovers: Sequence[Leftover],
                    listed: Callable[[set[tuple[str, str]]], None], taken: int = 0,
                    journals: JournalSurvey | None = None,
                    ari_failing: tuple[int, int | None] | None = None) -> None:
    """The families after the per-certificate ones; ``listed`` writes the current targets a
    split view counted (given the agent targets already written); ``taken``: current
    certificates not in ``view`` (:mod:`lecentral.fleet.spool`); ``journals``,
    ``ari_failing``: as :func:`write_exposition` takes them."""
    go = _go
    # Sparse families: a target that is current serves the database's certificate, whose
    # values are above already; only the others get a series (100,000 names × 3 hosts would
    # otherwise mean 1,500,000 mostly redundant samples, a slow scrape and a big textfile).
    _family(write, "lecentral_certificate_state",
            "1 for the fleet state of a certificate that is not current (its worst target's); "
            "absent when current or disabled.")
    for cert in shown:
        state = DISABLED if not cert.enabled else cert.state
        if cert.enabled and state in (CURRENT, DISABLED):
            continue
        write(f"lecentral_certificate_state{_labels([('name', cert.name), ('state', state)])} "
              "1.0\n")
    # one series per target of the whole fleet (300,000 for 100,000 names on 3 hosts): two
    # labels, not four (the target names its host: "host (entry)" or the probed URL); the
    # sparse families below carry kind and host for the targets that are not current
    _family(write, "lecentral_deployment_current",
            "1 if the target installed and serves the database's certificate, else 0.")
    others: list[tuple[list[tuple[str, str]], Any]] = []
    seen_targets: set[tuple[str, ...]] = set()
    for cert in managed:
        for t in cert.targets:
            pairs = _target_labels(cert.name, t.kind, t.host or "", t.target)
            ident = (cert.name, t.kind, t.host or "", t.target)
            if ident in seen_targets:
                continue
            seen_targets.add(ident)
            value = "1.0" if t.state == CURRENT else "0.0"
            write(f"lecentral_deployment_current"
                  f"{_labels([('name', cert.name), ('target', t.target)])} {value}\n")
            if t.state != CURRENT:
                others.append((pairs, t))
    listed({(k[0], k[3]) for k in seen_targets if k[1] == "agent"})
    _family(write, "lecentral_deployment_state",
            "1 for the state of a target that is not current (pending, stale, mismatch, "
            "unreachable, silent); absent when current.")
    for pairs, t in others:
        write(f"lecentral_deployment_state{_labels([*pairs, ('state', t.state)])} 1.0\n")
    _family(write, "lecentral_installed_expiry_timestamp_seconds",
            "notAfter of the certificate an agent reported installed, for targets that are not "
            "current.")
    for pairs, t in others:
        if t.installed is not None and t.installed.not_after:
            write(f"lecentral_installed_expiry_timestamp_seconds{_labels(pairs)} "
                  f"{go(t.installed.not_after)}\n")
    _family(write, "lecentral_served_expiry_timestamp_seconds",
            "notAfter of the certificate the service presented (agent or probe), for targets "
            "that are not current.")
    for pairs, t in others:
        if t.served is not None and t.served.not_after:
            write(f"lecentral_served_expiry_timestamp_seconds{_labels(pairs)} "
                  f"{go(t.served.not_after)}\n")
    _family(write, "lecentral_deployment_last_report_timestamp_seconds",
            "When the agent last reported (or the probe last looked at) a target that is not "
            "current.")
    for pairs, t in others:
        if t.ts:
            write(f"lecentral_deployment_last_report_timestamp_seconds{_labels(pairs)} "
                  f"{go(t.ts)}\n")
    _write_unclaimed(write, view)

    _family(write, "lecentral_certificates", "Certificates per fleet state.")
    tally = dict.fromkeys(SEVERITY, 0)
    tally[CURRENT] += taken
    for cert in view.certs:
        tally[cert.state] = tally.get(cert.state, 0) + 1
    for s in SEVERITY:
        write(f'lecentral_certificates{{state="{s}"}} {go(tally[s])}\n')

    run_families: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
        ("lecentral_run_last_success_timestamp_seconds",
         "End of the latest run with exit code 0 (renew, agent, probe).",
         lambda r: r.last_success),
        ("lecentral_run_last_timestamp_seconds", "End of the latest run, whatever its result.",
         lambda r: r.ts_end),
        ("lecentral_run_duration_seconds", "Duration of the latest run.",
         lambda r: max(0, r.ts_end - r.ts_start)),
        ("lecentral_run_exit_code", "Exit code of the latest run (0: success).",
         lambda r: r.exit_code),
    )
    for name, doc, value_of in run_families:
        _family(write, name, doc)
        for run in view.runs:
            value = value_of(run)
            if value is not None:
                write(f"{name}{_labels([('kind', run.kind), ('host', run.host)])} "
                      f"{go(value)}\n")

    _family(write, "lecentral_renew_timer_ok",
            "1 if a lecentral renew run ended within [fleet] renew_max_age, 0 if not; absent "
            "before the first run (see lecentral_renew_never_run).")
    if view.renew_state != NEVER_RUN:
        write(f"lecentral_renew_timer_ok {go(0 if view.renew_state == DEAD_TIMER else 1)}\n")
    _family(write, "lecentral_renew_never_run",
            "1 while no lecentral renew run was ever recorded (a new installation: lecentral "
            "check says WARNING), else 0.")
    write(f"lecentral_renew_never_run {go(1 if view.renew_state == NEVER_RUN else 0)}\n")
    _family(write, "lecentral_challenge_leftovers",
            "Challenge records (TXT, webroot files) left behind by failed cleanups.")
    write(f"lecentral_challenge_leftovers {go(len(leftovers))}\n")
    if journals is not None:
        _write_journals(write, journals)
    if ari_failing is not None:
        _family(write, "lecentral_ari_failing_certificates",
                "Enabled certificates whose renewal-information (ARI) requests have failed for "
                "more than a day: their renewal time decides, a renewal the CA moves earlier "
                "is not seen (absent with [renew] ari off).")
        write(f"lecentral_ari_failing_certificates {go(ari_failing[0])}\n")
    _family(write, "lecentral_metrics_generated_timestamp_seconds",
            "When lecentral metrics computed these values.")
    write(f"lecentral_metrics_generated_timestamp_seconds {go(view.now)}\n")


def _write_journals(write: Write, journals: JournalSurvey) -> None:
    """What ``lecentral check`` says of the challenge journals (``journal-left``,
    ``journal-refused``, ``journal-unreadable``): the records a killed renew process left
    noted, the journals the renew job refuses, and whether they could be read at all (run as
    another user than the renew job's, they cannot: then no record count, not a 0)."""
    go = _go
    _family(write, "lecentral_challenge_journals_readable",
            "1 if lecentral metrics could read the challenge journals of [renew] state_dir, 0 if "
            "not (run as another user than the renew job's: lecentral_challenge_journal_records "
            "is then absent).")
    write(f"lecentral_challenge_journals_readable {go(0 if journals.unreadable else 1)}\n")
    if journals.unreadable is None:
        _family(write, "lecentral_challenge_journal_records",
                "Challenge records a renew process killed mid-pass added and did not remove, "
                "noted in its journal (the next lecentral renew removes them).")
        write(f"lecentral_challenge_journal_records {go(journals.records)}\n")
    _family(write, "lecentral_challenge_journals_refused",
            "Challenge journals the renew job does not trust: it removes nothing they name and "
            "alerts at every run (lecentral check says why).")
    write(f"lecentral_challenge_journals_refused {go(len(journals.refused))}\n")


def _write_unclaimed(write: Write, view: FleetView) -> None:
    """The reports filed under a name no row of ``certs`` has (``lecentral check`` warns
    ``unclaimed``): a removed certificate a host still holds, which nothing renews. A series
    per report, with the labels of the deployment families, and their count (always written:
    0 is "none", not "unknown")."""
    go = _go
    reports = []
    seen: set[tuple[str, str, str, str]] = set()
    for u in view.unclaimed_reports:
        ident = (u.name, u.kind, u.host, u.target)
        if ident not in seen:  # (one series per label set, whatever the rows hold)
            seen.add(ident)
            reports.append((_labels(_target_labels(*ident)), u.ts))
    _family(write, "lecentral_unclaimed_deployment",
            "1 for each target (a host's entry, a probed endpoint) reporting a certificate under "
            "a name no row of certs has: removed while still installed, nothing renews it.")
    for labels, _ in reports:
        write(f"lecentral_unclaimed_deployment{labels} 1.0\n")
    _family(write, "lecentral_unclaimed_last_report_timestamp_seconds",
            "When the agent last reported (or the probe last looked at) an unclaimed target.")
    for labels, ts in reports:
        if ts:
            write(f"lecentral_unclaimed_last_report_timestamp_seconds{labels} {go(ts)}\n")
    _family(write, "lecentral_unclaimed_deployments",
            "Targets reporting a certificate under a name no row of certs has (the series of "
            "lecentral_unclaimed_deployment).")
    write(f"lecentral_unclaimed_deployments {go(len(reports))}\n")


def exposition(view: FleetView, leftovers: Sequence[Leftover],
               lifetimes: Mapping[str, int] | None = None,
               current: Iterable[tuple[str, str]] = (),
               journals: JournalSurvey | None = None,
               ari_failing: tuple[int, int | None] | None = None) -> bytes:
    """The Prometheus text format of ``view``, whole (for stdout and the tests)."""
    out = io.StringIO()
    write_exposition(out.write, view, leftovers, lifetimes, current, journals=journals,
                     ari_failing=ari_failing)
    return out.getvalue().encode("utf-8")


def write_textfile(path: str, fill: Callable[[Write], None]) -> None:
    """Replace ``path`` atomically (mode 0644) with what ``fill`` writes, streamed into a temp
    file beside it: node_exporter never reads a half-written file, and the document is never
    held whole. On any error the temp file goes and the previous file stays."""
    from lecentral.errors import LecentralError
    from lecentral.files_io import fsync_dir, temp_name, unlink_quietly

    path = os.path.abspath(path)
    temp = temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
            fill(out.write)
            out.flush()
            os.fchown(fd, os.geteuid(), os.getegid())
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        os.replace(temp, path)
    except OSError as exc:
        unlink_quietly(temp)
        raise LecentralError(f"cannot write the metrics to {path}: {exc.strerror or exc}; the "
                             "previous file (if any) is unchanged") from None
    except BaseException:
        unlink_quietly(temp)
        raise
    fsync_dir(os.path.dirname(path))
