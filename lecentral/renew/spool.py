"""The spool: a certificate the CA issued is written here before the database is, so none is lost.

Between the CA's answer and the database's commit a certificate exists only in memory: a database
that fails then (server down, table locked) would lose it, and the next run would order it again
(the CA's rate limits count that). So :class:`CertSpool` keeps each issued certificate in
``[renew] state_dir``/spool/NAME.json (mode 0600, written atomically: a temp file, fsync, rename,
fsync of the directory) until it is saved; the renew job saves every spooled certificate at the
start of its next run, without a new order.

The record holds the certificate, its chain, and the SHA-256 of the DER of the CSR it was
issued for: a CSR replaced since (``lecentral set-csr``) makes the certificate useless (another
key), so it is discarded loudly (moved to spool/discarded/) instead of being saved.

A save that fails is noted in the file (``unsaved``: the error), so that the run that saves it
later says what happened: that database error, or, with no note, that the run which issued it
ended before its save (killed, crashed, the machine stopped) or could not write the note (the
spool's file system full): no note cannot tell those apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lecentral.certificates import check_name
from lecentral.errors import LecentralError
from lecentral.files_io import replace_atomically

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def csr_fingerprint(csr_der: bytes) -> str:
    """SHA-256 of a CSR's DER, lower-case hex: the CSR a spooled certificate belongs to."""
    return hashlib.sha256(csr_der).hexdigest()


@dataclass(frozen=True)
class Spooled:
    """One issued certificate waiting to be saved."""

    name: str
    crt: bytes
    ca: bytes
    csr_sha256: str
    ts_expire: int
    issued_at: int
    issuer: str
    path: Path
    #: (the [[acme.ca]] name, its directory) that issued it; None in files of older releases
    issuer_ca: tuple[str, str] | None = None
    #: why its save failed (the database's error), noted by the run that issued it; None if
    #: that run never got an answer from the database (it ended before: killed, crashed) or
    #: could not write the note
    unsaved: str | None = None


class CertSpool:
    """``state_dir/spool``: one JSON file per certificate name."""

    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) / "spool"

    def path(self, name: str) -> Path:
        """The spool file of ``name`` (a wildcard's ``*`` becomes ``_``, not a DNS label character)."""
        return self.dir / f"{check_name(name).replace('*', '_')}.json"

    def put(self, name: str, crt: bytes, ca: bytes, csr_der: bytes, ts_expire: int,
            issuer: str, now: int, issuer_ca: tuple[str, str] | None = None) -> Spooled:
        """Spool a certificate; LecentralError naming the file if it cannot be written."""
        spooled = Spooled(name, crt, ca, csr_fingerprint(csr_der), ts_expire, now, issuer,
                          self.path(name), issuer_ca)
        self._write(spooled)
        return spooled

    def note_unsaved(self, spooled: Spooled, error: str) -> Spooled:
        """Note in its file why ``spooled`` was not saved (``error``: the database's answer, its
        secrets removed), for the run that saves it; LecentralError naming the file if it
        cannot be written (the certificate stays spooled as it was)."""
        noted = dataclasses.replace(spooled, unsaved=error)
        self._write(noted)
        return noted

    def _write(self, spooled: Spooled) -> None:
        record = {"name": spooled.name, "crt": spooled.crt.decode("ascii"),
                  "ca": spooled.ca.decode("ascii"), "csr_sha256": spooled.csr_sha256,
                  "ts_expire": spooled.ts_expire, "issued_at": spooled.issued_at,
                  "issuer": spooled.issuer,
                  "issuer_ca": list(spooled.issuer_ca) if spooled.issuer_ca else None}
        if spooled.unsaved is not None:
            record["unsaved"] = spooled.unsaved
        path = spooled.path
        try:
            self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            replace_atomically(str(path), json.dumps(record, indent=1).encode("ascii"),
                               os.geteuid(), os.getegid(), FILE_MODE)
        except OSError as exc:
            raise LecentralError(f"cannot spool the certificate of {spooled.name} to {path} "
                                 f"({exc.strerror or exc}); check [renew] state_dir") from None

    def get(self, name: str) -> Spooled | None:
        """The spooled certificate of ``name``, or None; LecentralError if its file is unreadable."""
        path = self.path(name)
        return self.read(path) if path.exists() else None

    def paths(self) -> list[Path]:
        """Every spool file, by name."""
        try:
            return sorted(self.dir.glob("*.json"))
        except OSError as exc:
            raise LecentralError(f"cannot list the spool {self.dir} ({exc.strerror}); check "
                                 "[renew] state_dir") from None

    def read(self, path: Path) -> Spooled:
        """The record in ``path``, validated; LecentralError naming the file otherwise."""
        try:
            data = json.loads(path.read_bytes())
            spooled = Spooled(name=check_name(data["name"]), crt=data["crt"].encode("ascii"),
                              ca=data["ca"].encode("ascii"), csr_sha256=str(data["csr_sha256"]),
                              ts_expire=int(data["ts_expire"]), issued_at=int(data["issued_at"]),
                              issuer=str(data["issuer"]), path=path,
                              issuer_ca=_issuer_ca(data.get("issuer_ca")),
                              unsaved=_unsaved(data.get("unsaved")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, LecentralError) as exc:
            raise LecentralError(f"spool file {path} is unreadable ({type(exc).__name__}: {exc}); "
                                 "look at it, and remove it once its certificate is saved or "
                                 "no longer wanted") from None
        if path != self.path(spooled.name):
            raise LecentralError(f"spool file {path} holds the certificate of {spooled.name}, "
                                 "not of the name it is named after; look at it and remove it")
        return spooled

    def remove(self, spooled: Spooled) -> None:
        """Delete a spooled certificate that is saved now (a failure is logged: the next run
        finds it saved already and removes it then)."""
        try:
            spooled.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("%s: saved, but its spool file %s cannot be removed (%s); the next run "
                      "removes it", spooled.name, spooled.path, exc.strerror)

    def discard(self, spooled: Spooled) -> Path:
        """Move a spooled certificate that must not be saved to spool/discarded/ (kept to look at)."""
        target = self.dir / "discarded" / f"{spooled.path.stem}.{int(time.time())}.json"
        try:
            target.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            os.replace(spooled.path, target)
        except OSError as exc:
            raise LecentralError(f"cannot move the spool file {spooled.path} to {target} "
                                 f"({exc.strerror}); remove it by hand") from None
        return target


def _unsaved(value: object) -> str | None:
    """The spool file's ``unsaved``: the error of the failed save, or None (none was noted)."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"unsaved must be a text, not {value!r}")


def _issuer_ca(value: object) -> tuple[str, str] | None:
    """The spool file's ``issuer_ca``: [name, directory], or None (absent in older files)."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, str) for v in value)):
        raise ValueError(f"issuer_ca must be [name, directory], not {value!r}")
    return (value[0], value[1])
