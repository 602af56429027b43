"""Rows as the engine sees them: validated copies of what the database holds.

Everything read from the database is checked here before anyone acts on it. A row that fails a
check keeps its data but carries ``problems``; the renew job and the agent refuse such rows with the
message, ``lecentral list`` shows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lecentral.certificates import check_name
from lecentral.errors import CsrError

_HEX = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f]{64}$")


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
            text = str(value).strip().lower()
            if not _HEX.match(text):
                problems.append(f"column {col} is {value!r}, expected an MD5 or SHA-256 hex digest")
            return text

        row = cls(
            name=name,
            enable=flag("enable") if m["enable"] is not None else False,
            comment=m["comment"], certbot=flag("certbot") if m["certbot"] is not None else False,
            csr=blob("csr") or b"", ca=blob("ca"), crt=blob("crt"),
            md5_modulus=hexdigest("md5_modulus") or "", md5_ca=hexdigest("md5_ca"),
            ts_expire=integer("ts_expire"), ts_last_update=integer("ts_last_update"),
            count_fail_update=integer("count_fail_update"), old_ca=blob("old_ca"),
            old_crt=blob("old_crt"), webroot_path=m["webroot_path"],
        )
        if not row.csr:
            problems.append("column csr is empty")
        if m["enable"] is None:
            problems.append("column enable is NULL; treated as 'N' (set it with lecentral enable/disable)")
        if problems:
            return cls(**{**row.__dict__, "problems": tuple(problems)})
        return row


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
        import time

        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {when}"
