"""``lecentral check``: the fleet as one monitoring-plugin result (Nagios, Icinga, NRPE).

A monitoring plugin prints one line ``LECENTRAL <STATE> - <summary> | <perfdata>`` and exits
0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN; the lines after the first are its long output, here one
per problem. The severity of each kind of problem is the table :data:`SEVERITY` (docs/monitoring.md
shows it); the overall state is the worst problem's.

Expiry thresholds are in days. Without ``--warning``/``--critical`` they are a fraction of each
certificate's own lifetime (:data:`WARNING_FRACTION`, :data:`CRITICAL_FRACTION`), so one check
suits 90-, 45- and 6-day certificates alike. The lifetime is read without parsing 10,000
certificates: as long as ``count_fail_update`` is 0, ``ts_last_update`` is when the certificate
was saved (``save_issued`` sets both), so ``ts_expire - ts_last_update`` is its lifetime; only the
other rows' ``crt`` is parsed.

Everything here only reads: the :class:`~lecentral.fleet.model.FleetView`, a small query on
``certs`` for row problems, ``lecentral_leftovers``, and the challenge journals renew processes
left in ``[renew] state_dir`` (:func:`lecentral.journal.survey`: never modified).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lecentral.fleet import MAX_LINES
from lecentral.fleet.model import (
    DEAD_TIMER,
    MISMATCH,
    NEVER_RUN,
    RUN_ERROR,
    SILENT,
    STALE,
    UNREACHABLE,
    CertFleet,
    FleetView,
)

if TYPE_CHECKING:
    from lecentral.fleet.current import Limit
    from lecentral.fleet.store import FleetStore
    from lecentral.journal import JournalSurvey
    from lecentral.leftovers import Leftover

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

DAY = 86400
#: default thresholds: warn when less than this fraction of a certificate's lifetime is left
#: (22.5 days of a 90-day certificate, 11 of a 45-day one, 36 hours of a 6-day one)
WARNING_FRACTION = 0.25
#: ... and critical below this one (9 days, 4.5 days, 14 hours)
CRITICAL_FRACTION = 0.10
#: the lifetime assumed when neither the row nor its certificate tells it (Let's Encrypt's)
DEFAULT_LIFETIME = 90 * DAY
#: count_fail_update from which a certificate is a problem (the seed: "it should never grow above 2")
FAILURES_WARNING = 2
#: per-certificate perfdata only up to this many certificates (or for the NAMEs given): 10,000
#: labels would make a first line no monitoring system keeps
PERFDATA_PER_NAME_MAX = 20

# kinds of problems, and their severity (docs/monitoring.md: the severity table)
EXPIRED = "expired"
EXPIRING_CRITICAL = "expiring-critical"
EXPIRING_WARNING = "expiring-warning"
FAILING = "failing"  # count_fail_update >= 2
GIVEN_UP = "given-up"  # count_fail_update beyond [renew] max_failures: no more retries
NO_CERTIFICATE = "no-certificate"  # enabled, tried, still no certificate
ROW_PROBLEM = "row-problem"  # a column the renew job or the agents will refuse or misread
LEFTOVER = "leftover"
#: a host reports (or a probe sees) a certificate under a name no row of certs has
UNCLAIMED = "unclaimed"
#: a renew process that is gone (killed mid-pass) left challenge records noted in its journal
JOURNAL_LEFT = "journal-left"
#: a journal (or the journal directory) the renew job does not trust: nothing it names is removed
JOURNAL_REFUSED = "journal-refused"
#: this user cannot read the journals (the directory is the renew job's user's, mode 700)
JOURNAL_UNREADABLE = "journal-unreadable"
#: renewal-information (ARI) requests have failed for a day or more (lecentral/renew/ari.py)
ARI_FAILING = "ari-failing"
ENTRY_ERROR = "entry-error"  # lecentral-install check: an entry the agent cannot handle
NOT_INSTALLED = "not-installed"  # lecentral-install check: nothing installed yet
SEVERITY: dict[str, int] = {
    EXPIRED: CRITICAL,
    EXPIRING_CRITICAL: CRITICAL,
    GIVEN_UP: CRITICAL,
    MISMATCH: CRITICAL,
    DEAD_TIMER: CRITICAL,
    RUN_ERROR: CRITICAL,
    JOURNAL_REFUSED: CRITICAL,
    EXPIRING_WARNING: WARNING,
    FAILING: WARNING,
    NO_CERTIFICATE: WARNING,
    ROW_PROBLEM: WARNING,
    STALE: WARNING,
    SILENT: WARNING,
    UNREACHABLE: WARNING,
    NEVER_RUN: WARNING,
    LEFTOVER: WARNING,
    UNCLAIMED: WARNING,
    JOURNAL_LEFT: WARNING,
    JOURNAL_UNREADABLE: WARNING,
    ARI_FAILING: WARNING,
    ENTRY_ERROR: WARNING,
    NOT_INSTALLED: WARNING,
}


@dataclass(frozen=True)
class Thresholds:
    """Expiry thresholds in days; ``None``: the fraction of each certificate's lifetime."""

    warning_days: float | None = None
    critical_days: float | None = None

    def seconds(self, lifetime: int) -> tuple[float, float]:
        """(warning, critical) in seconds left, for a certificate of ``lifetime`` seconds."""
        warning = (self.warning_days * DAY if self.warning_days is not None
                   else lifetime * WARNING_FRACTION)
        critical = (self.critical_days * DAY if self.critical_days is not None
                    else lifetime * CRITICAL_FRACTION)
        return warning, critical

    def limits(self) -> list[Limit]:
        """The thresholds as SQL applies them (:func:`lecentral.fleet.current.plainly_ok`)."""
        from lecentral.fleet.current import Limit

        return [Limit(self.warning_days, WARNING_FRACTION),
                Limit(self.critical_days, CRITICAL_FRACTION)]

    def problem(self) -> str | None:
        """Why these thresholds make no sense, or None."""
        for label, value in (("--warning", self.warning_days), ("--critical", self.critical_days)):
            if value is not None and (not math.isfinite(value) or value < 0):
                return f"{label} {value} is not a number of days >= 0"
        if (self.warning_days is not None and self.critical_days is not None
                and self.critical_days > self.warning_days):
            return (f"--critical {self.critical_days} is more days than --warning "
                    f"{self.warning_days}: critical must be the smaller number of days left")
        return None


