"""Rows as the engine sees them: validated copies of what the database holds.

Everything read from the database is checked here before anyone acts on it. A row that fails a
check keeps its data but carries ``problems``; the renew job and the agent refuse such rows with the
message, ``lecentral list`` shows them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from lecentral.errors import CsrError
from lecentral.names import check_name, md5_ca, normalise_digest, when

if TYPE_CHECKING:  # cryptography is imported by the functions that parse (not by from_db)
    from lecentral.certificates import Certificate, Csr

#: ts_expire and the certificate's notAfter this close are the same (the seed: clocks differ, two
#: timestamps less than an hour apart are deemed equivalent)
TS_EXPIRE_SLACK = 3600
ENABLE_NULL = ("column enable is NULL: not enabled, as the seed's scripts read it (set it with "
               "lecentral enable/disable)")


@dataclass(frozen=True)
class CertRow:
    """One row of ``certs``, with the seed's column names and Python types."""

    name: str
    csr: bytes
    md5_modulus: str
    enable: bool = False
    comment: str | None = None
    certbot: bool = False
    ca: bytes | None = None
    crt: bytes | None = None
    md5_ca: str | None = None
    ts_expire: int | None = None
    ts_last_update: int | None = None
    count_fail_update: int | None = None
    old_ca: bytes | None = None
    old_crt: bytes | None = None
    webroot_path: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)
    #: the column enable is NULL: not enabled (the seed's scripts test enable = 'Y'), pointed out
    enable_null: bool = field(default=False, compare=False)
    #: the name exactly as stored, when another row's differs from it only in case or a final
    #: dot (both invalid: :meth:`with_twins`): what tells the two apart (``name`` is the same
    #: for both) and what ``lecentral remove`` takes; None otherwise
    stored_name: str | None = field(default=None, compare=False)

    @property
    def notes(self) -> tuple[str, ...]:
        """Things worth pointing out that do not make the row invalid."""
        if self.enable_null:
            return (ENABLE_NULL,)
        return ()

    @property
    def method(self) -> str:
        """``certbot`` (HTTP-01 through the webroot) or ``dns`` (DNS-01 into the sub-zone)."""
        return "certbot" if self.certbot else "dns"

    def to_db(self) -> dict[str, Any]:
        """Column values for an INSERT."""
        return {
            "name": self.name, "enable": "Y" if self.enable else "N", "comment": self.comment,
            "certbot": "Y" if self.certbot else "N", "csr": self.csr, "ca": self.ca,
            "crt": self.crt, "md5_modulus": self.md5_modulus, "md5_ca": self.md5_ca,
            "ts_expire": self.ts_expire, "ts_last_update": self.ts_last_update,
            "count_fail_update": self.count_fail_update, "old_ca": self.old_ca,
            "old_crt": self.old_crt, "webroot_path": self.webroot_path,
        }

    @classmethod
    def from_db(cls, m: Mapping[Any, Any]) -> CertRow:
        """Validate a database row; problems are collected, never raised."""
        problems: list[str] = []
        raw_name = m["name"]
        name = raw_name.rstrip() if isinstance(raw_name, str) else str(raw_name)
        try:
            name = check_name(name)
        except CsrError as exc:
            problems.append(str(exc))

        def flag(col: str) -> bool:
            value = m[col]
            if value in ("Y", "N"):
                return bool(value == "Y")
            problems.append(f"column {col} is {value!r}, expected 'Y' or 'N'")
            return False

        def blob(col: str) -> bytes | None:
            value = m[col]
            if value is None:
                return None
            if isinstance(value, (bytes, bytearray, memoryview)):
                return bytes(value)
            if isinstance(value, str):  # some drivers hand back text for blobs
                return value.encode("ascii", "replace")
            problems.append(f"column {col} holds {type(value).__name__}, expected bytes")
            return None

        def integer(col: str) -> int | None:
            value = m[col]
            if value is None:
                return None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            problems.append(f"column {col} is {value!r}, expected an integer")
            return None

        def hexdigest(col: str) -> str | None:
            value = m[col]
            if value is None:
                return None
            digest = normalise_digest(str(value))
            if digest is None:
                problems.append(f"column {col} is {value!r}, expected an MD5 or SHA-256 hex digest")
                return str(value).strip().lower()
            return digest

        row = cls(
            name=name,
            enable=flag("enable") if m["enable"] is not None else False,
            comment=m["comment"], certbot=flag("certbot") if m["certbot"] is not None else False,
            csr=blob("csr") or b"", ca=blob("ca"), crt=blob("crt"),
            md5_modulus=hexdigest("md5_modulus") or "", md5_ca=hexdigest("md5_ca"),
            ts_expire=integer("ts_expire"), ts_last_update=integer("ts_last_update"),
            count_fail_update=integer("count_fail_update"), old_ca=blob("old_ca"),
            old_crt=blob("old_crt"), webroot_path=m["webroot_path"],
            enable_null=m["enable"] is None,
        )
        if not row.csr:
            problems.append("column csr is empty")
        if row.certbot and not (row.webroot_path or "").strip():
            problems.append("certbot = 'Y' but webroot_path is empty: HTTP-01 has nowhere to put "
                            "the challenge; set webroot_path (the site's DocumentRoot) or make it "
                            "a DNS-01 row (certbot = 'N')")
        if problems:
            return replace(row, problems=tuple(problems))
        return row

    def with_problem(self, problem: str) -> CertRow:
        """This row with one more problem (found outside the row itself, e.g. a duplicate name)."""
        return replace(self, problems=(*self.problems, problem))

    def with_twins(self, stored_name: str, problem: str) -> CertRow:
        """This row, stored as ``stored_name``, sharing its name with other rows: ``problem``
        says so (the row is refused until all but one are removed)."""
        return replace(self, problems=(*self.problems, problem), stored_name=stored_name)


