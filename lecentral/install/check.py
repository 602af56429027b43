"""``lecentral-install check``: this server's certificates as one monitoring-plugin result (NRPE).

Built on :func:`lecentral.install.status.status` (installed vs database vs served, read-only) with
the conventions of ``lecentral check`` (:mod:`lecentral.fleet.nagios`): first line
``LECENTRAL-INSTALL <STATE> - <summary> | <perfdata>``, one line per problem, exit 0/1/2/3.

Severities (docs/monitoring.md):

- CRITICAL: the installed certificate expired or is below the critical threshold; the service
  presents another certificate than the one installed (mismatch);
- WARNING: below the warning threshold; an entry with an error (configuration, a refused or
  wrong certificate, an interrupted run); nothing installed yet; the service unreachable; a newer
  certificate in the database not installed for more than ``--stale-after`` days; a name not in
  the database;
- UNKNOWN: the database cannot be read (unless something is CRITICAL already), an unknown NAME.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lecentral.fleet.model import MISMATCH, STALE, UNREACHABLE
from lecentral.fleet.nagios import (
    CRITICAL,
    DAY,
    DEFAULT_LIFETIME,
    ENTRY_ERROR,
    EXPIRED,
    EXPIRING_CRITICAL,
    EXPIRING_WARNING,
    NOT_INSTALLED,
    ROW_PROBLEM,
    UNKNOWN,
    CheckResult,
    Problem,
    Thresholds,
    days,
    perf,
    worst_status,
)

PREFIX = "LECENTRAL-INSTALL"
#: a newer certificate in the database not installed for this long is a problem (the agent's
#: timer runs daily: one missed day is normal)
STALE_AFTER_DAYS = 2.0


def evaluate(rows: Sequence[Mapping[str, Any]], db_error: str | None, thresholds: Thresholds,
             now: int, *, stale_after_days: float = STALE_AFTER_DAYS,
             names: Sequence[str] = ()) -> CheckResult:
    """The plugin result for the rows of ``lecentral-install status --json``."""
    problems: list[Problem] = []
    perfdata: list[str] = []
    labels: set[str] = set()
    configured = {str(r["name"]).lower().rstrip(".") for r in rows}
    missing = [n for n in names if n.lower().rstrip(".") not in configured]
    soonest: tuple[int, str] | None = None
    for r in rows:
        name, service = str(r["name"]), str(r["service"])
        what = f"{name} ({service})"
        if r["error"]:
            problems.append(Problem(ENTRY_ERROR, name, f"{what}: {r['error']}"))
        inst, db = r["installed"], r["database"]
        if inst is None:
            if not r["error"]:
                problems.append(Problem(NOT_INSTALLED, name, f"{what}: no certificate installed "
                                        f"({r['state']})"))
        else:
            left = int(inst["expires"]) - now
            lifetime = int(inst["expires"]) - int(inst.get("not_before") or 0)
            if lifetime <= 0 or not inst.get("not_before"):
                lifetime = DEFAULT_LIFETIME
            warn, crit = thresholds.seconds(lifetime)
            if soonest is None or left < soonest[0]:
                soonest = (left, name)
            if left <= 0:
                problems.append(Problem(EXPIRED, name, f"{what}: the installed certificate "
                                        f"expired {days(-left)} ago"))
            elif left < crit or left < warn:
                kind, limit = (EXPIRING_CRITICAL, crit) if left < crit else (EXPIRING_WARNING, warn)
                problems.append(Problem(kind, name, f"{what}: the installed certificate expires "
                                        f"in {days(left)} (below {days(limit)})"))
            label = name if name not in labels else f"{name} {service}"
            labels.add(label)
            perfdata.append(perf(label, round(left / DAY, 2), "", round(warn / DAY, 2),
                                 round(crit / DAY, 2), None, round(lifetime / DAY, 2)))
        if str(r["state"]).startswith("interrupted run"):
            problems.append(Problem(ENTRY_ERROR, name, f"{what}: {r['state']}"))
        elif r["state"] == "not in the database":
            problems.append(Problem(ROW_PROBLEM, name, f"{what}: not in the database (the central "
                                    "host: lecentral add NAME)"))
        if (db and inst and str(r["state"]).startswith("to install") and db.get("not_before")
                and now - int(db["not_before"]) > stale_after_days * DAY):
            problems.append(Problem(STALE, name, f"{what}: the database has had a newer "
                                    f"certificate for {days(now - int(db['not_before']))}; "
                                    f"not installed: {r['state']}"))
        for url, seen in sorted(r["served"].items()):
            if "error" in seen:
                problems.append(Problem(UNREACHABLE, name, f"{what}: {url}: {seen['error']}"))
            elif not seen.get("is_installed"):
                fp = str(seen.get("fingerprint") or "")[:16]
                problems.append(Problem(MISMATCH, name, f"{what}: {url} presents another "
                                        f"certificate than the installed one (sha256 {fp}): "
                                        "reload the service?"))
    status = worst_status(p.severity for p in problems)
    result = CheckResult(PREFIX, status, "", perfdata, problems)
    if missing:
        result.status = UNKNOWN
        result.summary = (f"no [[cert]] entry named {', '.join(missing)} in this host's "
                          "install.toml")
        return result
    if db_error and status != CRITICAL:
        result.status = UNKNOWN
    count = f"{len(rows)} certificate{'s' if len(rows) != 1 else ''}"
    if not rows:
        result.summary = "no [[cert]] entry in install.toml"
    elif not problems and not db_error:
        result.summary = f"{count} OK"
        if soonest is not None:
            result.summary += f", soonest expiry {soonest[1]} in {days(soonest[0])}"
    else:
        lead = f"database: {db_error}; " if db_error else ""
        worst = min(problems, key=lambda p: (-_order(p.severity), p.name or "", p.text),
                    default=None)
        text = "" if worst is None else worst.text
        text = text if len(text) <= 160 else text[:157] + "..."
        tally = ", ".join(f"{n} {w}" for n, w in (
            (sum(1 for p in problems if p.severity == CRITICAL), "critical"),
            (sum(1 for p in problems if p.severity != CRITICAL), "warning")) if n)
        result.summary = f"{lead}{tally + ' problem(s) in ' if tally else ''}{count}" + (
            f": {text}" if text else "")
    return result


def _order(severity: int) -> int:
    return {0: 0, 1: 1, 3: 2, 2: 3}[severity]
