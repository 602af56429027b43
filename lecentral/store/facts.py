"""What lecentral derived from each stored certificate, kept so that a renew sweep over a large
table parses only what changed or may be due (``lecentral_cert_facts``, migration 0006).

A sweep where nothing is due used to parse every row's CSR, certificate and chain on every run.
Now one SQL statement decides, per enabled row of ``certs``, whether Python must look at it:

- it is skipped ("unchanged, not due") only if its facts row says ``ok`` (a valid row with a good
  certificate: :func:`derive`), every value the facts were derived from is still the same in
  ``certs`` (``certbot``, ``md5_modulus``, ``md5_ca``, ``ts_expire``, ``webroot_path`` compared
  as stored, and one checksum of ``crt``, ``csr`` and ``ca`` computed by the database server
  over the stored bytes: :func:`sum_sql`, :func:`blobs_sum`), and the renewal window computed in
  SQL from the cached notBefore/notAfter has not opened (:func:`window_closed`, with a margin:
  SQL may only send more rows to Python, never fewer);
- while a CA offers renewal information (ARI), a row of that CA is skipped only if, besides,
  the window kept for its certificate is fresh and its due time ahead (:func:`ari_settled`,
  lecentral/renew/ari.py);
- everything else (no facts yet, any value changed by anyone, a bad or invalid row, a row that
  may be due) is read in full and decided by the renew job's Python rules, as before, and its
  facts are derived again.

The checksum is computed from the bytes the server stores, every run: a certificate written by
download_cert.pl, a CSR by populate.pl or a hand edit is seen at the next sweep, whatever
``ts_last_update`` says. Nothing is trusted from a trigger or a timestamp. The checksum is CRC-32
on SQLite and MariaDB/MySQL (the server's ``CRC32()``; on SQLite a function registered on each
connection), 64 bits of MD5 on PostgreSQL: it detects any accidental change (a different
certificate of the same length included) except with probability 2^-32 resp. 2^-64; it is no
defence against someone who can write ``certs`` and forges a collision on purpose (such a person
can store any certificate anyway).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    LargeBinary,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.expression import Select

from lecentral.config import AUTO, before_fraction, parse_duration
from lecentral.errors import LecentralError
from lecentral.names import check_name
from lecentral.store.schema import ari_windows, cert_facts, cert_settings, certs
from lecentral.window import SHORT_LIFETIME

if TYPE_CHECKING:
    from lecentral.config import RenewConfig
    from lecentral.store.rows import AriSweep, CertRow

#: the name of the checksum function registered on SQLite connections
SQLITE_SUM = "lecentral_sum"
#: the columns of ``certs`` compared as stored (a change of any means: derive again)
PLAIN = ("certbot", "md5_modulus", "md5_ca", "ts_expire", "webroot_path")
#: seconds SQL adds before deciding "window not open", so that float rounding in SQL can only
#: send a row to Python, never keep a due one away
MARGIN = 2
#: the longest a cached ARI window is trusted after it was asked (RFC 9773 §4.3: a day; the
#: same bound as lecentral.acme.client.RETRY_AFTER_MAX, which bounds what is written)
RETRY_MAX = 86400
#: renewal-information requests failing this long are a problem ``lecentral check`` and
#: ``lecentral metrics`` tell (:func:`ari_failing_bounds`)
ARI_FAILING_AFTER = 86400
#: what :func:`derive` records in ``state``; only ``ok`` lets a sweep (and ``list``) skip parsing
STATES = ("ok", "bad", "invalid", "none", "odd-name")


def _raw(value: Any) -> bytes:
    """The bytes a stored value is checksummed as (the same in Python and in SQLite's function)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return repr(value).encode()  # SQLite lets any column hold a number: never equal to a blob's


def blobs_sum(dialect: str, crt: Any, csr: Any, ca: Any) -> int:
    """The checksum the database server computes (:func:`sum_sql`) of a row's ``crt``, ``csr``
    and ``ca``, in Python: over their lengths (-1 for NULL: a NULL and an empty value, or a
    value moved from one column to another, differ), then their bytes."""
    blobs = [None if v is None else _raw(v) for v in (crt, csr, ca)]
    head = ",".join(str(-1 if b is None else len(b)) for b in blobs) + ":"
    data = head.encode() + b"".join(b or b"" for b in blobs)
    if dialect == "postgresql":
        return int.from_bytes(hashlib.md5(data).digest()[:8], "big", signed=True)
    return zlib.crc32(data)


def sqlite_sum(crt: Any, csr: Any, ca: Any) -> int:
    """The function registered on SQLite connections as ``lecentral_sum`` (one call per row,
    100,000 per sweep or listing): :func:`blobs_sum`, three blobs checksummed in place."""
    if type(crt) is bytes and type(csr) is bytes and type(ca) is bytes:
        head = zlib.crc32(b"%d,%d,%d:" % (len(crt), len(csr), len(ca)))
        return zlib.crc32(ca, zlib.crc32(csr, zlib.crc32(crt, head)))
    return blobs_sum("sqlite", crt, csr, ca)


def sum_sql(dialect: str) -> ColumnElement[Any]:
    """The server-side checksum of a ``certs`` row's ``crt``, ``csr`` and ``ca``."""
    cols = (certs.c.crt, certs.c.csr, certs.c.ca)
    if dialect == "sqlite":
        checksum: ColumnElement[Any] = getattr(func, SQLITE_SUM)(*cols)
        return checksum
    lengths: list[Any] = []
    for col in cols:
        if lengths:
            lengths.append(",")
        lengths.append(func.coalesce(cast(func.length(col), String), "-1"))
    if dialect == "postgresql":  # the first 64 bits of MD5 as a signed bigint
        from sqlalchemy.dialects.postgresql import BIT

        data: Any = func.convert_to(func.concat(*lengths, ":"), "UTF8")
        for col in cols:
            data = data.op("||")(func.coalesce(col, literal(b"", LargeBinary)))
        hex16 = literal("x", String).concat(func.substr(func.md5(data), 1, 16))
        return cast(cast(hex16, BIT(64)), BigInteger)
    empty = literal(b"", LargeBinary)
    return func.crc32(func.concat(*lengths, ":", *(func.coalesce(c, empty) for c in cols)))


def signature(dialect: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The values a facts row is derived from, from a ``certs`` row as the driver returned it."""
    found = {col: raw[col] for col in PLAIN}
    found["blobs_sum"] = blobs_sum(dialect, raw["crt"], raw["csr"], raw["ca"])
    return found


def derive(raw_name: str, row: CertRow) -> dict[str, Any]:
    """What a row's stored values say (state, notBefore, notAfter, fingerprint), parsed once.

    ``row`` is the validated row (with any problem found outside it, such as a duplicate name).
    Only ``ok`` lets a later sweep skip the row."""
    from lecentral.certificates import Certificate
    from lecentral.store.rows import certificate_problems, load_row_csr

    facts: dict[str, Any] = {"not_before": None, "not_after": None, "fingerprint": None,
                             "names": None}
    if row.crt:
        from lecentral.names import pem_fingerprint

        # whatever the row's state: the fingerprint as the fleet computes it from the crt
        # (SHA-256 of the first PEM block), which fleet/check/metrics read instead of the crt
        facts["fingerprint"] = pem_fingerprint(row.crt)
        try:
            cert = Certificate.load(row.crt)
            facts.update(not_before=cert.not_before, not_after=cert.not_after)
        except LecentralError:
            pass
    try:
        normalised = check_name(raw_name.rstrip()) == raw_name
    except LecentralError:
        normalised = False
    if row.problems:
        return {**facts, "state": "invalid"}
    try:
        csr = load_row_csr(row)
    except LecentralError:
        return {**facts, "state": "invalid"}
    facts["names"] = json.dumps(csr.names)
    if certificate_problems(row, csr.names):
        return {**facts, "state": "bad"}
    if not row.crt:
        return {**facts, "state": "none"}
    return {**facts, "state": "ok" if normalised else "odd-name"}


def names_of(stored: Any) -> list[str] | None:
    """The CSR names a facts row holds (``names``: what :func:`derive` wrote, a JSON list of
    strings), None if it holds anything else. 100,000 per listing: the text json.dumps writes
    for plain names is split without the JSON parser."""
    if type(stored) is not str:
        return None
    if stored.startswith('["') and stored.endswith('"]') and "\\" not in stored:
        names = stored[2:-2].split('", "')
        if stored.count('"') == 2 * len(names):  # no other quote: exactly what dumps wrote
            return names
    try:
        found = json.loads(stored)
    except ValueError:
        return None
    if isinstance(found, list) and all(isinstance(n, str) for n in found):
        return found
    return None


def window_closed(renew: RenewConfig, now: int) -> ColumnElement[bool]:
    """True in SQL when the renewal window (:func:`lecentral.window.renew_at`) of the cached
    certificate has surely not opened at ``now``; never true for a row that may be due."""
    f = cert_facts.c
    later = now + MARGIN
    if renew.before_days > 0:
        return f.not_after - renew.before_days * 86400 > later
    before = renew.before.strip().lower()
    lifetime = f.not_after - f.not_before + 1
    if before == AUTO:
        share: Any = case((lifetime < SHORT_LIFETIME, literal_column("0.5")),
                          else_=literal_column(repr(1 / 3)))
    elif "/" in before or before.endswith("%"):
        share = literal_column(repr(before_fraction(before)))
    else:
        seconds = parse_duration(before, "renew.before", "configuration")
        return f.not_after - seconds > later
    closed: ColumnElement[bool] = f.not_after - lifetime * share > later
    return closed


def recorded(dialect: str) -> ColumnElement[bool]:
    """True in SQL when a ``certs`` row's facts are ``ok`` and still describe its stored values
    (NULL or false otherwise)."""
    c, f = certs.c, cert_facts.c
    same = [c[col].is_not_distinct_from(f[col]) for col in PLAIN]
    if dialect == "sqlite":  # dynamic types: a text in an integer column makes the row invalid
        same += [func.typeof(c[col]).in_(["integer", "null"])
                 for col in ("ts_last_update", "count_fail_update")]
    found: ColumnElement[bool] = and_(
        f.name.is_not(None), f.state == "ok", f.not_before.is_not(None), f.not_after.is_not(None),
        f.not_after >= f.not_before, f.names.is_not(None), *same,
        sum_sql(dialect) == f.blobs_sum)
    return found


def unchanged(dialect: str, renew: RenewConfig, now: int) -> ColumnElement[bool]:
    """True in SQL when an enabled ``certs`` row's facts are ``ok``, still describe its stored
    values, and its renewal window is closed: the one case a sweep does not read the row."""
    found: ColumnElement[bool] = and_(window_closed(renew, now), recorded(dialect))
    return found


def ari_settled(now: int, ari: AriSweep) -> ColumnElement[bool]:
    """True in SQL when a row's ARI window cannot make it due at ``now`` without asking the CA:
    its CA (the recorded issuing CA, else the first) offers no renewal information, or the
    window cached for its certificate (``lecentral_ari_windows``) is fresh (before its retry
    time, the certificate's fingerprint the facts' one) and its due time has not come, or its
    last request failed and its back-off has not passed (a window of 0 to 0). Only
    with :func:`recorded` true: then the facts' fingerprint is the stored ``crt``'s."""
    a, f = ari_windows.c, cert_facts.c
    ca = func.coalesce(cert_settings.c.issuer_ca, ari.first)
    later = now + MARGIN
    known = and_(a.name.is_not(None), a.fingerprint == f.fingerprint, a.ts_retry > now,
                 a.ts_retry <= now + RETRY_MAX)
    fresh = and_(known, a.window_start < a.window_end,
                 a.window_start <= a.due_at, a.due_at <= a.window_end, a.due_at > later)
    # the last request failed and its back-off has not passed: the renewal window decides
    # (lecentral/renew/ari.py: the failure row's window is 0 to 0)
    failed = and_(known, a.window_start == 0, a.window_end == 0, a.due_at == 0)
    settled: ColumnElement[bool] = (or_(ca.not_in(ari.offering), fresh, failed)
                                    if ari.offering else true())
    return settled


def ari_failing_bounds(now: int) -> tuple[int, int]:
    """(began before, asked after) of the certificates whose renewal-information requests are
    failing for :data:`ARI_FAILING_AFTER` (:meth:`lecentral.interfaces.Store.ari_failing`; the
    failure rows of lecentral/renew/ari.py): failures that began more than that ago and were
    seen again at a request since (the row of a certificate no longer asked, ARI turned off
    or the certificate disabled, soon stops counting)."""
    return now - ARI_FAILING_AFTER, now - ARI_FAILING_AFTER


def sweep_query(dialect: str, renew: RenewConfig, now: int,
                ari: AriSweep | None = None) -> Select[Any]:
    """(name, enable) of the rows to read: every enabled one :func:`unchanged` (and, with
    ``ari``, :func:`ari_settled`) is not true for, and every one whose name may not be written
    as DNS compares it (:func:`odd_names`)."""
    skip = unchanged(dialect, renew, now)
    joined = certs.outerjoin(cert_facts, cert_facts.c.name == certs.c.name)
    if ari is not None and ari.offering:
        # before the checksum of the blobs: a row whose window must be asked is read anyway
        skip = and_(window_closed(renew, now), ari_settled(now, ari), recorded(dialect))
        joined = (joined.outerjoin(ari_windows, ari_windows.c.name == certs.c.name)
                  .outerjoin(cert_settings, cert_settings.c.name == certs.c.name))
    return (select(certs.c.name, certs.c.enable)
            .select_from(joined)
            .where(or_(and_(certs.c.enable == "Y", not_(func.coalesce(skip, false()))),
                       odd_names(dialect))))


def disabled_query() -> Select[Any]:
    """The names of the rows not enabled (``enable`` NULL or not 'Y'): said by renew, never read."""
    return select(certs.c.name).where(or_(certs.c.enable.is_(None), certs.c.enable != "Y"))


def enabled_query() -> Select[Any]:
    """How many rows are enabled (those not read by a sweep are the rest)."""
    return select(func.count()).select_from(certs).where(certs.c.enable == "Y")


def list_order(dialect: str, now: int) -> list[ColumnElement[Any]]:
    """``lecentral list``'s order in SQL, for rows with a certificate (those it reads from the
    facts): those without ``ts_expire`` > 1 first, then by whole days left at ``now`` (Python's
    floor division: the dividend is made positive, so that truncating is flooring), then by
    name as Python compares strings (code points: bytes in UTF-8)."""
    c = certs.c
    # ts_expire >= 2 there: the dividend is positive; never an intermediate value below 0 (the
    # seed's ts_expire is UNSIGNED on MariaDB: a negative difference is an error there)
    dividend = c.ts_expire + ((now // 86400 + 2) * 86400 - now)
    whole = (dividend.op("DIV", precedence=8)(86400) if dialect in ("mysql", "mariadb")
             else dividend // 86400)
    has = case((c.ts_expire > 1, 1), else_=0)
    days = case((c.ts_expire > 1, whole), else_=0)
    if dialect in ("mysql", "mariadb"):
        name: ColumnElement[Any] = func.binary(c.name)
    elif dialect == "postgresql":
        name = c.name.collate("C")
    else:
        name = c.name
    return [has, days, name]


def odd_names(dialect: str) -> ColumnElement[bool]:
    """True in SQL for every stored name that may not be written as DNS compares it (capitals,
    blanks, a final dot, an IPv6 address...): a superset; such rows are checked for duplicates."""
    name = certs.c.name
    if dialect == "sqlite":
        odd = name.op("GLOB")("*[^a-z0-9.*_-]*")
    elif dialect == "postgresql":
        odd = name.op("~")("[^a-z0-9.*_-]")
    else:
        odd = func.binary(name).op("REGEXP")("[^a-z0-9.*_-]")
    found: ColumnElement[bool] = or_(odd, name.like("%."))
    return found