@dataclass(frozen=True)
class Problem:
    kind: str
    name: str | None  # the certificate, None for the renew timer
    text: str

    @property
    def severity(self) -> int:
        return SEVERITY[self.kind]


@dataclass
class CheckResult:
    """What a monitoring plugin prints and returns."""

    prefix: str  # LECENTRAL, LECENTRAL-INSTALL
    status: int
    summary: str
    perfdata: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def lines(self, max_lines: int = MAX_LINES) -> list[str]:
        """The first line and one line per problem, worst first (at most ``max_lines``, 0: all)."""
        first = f"{self.prefix} {STATE_WORDS[self.status]} - {clean(self.summary)}"
        if self.perfdata:
            first += " | " + " ".join(self.perfdata)
        ordered = sorted(self.problems, key=lambda p: (-_rank(p.severity), p.name or "", p.text))
        shown = ordered if max_lines <= 0 else ordered[:max_lines]
        out = [first] + [f"{STATE_WORDS[p.severity]}: {clean(p.text)}" for p in shown]
        if len(shown) < len(ordered):
            out.append(f"... and {len(ordered) - len(shown)} more problem(s) (--max-lines 0 "
                       "shows all; lecentral fleet for the details)")
        return out


def _rank(severity: int) -> int:
    """CRITICAL before UNKNOWN before WARNING before OK."""
    return {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}[severity]