def load_row_csr(row: CertRow) -> Csr:
    """The row's CSR: parsed and checked, naming the row's name, matching ``md5_modulus``.

    Raise CsrError saying what is wrong and what to do; these problems stop renewal of the row.
    """
    from lecentral.certificates import Csr, check_methods

    csr = Csr.load(row.csr, f"the CSR of {row.name}")
    csr.require_name(row.name, f"the CSR of {row.name}")
    if csr.md5_modulus != row.md5_modulus:
        raise CsrError(f"{row.name}: md5_modulus {row.md5_modulus} does not match the CSR's key "
                       f"({csr.md5_modulus}); store the right CSR with lecentral set-csr")
    # rows written by other tools: IP addresses with certbot='N' must not reach DNS-01
    check_methods(row.name, csr.names, http01=row.certbot)
    return csr


def certificate_problems(row: CertRow, csr_names: Sequence[str] | None = None) -> list[str]:
    """What is wrong with the stored certificate (crt, ca, md5_ca, ts_expire); empty if none is
    stored.

    Unlike ``problems`` these do not stop the renew job: they make the row due, so that a new
    certificate replaces the bad one. ``csr_names`` are the CSR's names (parsed from the row's
    CSR when not given; a CSR that does not parse is a row problem, not one of these).
    """
    from lecentral.certificates import Certificate, Csr

    if not row.crt:
        if (row.ts_expire or 0) > 1:  # populate.pl's 1 means "never issued"
            return [(f"crt is empty but ts_expire {row.ts_expire} ({when(row.ts_expire or 0)}) "
                     "says a certificate was stored: it was lost")]
        return []
    try:
        cert = Certificate.load(row.crt, f"the crt column of {row.name}")
    except CsrError as exc:
        return [str(exc)]
    found: list[str] = []
    if cert.md5_modulus != row.md5_modulus:
        found.append(f"the certificate in crt is for another key (md5_modulus {cert.md5_modulus}, "
                     f"the row's is {row.md5_modulus})")
    if csr_names is None:
        try:
            csr_names = Csr.load(row.csr).names
        except CsrError:
            csr_names = []
    missing = [n for n in csr_names if not cert.covers(n)]
    if missing:
        found.append(f"the certificate in crt does not cover {', '.join(missing)} (it names "
                     f"{', '.join(cert.names)})")
    # NULL, 0 or populate.pl's 1 beside a certificate: unknown, not wrong (the certificate says
    # when it expires; lecentral doctor --fix writes it for the Perl agents); no reissue for that
    if row.ts_expire is not None and row.ts_expire > 1 and \
            abs(row.ts_expire - cert.not_after) >= TS_EXPIRE_SLACK:
        found.append(f"ts_expire {row.ts_expire} disagrees with the certificate's notAfter "
                     f"{cert.not_after} ({when(cert.not_after)})")
    found.extend(_ca_problems(row, cert))
    return found


