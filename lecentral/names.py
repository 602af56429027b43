"""Names, digests and times: the checks made on every row and name, without cryptography.

Apart from :mod:`lecentral.certificates` (which re-exports them) so that reading and validating
rows does not import ``cryptography``: a no-op agent run that parses no certificate imports none.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import re
from datetime import UTC, datetime

from lecentral.errors import CsrError

MAX_NAME_LENGTH = 250  # certs.name is char(250)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: a name check_name surely returns unchanged: lower case, no final dot, two labels or more,
#: the last one starting with a letter (so neither all digits nor an IP address); the fast path
#: for 100,000 rows (check reads every name), everything else is checked in full
_PLAIN_NAME = re.compile(r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                         r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


def ip_name(value: str) -> str | None:
    """The canonical text of ``value`` if it is an IP address literal (``127.0.0.1``,
    ``2001:db8::1``; RFC 8738 identifiers, compressed lower-case IPv6), else None."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    return str(address)


def is_ip(name: str) -> bool:
    """True if ``name`` (a certificate name as :func:`check_name` returns it) is an IP address."""
    return ip_name(name) is not None


def is_plain_name(name: str) -> bool:
    """True if :func:`check_name` surely returns ``name`` unchanged (the fast path for rows)."""
    return len(name) <= MAX_NAME_LENGTH and _PLAIN_NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    """Return ``name`` lower-cased if it is a valid DNS name (optionally ``*.``-prefixed), or in
    canonical form if it is an IP address (RFC 8738: an IP certificate's row is named by its IP).

    Used on everything read from the command line or the database before acting on it.
    """
    if not isinstance(name, str):
        raise CsrError(f"certificate name {name!r} is not text")
    if is_plain_name(name):
        return name
    lowered = name.strip().lower().rstrip(".")
    if "%" in lowered:
        raise CsrError(f"{name!r} is an IPv6 address with a zone (%...), which no certificate "
                       "can name; give the address without it")
    ip = ip_name(name)
    if ip is not None:
        return ip
    labels = lowered.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    if (not lowered or len(lowered) > MAX_NAME_LENGTH or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels)
            or all(label.isdigit() for label in labels)):
        raise CsrError(
            f"{name!r} is not a valid DNS name (letters, digits and hyphens in dot-separated "
            f"labels, at most {MAX_NAME_LENGTH} characters) nor an IP address"
        )
    return lowered


def md5_ca(ca: bytes) -> str:
    """The seed's ``md5_ca``: MD5 hex of the ``ca`` column's bytes (what ``md5sum ca.pem`` prints)."""
    return hashlib.md5(ca).hexdigest()


_DIGEST = re.compile(
    r"^(?:[a-z0-9-]*\([^)]*\)\s*=\s*)?"  # openssl md5: "(stdin)= ", "MD5(stdin)= ", "MD5(ca.pem)= "
    r"([0-9a-f]{32}|[0-9a-f]{64})"
    r"(?:\s+\*?\S+)?$"  # md5sum: "HEX  -" or "HEX  ca.pem"
)


def normalise_digest(value: str) -> str | None:
    """The lower-case hex of a digest as the seed's shell pipelines wrote it, or None.

    ``openssl md5`` prints ``(stdin)= hex`` or ``MD5(stdin)= hex``, ``md5sum`` prints ``hex  -``,
    some tools print upper-case hex: all are the same digest and are read as such.
    """
    match = _DIGEST.match(value.strip().lower())
    return match.group(1) if match else None


def now_ts() -> int:
    """The current Unix time, in one place so that code reads the clock the same way."""
    return int(datetime.now(UTC).timestamp())


def when(ts: int) -> str:
    """A Unix time as ``2025-01-31 12:00 UTC``: the one format of times in messages."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def pem_fingerprint(pem: bytes | str | None) -> str | None:
    """SHA-256 hex of the first certificate in ``pem``, without parsing it (a few microseconds:
    100,000 rows are read per run); ``None`` when there is none. SQLite may hand back a ``crt``
    stored as text (a hand edit such as ``crt || char(10)``): its UTF-8 bytes, as the renew job
    reads it, not a crash of every fleet command."""
    if not pem:
        return None
    if isinstance(pem, str):
        data = pem.encode("utf-8", "surrogateescape")
    elif isinstance(pem, (bytes, bytearray, memoryview)):
        data = bytes(pem)
    else:  # a number SQLite was given by hand (bytes(10**9) would be a gigabyte of zeros)
        return None
    start = data.find(_BEGIN)
    end = data.find(_END, start)
    if start < 0 or end < 0:
        return None
    try:
        der = binascii.a2b_base64(data[start + len(_BEGIN):end])  # line breaks are skipped
    except binascii.Error:
        return None
    return hashlib.sha256(der).hexdigest() if der else None