def worst_status(severities: Iterable[int]) -> int:
    """The overall state: the most severe (CRITICAL > UNKNOWN > WARNING > OK)."""
    return max(severities, key=_rank, default=OK)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str) -> str:
    """One line of plugin output from text that may come from the database: no control
    characters (a name with a newline would forge a line) and no ``|`` (which starts perfdata)."""
    return _CONTROL.sub(" ", text).replace("|", "/")


_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_.:*-]+")


def perf(label: str, value: float, uom: str = "", warn: float | None = None,
         crit: float | None = None, minimum: float | None = None,
         maximum: float | None = None) -> str:
    """One perfdata item, ``'label'=value[UOM];[warn];[crit];[min];[max]`` (monitoring-plugins
    guidelines); the label is quoted unless it is plain, a quote doubled, ``=`` kept (quoted)."""
    label = _CONTROL.sub(" ", label).replace("|", "/")
    if not _PLAIN_LABEL.fullmatch(label):
        label = "'" + label.replace("'", "''") + "'"
    fields = [_num(warn), _num(crit), _num(minimum), _num(maximum)]
    while fields and fields[-1] == "":
        fields.pop()
    return f"{label}={_num(value)}{uom}" + "".join(f";{f}" for f in fields)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}"


def days(seconds: float) -> str:
    """``12.5d`` (hours below two days: ``14h``)."""
    if abs(seconds) < 2 * DAY:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / DAY:.1f}d"


# --- reading what the view does not hold ---------------------------------------------------------


def row_problems(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Cheap checks of the ``certs`` columns the renew job and the agents rely on, per lower-case
    name, on the rows :meth:`FleetStore.snapshot` read (no second read, no blob: ``crt`` is
    checked through the view's fingerprint, ``csr`` through its length)."""
    from lecentral.certificates import check_name, normalise_digest
    from lecentral.errors import CsrError
    from lecentral.names import is_plain_name

    found: dict[str, list[str]] = {}
    plain_digest = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}").fullmatch
    flags = (None, "Y", "N")
    for row in rows:
        name, md5 = row["name"], row["md5_modulus"]
        # the usual row, checked at once (100,000 rows: check reads every one)
        if (type(name) is str and is_plain_name(name) and row["enable"] in flags and row["certbot"] in flags
                and type(md5) is str and plain_digest(md5)
                and all(type(row[c]) is int or row[c] is None
                        for c in ("ts_expire", "ts_last_update", "count_fail_update"))
                and row["csr_length"]):
            continue
        problems = []
        try:
            check_name(str(name).rstrip())
        except CsrError as exc:
            problems.append(f"column name: {exc}")
        for col in ("enable", "certbot"):
            if row[col] not in (None, "Y", "N"):
                problems.append(f"column {col} is {row[col]!r}, expected 'Y' or 'N'")
        if md5 is None or normalise_digest(str(md5)) is None:
            problems.append(f"column md5_modulus is {md5!r}, expected an MD5 or SHA-256 hex digest")
        for col in ("ts_expire", "ts_last_update", "count_fail_update"):
            value = row[col]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"column {col} is {value!r}, expected an integer")
        if not row["csr_length"]:
            problems.append("column csr is empty")
        if problems:
            found[str(name).lower().rstrip(".")] = problems
    return found


def lifetimes(fleet: FleetStore, certs: Sequence[CertFleet]) -> dict[str, int]:
    """Each issued certificate's lifetime in seconds, per name: from the row where it tells
    (no failure since it was saved), else from the certificate (parsed, only for those rows)."""
    from lecentral.certificates import Certificate
    from lecentral.errors import CsrError

    found: dict[str, int] = {}
    parse = []
    for cert in certs:
        if not cert.fingerprint or not cert.ts_expire:
            continue
        issued = cert.ts_last_update or 0
        if cert.count_fail_update == 0 and 1 < issued < cert.ts_expire:
            found[cert.name] = cert.ts_expire - issued
        else:
            parse.append(cert.name)
    if parse:
        for name, pem in fleet.current_pems(parse).items():
            try:
                leaf = Certificate.load(pem, f"the crt column of {name}")
            except CsrError:
                continue
            if leaf.not_after > leaf.not_before:
                found[name] = leaf.not_after - leaf.not_before
    return found