def chain_problems(row: CertRow, cert: Certificate) -> list[str]:
    """What is wrong with the stored chain of ``cert`` (the row's leaf): empty ``ca``, a chain
    that does not verify, an ``md5_ca`` that does not match. The agent refuses such a row."""
    return _ca_problems(row, cert)


def _ca_problems(row: CertRow, cert: Certificate) -> list[str]:
    """The agent refuses a chain that does not verify or does not match md5_ca: so does this."""
    from lecentral.certificates import load_chain, verify_chain

    if not row.ca:
        return ["crt holds a certificate but the ca column is empty"]
    found: list[str] = []
    try:
        verify_chain(cert, load_chain(row.ca, f"the ca column of {row.name}"),
                     f"the ca column of {row.name}")
    except CsrError as exc:
        found.append(str(exc))
    if row.md5_ca is not None and md5_ca(row.ca) != row.md5_ca:
        found.append(f"md5_ca {row.md5_ca} does not match the ca column (whose MD5 is "
                     f"{md5_ca(row.ca)})")
    return found


class FreshRow(NamedTuple):
    """A row ``lecentral list`` shows without reading its blobs: its facts are ``ok`` and every
    value they were derived from is unchanged (lecentral/store/facts.py), so its name is valid
    and as DNS compares it, ``certbot``/``ts_expire``/``webroot_path`` are as validated then,
    and ``enable``, ``ts_last_update``, ``count_fail_update`` were checked as read (``enable``
    'Y', 'N' or None, the others int or None). A tuple, not a CertRow: 100,000 of them are
    made per listing. Settings (``profile``, ``issuer_*``) as stored: the caller validates."""

    name: str
    enable: str | None
    certbot: str | None
    ts_expire: int | None
    ts_last_update: int | None
    count_fail_update: int | None
    webroot_path: str | None
    comment: Any
    names: list[str]
    not_before: int
    not_after: int
    profile: str | None
    issuer_ca: str | None
    issuer_ca_directory: str | None


class ListedRow(NamedTuple):
    """A row ``lecentral list`` read in full (not known good and unchanged), validated, with
    its settings as stored (``profile``, ``issuer``: (CA name, directory)), or None."""

    row: CertRow
    profile: str | None
    issuer: tuple[str, str] | None


@dataclass(frozen=True)
class SweptRow:
    """A row a renew sweep reads in full: its name as stored, the values its facts would be
    derived from (``lecentral.store.facts.signature``) and the validated row."""

    stored_name: str
    signature: dict[str, Any]
    row: CertRow


@dataclass(frozen=True)
class Swept:
    """What a renew sweep reads: the rows Python decides, and how many enabled rows SQL found
    unchanged since they were checked and not in their renewal window (not read at all)."""

    rows: list[SweptRow]
    unchanged: int
    #: the names of the rows not enabled (enable not 'Y'), which a sweep never renews
    disabled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AriSweep:
    """What a renew sweep needs to skip rows while CAs offer renewal information (ARI): the
    names of the configured CAs that offer it, and the first CA's (asked for a certificate
    whose issuing CA is not recorded). A row of such a CA is skipped only while its cached
    window (``lecentral_ari_windows``) is fresh and its ARI due time has not come."""

    offering: tuple[str, ...]
    first: str


@dataclass(frozen=True)
class AriWindowRow:
    """One cached renewal window (``lecentral_ari_windows``), as stored: validate before use
    (lecentral/renew/ari.py)."""

    name: str
    ari_cert_id: Any
    fingerprint: Any
    window_start: Any
    window_end: Any
    due_at: Any
    explanation: Any
    ts_fetched: Any
    ts_retry: Any


@dataclass(frozen=True)
class EventRow:
    """One entry of the event log (``lecentral_events``)."""

    id: int
    ts: int
    name: str
    kind: str
    host: str
    message: str


@dataclass(frozen=True)
class LockHolder:
    """Who holds the renew lock: the host and pid of that ``lecentral renew``, and since when."""

    host: str
    pid: int
    since: int

    @classmethod
    def parse(cls, host: Any, pid: Any, since: Any) -> LockHolder | None:
        """A holder from stored values, or None if they are not a plausible host, pid and time
        (the record is only information for the operator: a damaged one is not believed)."""
        if not isinstance(host, str) or not host or len(host) > 255:
            return None
        try:
            pid_n, since_n = int(pid), int(since)
        except (TypeError, ValueError):
            return None
        if pid_n <= 0 or since_n <= 0:
            return None
        return cls(host, pid_n, since_n)

    def __str__(self) -> str:

        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {when}"
