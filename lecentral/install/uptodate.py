"""The agent's memory of what it found up to date: a no-op run parses no certificate.

A run that finds an entry up to date has parsed the database's certificate, the installed one,
the chain and the private key to say so. Next run, when nothing it read has changed, the answer
is the same: this cache, ``STATE_DIR/uptodate.json``, remembers per entry a SHA-256 over
everything the decision read, and the answer ("up to date (expires ...)").

What the fingerprint covers (any change is a miss, and the full compare runs):

* the entry as configured (every field of the ``[[cert]]`` after merging the service's
  defaults), the lecentral version and this file's format;
* the database row, every column as validated (:class:`CertRow`, its problems included);
* ``lstat`` of every file of the set, of the key and of ``KEY.next`` (present or not): inode,
  size, mode, owner, mtime and ctime in nanoseconds. A file changed less than
  :data:`RACY_SECONDS` ago is not trusted to show its next change in its times (a rewrite in
  the same clock tick keeps them), so such an entry is not remembered (as git does for its index);
* the certificate's expiry: a hit after it is a miss (the compare then says it expired).

Only :class:`~lecentral.install.fileset.LocalFiles` sets are remembered (a plugin's own installer
may read what no ``lstat`` here sees). The file is trusted only if it is a regular file owned by
this user and writable by no one else; anything else about it (unreadable, not JSON, another
format, a wrong type anywhere) makes the whole cache ignored and rewritten, never believed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral import __version__
from lecentral.files_io import replace_atomically

if TYPE_CHECKING:
    from lecentral.install.fileset import LocalFiles
    from lecentral.records import CertEntry
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

CACHE_FILE = "uptodate.json"
FORMAT = "lecentral-install uptodate 1"
#: files changed this recently are not remembered (their next change may keep the same times)
RACY_SECONDS = 2
MAX_BYTES = 4 << 20


class UpToDateCache:
    """``uptodate.json`` of one state directory: load once, look up, remember, save once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CACHE_FILE
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False
        self.ignored: str | None = None  # why the file on disk was not believed
        self._load()

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._ignore(f"cannot be opened ({exc.strerror})")
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self._ignore("is not a regular file")
                return
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                self._ignore("is not owned by this user alone (owner or mode)")
                return
            if info.st_size > MAX_BYTES:
                self._ignore("is too big")
                return
            data = os.read(fd, MAX_BYTES + 1)
        except OSError as exc:
            self._ignore(f"cannot be read ({exc.strerror})")
            return
        finally:
            os.close(fd)
        entries = _parse(data)
        if entries is None:
            self._ignore("is not a cache of this lecentral-install (corrupt or another format)")
            return
        self.entries = entries

    def _ignore(self, why: str) -> None:
        self.ignored = why
        self.changed = True  # rewritten at the end of the run
        log.info("%s %s: ignored; every certificate is compared in full", self.path, why)

    # -- the fingerprint ---------------------------------------------------------------------------

    def fingerprint(self, entry: CertEntry, row: CertRow, installer: LocalFiles) -> str | None:
        """SHA-256 over what the up-to-date decision reads; None when it must not be remembered."""
        digest = hashlib.sha256()
        digest.update(f"{FORMAT}\0{__version__}\0{entry!r}\0".encode())
        digest.update(repr(tuple(getattr(row, f.name) for f in fields(row))).encode())
        paths = {path for _, path, _ in installer.targets()} | {entry.key, entry.next_key}
        racy = time.time_ns() - RACY_SECONDS * 1_000_000_000
        for path in sorted(paths):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                digest.update(f"\0{path}\0absent".encode())
                continue
            except OSError:
                return None
            if st.st_mtime_ns > racy or st.st_ctime_ns > racy:
                return None
            digest.update(f"\0{path}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mode}:{st.st_uid}:"
                          f"{st.st_gid}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode())
        return digest.hexdigest()

    # -- look up and remember ---------------------------------------------------------------------

    def lookup(self, entry_id: str, fingerprint: str, now: int) -> str | None:
        """The remembered up-to-date reason, if ``fingerprint`` is the remembered one and the
        certificate has not expired since; else None."""
        known = self.entries.get(entry_id)
        if known is None or known["fingerprint"] != fingerprint or known["not_after"] <= now:
            return None
        return str(known["reason"])

    def remember(self, entry_id: str, fingerprint: str, not_after: int, reason: str) -> None:
        new = {"fingerprint": fingerprint, "not_after": not_after, "reason": reason}
        if self.entries.get(entry_id) != new:
            self.entries[entry_id] = new
            self.changed = True

    def forget(self, entry_id: str) -> None:
        if self.entries.pop(entry_id, None) is not None:
            self.changed = True

    def save(self, keep: set[str]) -> None:
        """Write the cache if it changed (entries not in ``keep``, the configured ids, dropped);
        a failure costs only the next run's speed, so it is logged, not raised."""
        for gone in set(self.entries) - keep:
            self.forget(gone)
        if not self.changed:
            return
        data = json.dumps({"format": FORMAT, "entries": self.entries}, indent=1, sort_keys=True)
        try:
            replace_atomically(str(self.path), data.encode() + b"\n", os.geteuid(), os.getegid(),
                               0o600)
        except OSError as exc:
            log.warning("could not write %s (%s); the next run compares every certificate in full",
                        self.path, exc.strerror or exc)
        self.changed = False


def _parse(data: bytes) -> dict[str, dict[str, Any]] | None:
    """The entries of a cache file, or None if anything in it is not as written by :meth:`save`."""
    try:
        top = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(top, dict) or top.get("format") != FORMAT or set(top) != {"format", "entries"} \
            or not isinstance(top["entries"], dict):
        return None
    for entry_id, known in top["entries"].items():
        if not isinstance(entry_id, str) or not isinstance(known, dict) \
                or set(known) != {"fingerprint", "not_after", "reason"}:
            return None
        fingerprint, not_after, reason = known["fingerprint"], known["not_after"], known["reason"]
        if not (isinstance(fingerprint, str) and len(fingerprint) == 64
                and all(c in "0123456789abcdef" for c in fingerprint)):
            return None
        if not isinstance(not_after, int) or isinstance(not_after, bool) or not_after <= 0:
            return None
        if not isinstance(reason, str) or not reason.startswith("up to date"):
            return None
    return top["entries"]