# --- judging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckInput:
    """Everything :func:`evaluate` judges, read beforehand."""

    view: FleetView
    rows: Mapping[str, list[str]]  # row problems per lower-case name
    lifetimes: Mapping[str, int]
    leftovers: Sequence[Leftover]
    names: Sequence[str] = ()  # the NAMEs asked for (empty: the whole fleet)
    max_failures: int = 10
    #: the challenge journals of [renew] state_dir (None: not looked at)
    journals: JournalSurvey | None = None
    #: (notAfter, lifetime) of the crt where ``ts_expire`` is not (or does not tell) its
    #: notAfter, by name (:func:`lecentral.fleet.metrics.crt_expiries`): the crt's expiry counts
    expiries: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    #: (how many, since when the first) enabled certificates whose renewal-information
    #: requests have failed for a day or more (None: ARI off, not looked at)
    ari_failing: tuple[int, int | None] | None = None


def unclaimed_detail(name: str) -> str:
    """Why a report under a name without a ``certs`` row is a problem, and what to do."""
    return (f"reported, but no row of certs is named {name}: removed? nothing renews it "
            "(remove the entry on the host, then lecentral agent forget HOST: its next run "
            "reports its other entries again)")


def evaluate(data: CheckInput, thresholds: Thresholds) -> CheckResult:
    """The plugin result for ``data``."""
    view, now = data.view, data.view.now
    problems: list[Problem] = []
    found = {c.name.lower().rstrip("."): c for c in view.certs}
    missing = [n for n in data.names if n.lower().rstrip(".") not in found]
    perfdata: list[str] = []
    total = len(view.certs) + view.plain_ok  # plainly OK: enabled, no problem, not the soonest
    per_name = bool(data.names) or total <= PERFDATA_PER_NAME_MAX
    if per_name and view.plain_ok:
        raise ValueError("per-name perfdata needs every certificate (load_view(count_above=...))")
    counts = {EXPIRED: 0, EXPIRING_CRITICAL: 0, EXPIRING_WARNING: 0}
    soonest: tuple[int, str] | None = None
    enabled = view.plain_ok
    for cert in view.certs:
        key = cert.name.lower().rstrip(".")
        for problem in data.rows.get(key, []):
            problems.append(Problem(ROW_PROBLEM, cert.name, f"{cert.name}: {problem}"))
        if not cert.enabled:
            continue
        enabled += 1
        problems += _failures(cert, data.max_failures)
        if not cert.fingerprint:
            if (cert.ts_expire or 0) > 1:
                problems.append(Problem(ROW_PROBLEM, cert.name, f"{cert.name}: crt holds no readable "
                                        f"certificate although ts_expire says one was stored"))
            elif (cert.ts_last_update or 0) > 1 or cert.count_fail_update:
                problems.append(Problem(NO_CERTIFICATE, cert.name, f"{cert.name}: enabled and "
                                        "tried, but no certificate issued yet"))
            continue
        expire = cert.ts_expire or 0
        lifetime = data.lifetimes.get(cert.name, DEFAULT_LIFETIME)
        truth = data.expiries.get(cert.name)
        if truth is not None:  # the crt's notAfter, not a wrong ts_expire (a row problem too)
            expire, lifetime = truth[0], truth[1] or lifetime
        left = expire - now
        warn, crit = thresholds.seconds(lifetime)
        if soonest is None or left < soonest[0]:
            soonest = (left, cert.name)
        kind = (EXPIRED if left <= 0 else EXPIRING_CRITICAL if left < crit
                else EXPIRING_WARNING if left < warn else None)
        if kind == EXPIRED:
            problems.append(Problem(kind, cert.name, f"{cert.name}: expired {days(-left)} ago"))
        elif kind is not None:
            limit = crit if kind == EXPIRING_CRITICAL else warn
            problems.append(Problem(kind, cert.name, f"{cert.name}: expires in {days(left)} "
                                    f"(below {days(limit)})"))
        if kind is not None:
            counts[kind] += 1
        if per_name:
            perfdata.append(perf(cert.name, round(left / DAY, 2), "", round(warn / DAY, 2),
                                 round(crit / DAY, 2), None, round(lifetime / DAY, 2)))
        for target in cert.targets:
            if target.state in SEVERITY:
                problems.append(Problem(target.state, cert.name,
                                        f"{cert.name} on {target.target}: {target.state}: "
                                        f"{target.detail}"))
    wanted = {n.lower().rstrip(".") for n in data.names}
    for left_behind in data.leftovers:
        if wanted and left_behind.name.lower().rstrip(".") not in wanted:
            continue
        problems.append(Problem(LEFTOVER, left_behind.name,
                                f"{left_behind.name}: left behind since {days(now - left_behind.ts)} "
                                f"({left_behind.attempts} removal(s) tried): "
                                f"{left_behind.describe()}: {left_behind.error}"))
    for name, where, _ in view.unclaimed:
        if wanted and name.lower().rstrip(".") not in wanted:
            continue
        problems.append(Problem(UNCLAIMED, name, f"{name} on {where}: {unclaimed_detail(name)}"))
    if not data.names and view.renew_state in SEVERITY:
        problems.append(Problem(view.renew_state, None, f"renew timer: {view.renew_detail}"))
    journal_records = _journal_problems(data.journals, wanted, now, problems)
    if not data.names and data.ari_failing is not None and data.ari_failing[0]:
        count, since = data.ari_failing
        problems.append(Problem(ARI_FAILING, None, (
            f"renewal information (ARI): the requests for {count} certificate(s) have failed "
            f"for more than a day (the first since {days(now - (since or now))} ago): their "
            "renewal time (renew.before) decides, and a renewal the CA moves earlier (a "
            "revocation) is not seen; the renew job's warnings say why (docs/renew.md, ARI "
            "windows)")))
    alerting = sum(1 for c in view.certs for t in c.targets if t.state in SEVERITY)
    leftovers = sum(1 for p in problems if p.kind == LEFTOVER)
    failing = sum(1 for c in view.certs if c.enabled and c.count_fail_update >= FAILURES_WARNING)
    aggregate = [
        perf("certificates", total, "", None, None, 0),
        perf("enabled", enabled, "", None, None, 0),
        perf("expired", counts[EXPIRED], "", None, None, 0),
        perf("expiring_critical", counts[EXPIRING_CRITICAL], "", None, None, 0),
        perf("expiring_warning", counts[EXPIRING_WARNING], "", None, None, 0),
        perf("failing", failing, "", None, None, 0),
        perf("targets_alerting", alerting, "", None, None, 0),
        perf("leftovers", leftovers, "", None, None, 0),
    ]
    if journal_records is not None:
        aggregate.append(perf("journal_records", journal_records, "", None, None, 0))
    if data.ari_failing is not None and not data.names:
        aggregate.append(perf("ari_failing", data.ari_failing[0], "", None, None, 0))
    if soonest is not None:
        fixed = thresholds.warning_days is not None and thresholds.critical_days is not None
        aggregate.append(perf("min_days_left", round(soonest[0] / DAY, 2), "",
                              thresholds.warning_days if fixed else None,
                              thresholds.critical_days if fixed else None))
    result = CheckResult("LECENTRAL", worst_status(p.severity for p in problems), "",
                         aggregate + perfdata, problems)
    if missing:
        result.status = UNKNOWN
        result.summary = (f"no certificate named {', '.join(missing)} in the database "
                          "(see lecentral list)")
        return result
    result.summary = _summary(result, len(data.names) or total, soonest, view)
    return result


