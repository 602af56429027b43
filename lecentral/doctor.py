"""``lecentral doctor``: read an existing (seed) database and say what would stop lecentral or
the Perl agents, row by row; with ``--fix``, repair what is safe, in one transaction.

What the seed's scripts wrote is accepted as it is wherever lecentral can read it (digests as
``openssl md5`` or ``md5sum`` printed them, in any case; names with capitals): those are notes.
``--fix`` changes only values whose meaning the Perl scripts read the same way before and after:

* ``enable`` NULL becomes ``'N'`` (install_cert.pl and download_cert.pl test ``enable = 'Y'``:
  NULL was already "not enabled");
* ``ts_expire`` NULL or 0 becomes the stored certificate's notAfter, or 1 without one (populate.pl's
  value: "must be set to 1 to avoid a problem in the download script");
* ``ts_last_update`` NULL or 0 becomes 1, ``count_fail_update`` NULL becomes 0.

Digests are never rewritten: a Perl agent compares ``md5_ca`` with what its own pipeline printed,
so a normalised value would look like a new CA to it every day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lecentral.certificates import Certificate, normalise_digest
from lecentral.errors import LecentralError
from lecentral.store.rows import CertRow, certificate_problems, load_row_csr

if TYPE_CHECKING:
    from lecentral.config import RenewConfig
    from lecentral.journal import JournalSurvey

ERROR, WARNING, NOTE = "error", "warning", "note"
#: how ``--fix`` left a finding
FIXED, FIXABLE, MANUAL = "fixed", "fixable", "manual"


@dataclass
class Finding:
    """One thing doctor says about a row (or a name's DNS)."""

    name: str
    level: str  # error: refused until fixed; warning: works, but will bite; note: accepted as is
    check: str
    message: str
    fix: str | None = None  # FIXABLE (--fix repairs it), FIXED, MANUAL (what to do is in message)
    #: the column and value --fix writes (internal: not shown)
    change: tuple[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("change")
        return data


def _is_zero(value: Any) -> bool:
    return value is None or value == 0


def _sql(value: Any) -> str:
    """A column value as SQL shows it (NULL, not Python's None)."""
    return "NULL" if value is None else repr(value)


def row_findings(raw: Mapping[str, Any]) -> list[Finding]:
    """Everything worth saying about one raw row of ``certs``."""
    name = str(raw["name"])
    found: list[Finding] = []

    def add(level: str, check: str, message: str, fix: str | None = None,
            change: tuple[str, Any] | None = None) -> None:
        found.append(Finding(name, level, check, message, fix, change))

    row = CertRow.from_db(raw)
    for problem in row.problems:
        add(ERROR, "row", f"{problem}; lecentral and its agents refuse this row until it is fixed",
            MANUAL)
    if name != name.lower().strip():
        add(NOTE, "name", f"the name has capitals or spaces: lecentral finds it as "
            f"{name.strip().lower()} (DNS names ignore case) and never renames it; the agents' "
            "[[cert]] name may be written either way")
    for column in ("md5_modulus", "md5_ca"):
        value = raw[column]
        if value is not None and normalise_digest(str(value)) not in (None, str(value)):
            add(NOTE, column, f"{column} {str(value)!r} is written as a shell pipeline printed it; "
                f"lecentral reads it as {normalise_digest(str(value))} and leaves it as it is "
                "(the Perl agents compare it as written)")
    _enable_and_times(raw, row, add)
    if not row.problems:
        _csr_and_certificate(row, add)
    return found


def _enable_and_times(raw: Mapping[str, Any], row: CertRow,
                      add: Callable[..., None]) -> None:
    if raw["enable"] is None:
        add(WARNING, "enable", "enable is NULL: not enabled, as the seed's scripts read it; "
            "--fix writes 'N' (the same meaning, stated)", FIXABLE, ("enable", "N"))
    if _is_zero(raw["ts_expire"]) and isinstance(raw["ts_expire"], (int, type(None))):
        value = 1
        if row.crt:
            try:
                value = Certificate.load(row.crt).not_after
            except LecentralError:
                value = 1
        what = "the certificate's notAfter" if value != 1 else "1 (populate.pl's value)"
        add(WARNING, "ts_expire", f"ts_expire is {_sql(raw['ts_expire'])}: download_cert.pl needs a "
            f"number there; --fix writes {what}", FIXABLE, ("ts_expire", value))
    if _is_zero(raw["ts_last_update"]) and isinstance(raw["ts_last_update"], (int, type(None))):
        add(WARNING, "ts_last_update", f"ts_last_update is {_sql(raw['ts_last_update'])}: "
            "download_cert.pl needs a number there; --fix writes 1 (populate.pl's value)",
            FIXABLE, ("ts_last_update", 1))
    if raw["count_fail_update"] is None:
        add(NOTE, "count_fail_update", "count_fail_update is NULL (populate.pl leaves it so; "
            "NULL + 1 stays NULL in SQL); --fix writes 0", FIXABLE, ("count_fail_update", 0))
    elif isinstance(raw["count_fail_update"], int) and raw["count_fail_update"] >= 2:
        add(WARNING, "count_fail_update", f"count_fail_update is {raw['count_fail_update']}: the "
            "seed says it should never grow above 2; see lecentral show NAME for why it fails",
            MANUAL)


def _csr_and_certificate(row: CertRow, add: Callable[..., None]) -> None:
    try:
        csr = load_row_csr(row)
    except LecentralError as exc:
        add(ERROR, "csr", f"{exc}", MANUAL)
        return
    for problem in certificate_problems(row, csr.names):
        add(WARNING, "crt", f"{problem}; the next lecentral renew replaces the certificate"
            if row.enable else f"{problem} (disabled: not replaced)", MANUAL)


def renew_findings(renew: RenewConfig, raws: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """``[renew]`` settings that do not fit the certificates in the database
    (:func:`lecentral.window.window_warnings`, against the shortest lifetime of the enabled rows'
    stored certificates), as warnings named ``[renew]``."""
    from lecentral.window import lifetime_of, window_warnings

    lifetimes = []
    for raw in raws:
        row = CertRow.from_db(raw)
        if row.problems or not row.enable or not row.crt:
            continue
        try:
            cert = Certificate.load(row.crt)
        except LecentralError:
            continue  # the row's own findings say so
        lifetimes.append(lifetime_of(cert.not_before, cert.not_after))
    return [Finding("[renew]", WARNING, "renew-window", message, MANUAL)
            for message in window_warnings(renew, min(lifetimes, default=None))]


def journal_findings(journals: JournalSurvey) -> list[Finding]:
    """The challenge journals of ``[renew] state_dir`` (:func:`lecentral.journal.survey`, which
    changes nothing), as findings named ``[renew]``: a journal of a gone renew process with
    records still noted (a warning: the next lecentral renew removes them), a journal the renew
    job does not trust (an error: nothing it names is removed until the admin looks), a journal
    directory this user cannot read (a warning: not looked at)."""
    found = [Finding("[renew]", ERROR, "journal", f"challenge journal: {why}", MANUAL)
             for why in journals.refused]
    if journals.unreadable is not None:
        found.append(Finding("[renew]", WARNING, "journal", (
            f"challenge journals not looked at: {journals.unreadable}; run lecentral doctor as "
            "the renew job's user, or root"), MANUAL))
    for left in journals.left:
        certs = sorted({str(r["cert"]) for r in left.records})
        found.append(Finding("[renew]", WARNING, "journal", (
            f"renew process {left.pid} ended mid-pass (killed?) and did not remove "
            f"{len(left.records)} challenge record(s) it had added, for {', '.join(certs[:5])}"
            f"{' and more' if len(certs) > 5 else ''} (noted in {left.path}): the next "
            "lecentral renew removes them")))
    return found


def dns_findings(name: str, report: Any) -> list[Finding]:
    """A :class:`lecentral.dns.check.NameReport` as doctor findings (its OKs left out)."""
    found = []
    for f in report.findings:
        if f.status == "OK":
            continue
        level = ERROR if f.status == "FAIL" else WARNING
        fix = f"; fix: {f.fix}" if f.fix else ""
        # the locator refuses a parent zone (lecentral/dns/zones.py): its own finding
        check = "subzone" if f.check == "zone" and "no sub-zone of its own" in f.message else f.check
        found.append(Finding(name, level, f"dns-{check}", f"{f.message}{fix}", MANUAL))
    return found


def fix(engine: Any, findings: Iterable[Finding], now: int) -> list[Finding]:
    """Apply every fixable finding in one transaction (all or nothing); mark them fixed and log
    a ``doctor`` event for each row changed. Return the findings changed."""
    from sqlalchemy import insert, update

    from lecentral.host import this_host
    from lecentral.store.schema import certs, events

    todo = [f for f in findings if f.fix == FIXABLE and f.change is not None]
    with engine.begin() as conn:
        for finding in todo:
            assert finding.change is not None
            column, value = finding.change
            conn.execute(update(certs).where(certs.c.name == finding.name)
                         .values({column: value}))
            conn.execute(insert(events).values(
                ts=now, name=finding.name.strip().lower(), kind="doctor", host=this_host(),
                message=f"doctor --fix: {column} = {value!r} ({finding.message})"[:60000]))
    for finding in todo:
        finding.fix = FIXED
    return todo
