"""Local files, switched as a set: backups, temp files, renames, and a journal that survives a crash.

The order of work for one entry (``workdir`` is its private 0700 state directory):

1. ``journal.json`` in state ``staging`` lists every target and the temp file it will use.
2. Each current file is copied into ``backups/<generation>/<role>`` with its owner and mode.
3. Each new file is written to its temp file *in the target's directory* (O_EXCL, O_NOFOLLOW,
   0600 while written), given its owner and mode, and fsynced.
4. The journal moves to ``prepared``; each temp file is renamed over its target; the
   directories are fsynced; the journal moves to ``switched``.

A run killed in step 1-3 leaves the old set untouched: the next run deletes the temp files. Killed
in step 4, the next run finishes the renames (every temp file was complete before ``prepared``
was written), so the set is the new one, and the engine activates it; if a temp file was
deleted meanwhile, the previous set is put back instead and the engine installs again. A
rollback (state ``restoring`` then ``restored``) is just as repeatable. A journal is checked
before it is trusted (a known state, only this entry's files, temps and backups): a recovery
from a foreign or corrupt one could delete or overwrite other files, so the operator decides. A symlink or non-regular file at a target
path is refused before anything is written; renames replace the path itself, never a link's target.

A staged key rotation (``lecentral-install csr --rotate`` wrote ``KEY.next``; the database's
certificate is for it) adds the private key itself to the set: the new key is written over ``KEY``
with the old key's owner and mode, in the same journaled switch as the certificate, so key and
certificate never disagree; the old key goes into the backup generation like any replaced file, and
``KEY.next`` is removed only when the engine commits the new set (a rollback keeps it for the next run).

A service may ask for ``copies``: more paths holding the same bytes as one of the entry's files (or
as its private key), such as Postfix's copies inside its chroot. They are targets like the others,
journaled, backed up, switched and restored with the set, so they never disagree with the originals.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lecentral.errors import InstallError
from lecentral.files_io import (
    TEMP_MARK,
    fsync_dir,
    read_nofollow,
    sha256,
    temp_name,
    unlink_quietly,
    write_new,
)
from lecentral.install.journal import STATES, Journal
from lecentral.interfaces import Installer, IssuedCertificate
from lecentral.records import KEY_BEARING_MAX_MODE, CertEntry

log = logging.getLogger(__name__)



def _written(exc: BaseException, journal: dict[str, Any]) -> str:
    """The file a failed staging write was for: the target a temp file stands for, or a backup."""
    name = getattr(exc, "filename", None)
    if not name:
        return "a file"
    for f in journal["files"]:
        if f["temp"] == name:
            return f"{f['path']} (temp file {os.path.basename(name)})"
    return str(name)


def _uid(value: str) -> int:
    return int(value) if value.isdigit() else pwd.getpwnam(value).pw_uid


def _gid(value: str) -> int:
    return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid


@dataclass
class Planned:
    """One file of the new set: where, what, and with which owner and mode.

    ``role`` names it in the journal and the backups (``cert``, ``combined``, ``combined.copy1``).
    """

    role: str
    path: str
    data: bytes
    uid: int
    gid: int
    mode: int
    existed: bool
    changed: bool


class LocalFiles(Installer):
    """The :class:`~lecentral.interfaces.Installer` for files on this host (see the module doc)."""

    def __init__(self, entry: CertEntry, workdir: Path, keep: int,
                 copies: Mapping[str, str] | None = None) -> None:
        """``copies``: extra absolute path -> the role it copies (a role of ``entry.files``, or
        ``key``); owner and mode as for that role (a copy of the key: the key's, at most 0640)."""
        self.entry = entry
        self.workdir = workdir
        self.keep = keep
        self.journal = Journal(workdir, entry.name)
        self.journal_path = self.journal.path
        self.copies = dict(copies or {})
        self.next_key: str | None = None  # a staged rotation's new key, switched in with the set
        for path, role in self.copies.items():
            if role != "key" and role not in entry.files:
                raise InstallError(f"{entry.name}: copy {path} of {role!r}, which this entry does not write")
            if not path.startswith("/") or path in entry.files.values() or path == entry.key:
                raise InstallError(f"{entry.name}: copy path {path} must be absolute and not one of "
                                   "the entry's own files")

    def targets(self) -> list[tuple[str, str, str]]:
        """(journal role, path, role whose content it gets) for every file of the set."""
        own = [(role, path, role) for role, path in self.entry.files.items()]
        if self.next_key:
            own.append(("key", self.entry.key, "key"))
        return own + [(f"{role}.copy{i}", path, role)
                      for i, (path, role) in enumerate(self.copies.items(), 1)]

    # -- reading -----------------------------------------------------------------------------

    def installed(self) -> bytes | None:
        return read_nofollow(self.entry.cert)

    def missing(self) -> list[str]:
        return [path for _, path, _ in self.targets() if not os.path.lexists(path)]

    def pending(self) -> str | None:
        journal = self._journal()
        return journal["state"] if journal else None

    def _journal(self) -> dict[str, Any] | None:
        """The journal, checked before any step trusts it: a known state, and only this entry's
        files, their temp files beside them and a backup in this entry's workdir (a journal that
        names anything else would have the recovery delete or overwrite it)."""
        journal = self.journal.read()
        if journal is None:
            return None
        if journal["state"] not in STATES:
            raise self.journal.corrupt(f"has unknown state {journal['state']!r}")
        ours = {*self.entry.files.values(), self.entry.key, *self.copies}
        backup = journal.get("backup")
        if not isinstance(backup, str) or os.path.dirname(backup) != str(self.workdir / "backups"):
            raise self.journal.corrupt(f"names the backup {backup!r}, not one of {self.workdir}/backups")
        if journal.get("retire") not in (None, self.entry.next_key):
            raise self.journal.corrupt(f"retires {journal['retire']!r}, not {self.entry.next_key}")
        files = journal.get("files")
        for f in files if isinstance(files, list) else [None]:
            if not self._journaled_file_ok(f, ours):
                path = f.get("path") if isinstance(f, dict) else f
                raise self.journal.corrupt(f"names {path!r}, which is not a file of {self.entry.name} "
                                           "(or not with its own temp file); was the configuration "
                                           "changed after an interrupted run?")
        return journal

    @staticmethod
    def _journaled_file_ok(f: object, ours: set[str]) -> bool:
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in
                                              ("role", "path", "temp", "sha256")):
            return False
        head, tail = os.path.split(f["path"])
        temp_head, temp_tail = os.path.split(f["temp"])
        return (f["path"] in ours and isinstance(f.get("existed"), bool) and temp_head == head
                and temp_tail.startswith(f".{tail}{TEMP_MARK}")
                and re.fullmatch(r"[a-z]+(\.copy[0-9]+)?", f["role"]) is not None)

    def stale(self, new: IssuedCertificate) -> list[str]:
        """Existing files of the set whose bytes differ from what ``new`` would write (the missing
        ones are :meth:`missing`'s)."""
        contents = self._contents(new)
        return [path for _, path, role in self.targets()
                if (data := read_nofollow(path)) is not None and data != contents[role]]

    def stage_key(self, path: str) -> bool:
        self.next_key = path
        return True

    # -- planning ----------------------------------------------------------------------------

    def _contents(self, new: IssuedCertificate) -> dict[str, bytes]:
        parts = {"cert": new.crt, "chain": new.ca}
        if (self.next_key or ("key" in self.entry.combined_order and self.entry.combined)
                or "key" in self.copies.values()):
            parts["key"] = self._key()
        return {
            "cert": new.crt, "chain": new.ca, "fullchain": new.crt + new.ca, "key": parts.get("key", b""),
            "combined": b"".join(parts[p] for p in self.entry.combined_order) if self.entry.combined else b"",
        }

    def _key(self) -> bytes:
        """The key the set holds: the staged new key during a rotation, else the live one."""
        path = self.next_key or self.entry.key
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InstallError(f"cannot read private key {path}: {exc.strerror}") from None
        return data if data.endswith(b"\n") else data + b"\n"

    def _planned(self, new: IssuedCertificate) -> list[Planned]:
        contents = self._contents(new)
        planned = []
        for name, path, role in self.targets():
            if not os.path.isdir(os.path.dirname(path)):
                raise InstallError(f"directory {os.path.dirname(path)} (for {name} {path}) does not "
                                   "exist; create it with the owner and mode the daemon needs")
            current = read_nofollow(path)  # refuses symlinks and non-regular files
            st = os.lstat(path) if current is not None else None
            # a copy of the key keeps the key's own owner and mode (never wider than 0640)
            owner_mode = self._key_owner_mode() if role == "key" else self._owner_mode(role, st)
            planned.append(Planned(name, path, contents[role], *owner_mode,
                                   existed=current is not None, changed=current != contents[role]))
        return planned

    def _key_owner_mode(self) -> tuple[int, int, int]:
        """The live key's owner and mode (a rotation's new key takes them over; the live key
        gone, the new key's own)."""
        path = self.entry.key
        if self.next_key and not os.path.lexists(path):
            path = self.next_key
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InstallError(f"cannot read private key {path}: {exc.strerror}") from None
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & KEY_BEARING_MAX_MODE

    def _owner_mode(self, role: str, st: os.stat_result | None) -> tuple[int, int, int]:
        """Configured owner/group/mode, else what the file had, else the agent's and 0644/0600."""
        entry = self.entry
        key_bearing = entry.key_bearing(role)
        uid = _uid(entry.owner) if entry.owner else (st.st_uid if st else os.geteuid())
        gid = _gid(entry.group) if entry.group else (st.st_gid if st else os.getegid())
        mode = entry.mode_bits
        if mode is None:
            mode = stat.S_IMODE(st.st_mode) if st else (0o600 if key_bearing else 0o644)
        if key_bearing and mode & ~KEY_BEARING_MAX_MODE:
            log.warning("%s: %s holds the private key: mode %04o narrowed to %04o", entry.name,
                        role, mode, mode & KEY_BEARING_MAX_MODE)
            mode &= KEY_BEARING_MAX_MODE
        return uid, gid, mode

    def plan(self, new: IssuedCertificate) -> list[str]:
        lines = []
        for p in self._planned(new):
            if p.changed and p.role == "key":
                lines.append(f"write {p.path} (key: the new key {self.next_key}, uid {p.uid} gid "
                             f"{p.gid} mode {p.mode:04o}; the old key goes to the backups)")
            elif p.changed:
                lines.append(f"write {p.path} ({p.role}, uid {p.uid} gid {p.gid} mode {p.mode:04o})")
            else:
                lines.append(f"keep {p.path} ({p.role} unchanged)")
        return lines

    # -- installing --------------------------------------------------------------------------

    def install(self, new: IssuedCertificate) -> list[str]:
        if self._journal() is not None:
            raise InstallError(f"{self.journal_path} exists: an earlier run is unfinished; run again")
        todo = [p for p in self._planned(new) if p.changed]
        generation = self._new_generation()
        journal: dict[str, Any] = {"state": "staging", "backup": str(generation), "files": [
            {"role": p.role, "path": p.path, "temp": temp_name(p.path), "existed": p.existed,
             "sha256": sha256(p.data)} for p in todo]}
        if self.next_key:
            journal["retire"] = self.next_key  # removed at commit, once the new set is served
        self.journal.save(journal)
        try:
            self._backup(todo, generation)
            for p, f in zip(todo, journal["files"]):
                write_new(f["temp"], p.data, p.uid, p.gid, p.mode)
        except (OSError, KeyError) as exc:
            self._abandon(journal)
            raise InstallError(f"{self.entry.name}: cannot write {_written(exc, journal)}: "
                               f"{getattr(exc, 'strerror', None) or exc}; nothing was changed "
                               "(the previous files are intact)") from None
        journal["state"] = "prepared"
        try:
            self.journal.save(journal)
        except InstallError as exc:
            self._abandon(journal)
            raise InstallError(f"{exc}; nothing was changed (the previous files are intact)") from None
        try:
            self._switch(journal)
        except (OSError, InstallError) as exc:
            self._restore_files(journal)
            self.journal.drop()
            raise self._switch_failure(exc) from None
        return [f["path"] for f in journal["files"]]

    def _switch_failure(self, exc: OSError | InstallError) -> InstallError:
        if isinstance(exc, InstallError):  # the journal could not be written
            return InstallError(f"{exc}; the previous files were put back")
        target = exc.filename2 or exc.filename  # os.replace names the temp file first, the target second
        return InstallError(f"{self.entry.name}: cannot rename the new file into {target}: "
                            f"{exc.strerror}; the previous files were put back; fix that (is it "
                            "immutable, lsattr? a mount point?), then run again")

    def _new_generation(self) -> Path:
        """``backups/<sequence>-<UTC time>``: the sequence orders them even if the clock jumps back."""
        backups = self.workdir / "backups"
        backups.mkdir(mode=0o700, exist_ok=True)
        last = max((int(p.name.split("-", 1)[0]) for p in backups.iterdir()
                    if p.name.split("-", 1)[0].isdigit()), default=0)
        return backups / f"{last + 1:06d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"

    def _backup(self, todo: list[Planned], generation: Path) -> None:
        generation.mkdir(mode=0o700)
        for p in todo:
            if p.existed:
                st = os.lstat(p.path)
                data = read_nofollow(p.path) or b""
                write_new(str(generation / p.role), data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        fsync_dir(str(generation))

    def _abandon(self, journal: dict[str, Any]) -> None:
        """Undo a staging that failed or was interrupted: temps and this backup go, old set stays."""
        for f in journal["files"]:
            unlink_quietly(f["temp"])
        shutil.rmtree(journal["backup"], ignore_errors=True)
        self.journal.drop()

    def _switch(self, journal: dict[str, Any]) -> None:
        for f in journal["files"]:
            if os.path.lexists(f["temp"]):  # else renamed before a crash (recover checked it)
                os.replace(f["temp"], f["path"])
        for directory in {os.path.dirname(f["path"]) for f in journal["files"]}:
            fsync_dir(directory)
        journal["state"] = "switched"
        self.journal.save(journal)

    # -- rolling back, recovering, finishing ---------------------------------------------------

    def restore(self) -> None:
        journal = self._journal()
        if journal is None or journal["state"] not in ("switched", "restoring", "restored"):
            raise InstallError(f"{self.entry.name}: nothing to roll back (no switched set in "
                               f"{self.journal_path})")
        journal["state"] = "restoring"
        self.journal.save(journal)
        try:
            self._restore_files(journal)
        except OSError as exc:
            raise InstallError(f"{self.entry.name}: ROLLBACK FAILED on {exc.filename2 or exc.filename}: "
                               f"{exc.strerror}; "
                               f"the previous files are in {journal['backup']}: copy them back by "
                               "hand") from None
        journal["state"] = "restored"
        self.journal.save(journal)

    def _restore_files(self, journal: dict[str, Any]) -> None:
        generation = Path(journal["backup"])
        for f in journal["files"]:
            unlink_quietly(f["temp"])
            if not f["existed"]:
                unlink_quietly(f["path"])
                continue
            backup = str(generation / f["role"])
            st = os.lstat(backup)
            data = read_nofollow(backup) or b""
            if read_nofollow(f["path"]) == data:
                continue  # restored by an earlier, interrupted attempt
            temp = temp_name(f["path"])
            try:
                write_new(temp, data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
                os.replace(temp, f["path"])
            finally:
                unlink_quietly(temp)
        for directory in {os.path.dirname(f["path"]) for f in journal["files"]}:
            fsync_dir(directory)

    def recover(self) -> str | None:
        journal = self._journal()
        if journal is None:
            return None
        state = journal["state"]
        log.warning("%s: finishing an interrupted run (journal state %s)", self.entry.name, state)
        if state == "staging":
            self._abandon(journal)
            return None
        if state == "prepared":
            return self._finish_switch(journal)
        if state == "restoring":
            self.restore()
            return "restored"
        return str(state)  # switched or restored (_journal checked the state)

    def _finish_switch(self, journal: dict[str, Any]) -> str | None:
        """Rename the remaining temp files; if one is gone (a temp cleaner, a hand) and its target
        is not the new file either, the set cannot be finished: put the previous one back, and
        the run installs again from the database (never a mixed set left in place)."""
        lost = [f["path"] for f in journal["files"] if not os.path.lexists(f["temp"])
                and sha256(read_nofollow(f["path"]) or b"") != f["sha256"]]
        if not lost:
            self._switch(journal)
            return "switched"
        log.warning("%s: the new %s cannot be finished (temp file gone); putting the previous files "
                    "back, then installing again", self.entry.name, ", ".join(lost))
        self._restore_files(journal)
        self.journal.drop()
        return None

    def commit(self) -> None:
        journal = self._journal()
        if journal and journal["state"] == "switched" and journal.get("retire"):
            self._retire(journal["retire"])
        self.journal.drop()
        backups = self.workdir / "backups"
        generations = sorted(backups.iterdir()) if backups.is_dir() else []
        for old in generations[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _retire(self, path: str) -> None:
        """A rotation's new key is live in ``key``: remove ``KEY.next`` (the old key is in the
        backups). Left alone, with a warning, if it is not the key now in place (made again since)."""
        try:
            pending, live = read_nofollow(path), read_nofollow(self.entry.key)
        except InstallError as exc:
            log.warning("%s: %s; %s left in place", self.entry.name, exc, path)
            return
        if pending is None:
            return  # an earlier, interrupted commit removed it
        if live is None or pending.rstrip(b"\n") != live.rstrip(b"\n"):
            log.warning("%s: %s is not the key now in %s (a newer rotation?); left in place",
                        self.entry.name, path, self.entry.key)
            return
        unlink_quietly(path)
        fsync_dir(os.path.dirname(path))