def _journal_problems(journals: JournalSurvey | None, wanted: set[str], now: int,
                      problems: list[Problem]) -> int | None:
    """The journals' problems (with NAMEs, only their records; a journal refused or unreadable
    only fleet-wide), added to ``problems``; the number of records still noted, or None when
    they could not be read."""
    if journals is None:
        return None
    if not wanted:
        problems += [Problem(JOURNAL_REFUSED, None, f"challenge journal: {why}")
                     for why in journals.refused]
        if journals.unreadable is not None:
            problems.append(Problem(JOURNAL_UNREADABLE, None, (
                f"challenge journals: {journals.unreadable}: challenge records a killed renew "
                "process left would not be seen here; run lecentral check as the renew job's "
                "user, or root (docs/monitoring.md)")))
    if journals.unreadable is not None:
        return None
    count = 0
    for left in journals.left:
        records = [r for r in left.records
                   if not wanted or str(r["cert"]).lower().rstrip(".") in wanted]
        if not records:
            continue
        count += len(records)
        shown = ", ".join(_noted(r) for r in records[:3])
        more = f" and {len(records) - 3} more" if len(records) > 3 else ""
        certs = sorted({str(r["cert"]) for r in records})
        problems.append(Problem(JOURNAL_LEFT, certs[0] if len(certs) == 1 else None, (
            f"renew process {left.pid} ended mid-pass (killed?) {days(now - left.written)} ago "
            f"and did not remove {len(records)} challenge record(s) it had added: "
            f"{shown}{more} (noted in {left.path}): the next lecentral renew removes them")))
    return count


def _noted(record: Mapping[str, Any]) -> str:
    from lecentral.leftovers import DNS_TXT

    if record["kind"] == DNS_TXT:
        return f'TXT {record["fqdn"]} "{record["value"]}" ({record["cert"]})'
    return f'challenge file {record["path"]} ({record["cert"]})'


def _failures(cert: CertFleet, max_failures: int) -> list[Problem]:
    fails = cert.count_fail_update
    if fails > max_failures:
        return [Problem(GIVEN_UP, cert.name, f"{cert.name}: {fails} failed renewals in a row, more "
                        f"than [renew] max_failures {max_failures}: the renew job no longer "
                        "retries it (see lecentral show NAME, then lecentral renew --force NAME)")]
    if fails >= FAILURES_WARNING:
        return [Problem(FAILING, cert.name, f"{cert.name}: {fails} failed renewals in a row "
                        "(see lecentral show NAME)")]
    return []


def _summary(result: CheckResult, count: int, soonest: tuple[int, str] | None,
             view: FleetView) -> str:
    what = f"{count} certificate{'s' if count != 1 else ''}"
    if not result.problems:
        text = f"{what} OK"
        if soonest is not None:
            text += f", soonest expiry {soonest[1]} in {days(soonest[0])}"
        return text
    tally = {s: sum(1 for p in result.problems if p.severity == s) for s in (CRITICAL, WARNING)}
    parts = [f"{n} {STATE_WORDS[s].lower()}" for s, n in tally.items() if n]
    worst = min(result.problems, key=lambda p: (-_rank(p.severity), p.name or "", p.text))
    first = worst.text if len(worst.text) <= 160 else worst.text[:157] + "..."
    return f"{', '.join(parts)} problem(s) in {what}: {first}"


def unknown(prefix: str, message: str) -> CheckResult:
    """The result when the check itself could not look (database unreachable, bad config...)."""
    return CheckResult(prefix, UNKNOWN, message)


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line for an error, with every known secret masked (the database password)."""
    from lecentral.errors import LecentralError

    text = str(exc) if isinstance(exc, LecentralError) else f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return clean(text.splitlines()[0] if text else type(exc).__name__)


def as_json(result: CheckResult) -> dict[str, Any]:
    """The result for scripts (``--json``)."""
    return {"status": STATE_WORDS[result.status], "exit_code": result.status,
            "summary": result.summary, "perfdata": result.perfdata,
            "problems": [{"severity": STATE_WORDS[p.severity], "kind": p.kind, "name": p.name,
                          "text": p.text} for p in result.problems]}
