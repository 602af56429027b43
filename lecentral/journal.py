"""The challenge journal: every challenge record a renew process adds is noted *before* it is added.

An issuer removes what it published in a ``finally`` block, and a removal that fails becomes a
leftover (:mod:`lecentral.leftovers`). Neither runs when the process is killed (``kill -9``, the
OOM killer, ``systemctl stop`` past its timeout, a worker process killed alone): the records it
had added stayed in the sub-zones and nothing knew of them. So, during a renew pass, each
process appends one line per record to its own journal, ``[renew] state_dir``/journal/
``challenges-PID-START.jsonl`` (PID and the process's start time in clock ticks, so a reused pid
is not taken for it; mode 0600 in a 0700 directory):

* ``{"op": "add", "kind": "dns-txt", ...the PublishedTxt fields...}`` before the TXT is added
  (the TSIG key's *name*, never its secret);
* ``{"op": "del", "kind": "dns-txt", "fqdn": ..., "value": ...}`` once it is removed;
* the same for an HTTP-01 file the ``webroot`` issuer writes (``"kind": "http01-file"``,
  ``path`` and the ``dirs`` lecentral made for it), before it is created and once it is removed.

One ``os.write`` per line on a file opened once per pass with ``O_APPEND``: a killed process
loses nothing it wrote (the kernel has it); no fsync, so a *machine* crash may lose the last
lines (the page cache), and the records they named are then not noticed (the one case left to
``lecentral dns check`` and the zone's admin; a torn last line makes the journal refused, loudly).
When a pass ends with every noted record removed, the journal is deleted; otherwise it stays
(each record not removed was also reported as a leftover) until the next run.

The next run, under the renew lock (:func:`lecentral.renew.recovery.clean_journals`), reads every
journal whose process is gone: each record still noted (not removed, not already a stored
leftover) is removed, or becomes a stored leftover (shown by ``check``, alerted, retried); then
the journal is deleted. A journal of a live process (same pid and start time) is never touched:
it is a run between its rounds, or a worker process that outlived its parent and still removes
its records. Two central hosts sharing one ``state_dir`` are not supported (a pid is per host).
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lecentral.errors import ConfigError, LecentralError
from lecentral.host import this_host
from lecentral.leftovers import DNS_TXT, HTTP01_FILE, Leftover, current_name

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
PREFIX = "challenges-"
SUFFIX = ".jsonl"
_NAME = re.compile(r"^challenges-([1-9][0-9]{0,9})-([0-9]{1,20})\.jsonl$")
#: the PublishedTxt fields a dns-txt line holds (checked again by the cleanup before any removal)
TXT_FIELDS = ("name", "fqdn", "zone", "server", "key_name", "value")
#: what an http01-file line holds: the file, and the challenge directories lecentral made for it
FILE_FIELDS = ("path", "dirs")
#: what an "add" line holds besides op, kind and cert, by kind
ADD_FIELDS = {DNS_TXT: TXT_FIELDS, HTTP01_FILE: FILE_FIELDS}
#: what a "del" line holds besides op and kind, by kind
DEL_FIELDS = {DNS_TXT: ("fqdn", "value"), HTTP01_FILE: ("path",)}
_MAX_BYTES = 16 * 1024 * 1024  # a journal this big is not one lecentral wrote


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22), or
    None if it does not exist (or /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def journal_dir(state_dir: str) -> Path:
    """Where the journals are: ``state_dir/journal``."""
    return Path(state_dir) / "journal"


class Journal:
    """This process's journal for one pass (opened at the first record, deleted when clean)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / f"{PREFIX}{os.getpid()}-{process_start(os.getpid()) or 0}{SUFFIX}"
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._open: set[tuple[str, str, str]] = set()
        #: True during a pass: outside one (``lecentral dns check``, a library's own use) nothing
        #: is noted, and the file is not reopened
        self.active = False

    def added(self, kind: str, data: dict[str, Any]) -> None:
        """Note a record about to be added; ConfigError (nothing added then) if impossible."""
        key = _key(kind, data)
        line = (json.dumps({"op": "add", "kind": kind, "cert": current_name(), **data},
                           separators=(",", ":"))
                + "\n").encode("ascii")
        with self._lock:
            try:
                if self._fd is None:
                    self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                       | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
                    os.fchmod(self._fd, FILE_MODE)  # whatever the umask: the reader wants 600
                if os.write(self._fd, line) != len(line):  # a full disk, mid-line
                    raise OSError(28, "short write: the file system is full")
            except OSError as exc:
                raise ConfigError(f"cannot note the challenge record about to be added in the "
                                  f"journal {self.path} ({exc.strerror or exc}); nothing was "
                                  "added; check [renew] state_dir (writable, not full)") from None
            self._open.add(key)

    def removed(self, kind: str, data: dict[str, Any]) -> None:
        """Note a record removed (a failure to note it is logged: the next run removes the
        record again, which finds it gone)."""
        key = _key(kind, data)
        line = (json.dumps(_del_line(key), separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            if key not in self._open or self._fd is None:
                return
            try:
                os.write(self._fd, line)
            except OSError as exc:
                log.warning("cannot note in %s that %s was removed (%s); the next run removes "
                            "it again", self.path, key[1], exc.strerror)
                return
            self._open.discard(key)

    def end_pass(self) -> None:
        """The pass is over: delete the journal if every record noted was removed (else it stays
        for the next run: its records were also reported as leftovers)."""
        with self._lock:
            self.active = False
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if self._open:
                log.info("%s kept: %d challenge record(s) noted there were not removed",
                         self.path, len(self._open))
                return
            try:
                self.path.unlink()
            except OSError as exc:
                log.warning("cannot delete the journal %s (%s); the next run does", self.path,
                            exc.strerror)

    def forget(self) -> None:
        """In a forked worker process: the parent's journal is the parent's (our copy of its
        descriptor is closed; the parent's stays open)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self._open = set()


def _key(kind: str, data: dict[str, Any]) -> tuple[str, str, str]:
    """What names one record: a TXT by owner and value, a file by its path."""
    if kind == HTTP01_FILE:
        return (kind, str(data.get("path", "")), "")
    return (kind, str(data.get("fqdn", "")), str(data.get("value", "")))


def _del_line(key: tuple[str, str, str]) -> dict[str, str]:
    if key[0] == HTTP01_FILE:
        return {"op": "del", "kind": key[0], "path": key[1]}
    return {"op": "del", "kind": key[0], "fqdn": key[1], "value": key[2]}


_active: Journal | None = None
_active_lock = threading.Lock()


def begin_pass(state_dir: str) -> Journal:
    """Start noting this process's records in ``state_dir``/journal (one journal per process:
    a second pass of the same run appends to the same file)."""
    global _active
    with _active_lock:
        wanted = Journal(journal_dir(state_dir))
        if _active is None or _active.path != wanted.path:
            _active = wanted  # else the same file: what an earlier pass left noted stays known
        _active.active = True
        return _active


def end_pass() -> None:
    """The pass of this process is over (see :meth:`Journal.end_pass`)."""
    with _active_lock:
        journal = _active
    if journal is not None:
        journal.end_pass()


def in_child(state_dir: str) -> None:
    """In a freshly forked worker process: its own journal, not the parent's."""
    global _active
    with _active_lock:
        if _active is not None:
            _active.forget()
        _active = Journal(journal_dir(state_dir))
        _active.active = True


def note_added(kind: str, data: dict[str, Any]) -> None:
    """Before adding a challenge record: note it, if a renew pass is running in this process."""
    journal = _active
    if journal is not None and journal.active:
        journal.added(kind, data)


def note_removed(kind: str, data: dict[str, Any]) -> None:
    """After removing a challenge record: note it, if a renew pass is running in this process."""
    journal = _active
    if journal is not None and journal.active:
        journal.removed(kind, data)


# --- reading the journals an earlier process left ------------------------------------------------


@dataclass(frozen=True)
class LeftJournal:
    """A journal of a process that is gone, with the records it added and did not remove."""

    path: Path
    pid: int
    #: each: kind, cert (certs.name) and its fields (ADD_FIELDS), in the order noted
    records: list[dict[str, Any]]
    written: int = 0  # when it was last written to (its mtime): the records are that old or older


def journal_paths(state_dir: str, owner: int | None = None) -> list[Path]:
    """Every entry of the journal directory (none if it does not exist); LecentralError if the
    directory is not lecentral's (a symbolic link, not owned by ``owner``, by default this
    process's user, open to others) or cannot be read."""
    directory = journal_dir(state_dir)
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LecentralError(f"cannot read the journal directory {directory} ({exc.strerror}); "
                             "check [renew] state_dir") from None
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != (os.geteuid() if owner is None else owner)
            or st.st_mode & 0o077):
        raise LecentralError(f"the journal directory {directory} is not lecentral's (a symbolic "
                             f"link, owned by uid {st.st_uid}, or mode {stat.S_IMODE(st.st_mode):o} "
                             f"instead of 700): its journals are not trusted; look at it, then "
                             "fix or remove it")
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        raise LecentralError(f"cannot read the journal directory {directory} ({exc.strerror}); "
                             "check [renew] state_dir") from None


def is_live(path: Path) -> bool:
    """True if the journal's process still runs (same pid, same start time): not to be touched.
    A name lecentral does not write is not live (and is refused by :func:`read_left`)."""
    match = _NAME.match(path.name)
    if match is None:
        return False
    pid, start = int(match.group(1)), match.group(2)
    if Path("/proc/self/stat").exists():
        return process_start(pid) == start
    try:  # no /proc (not Linux): a process with that pid is taken to be it
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def read_left(path: Path, owner: int | None = None) -> LeftJournal:
    """The records a dead process's journal still notes; LecentralError (nothing trusted) if the
    file is not one lecentral wrote: a foreign name, a symbolic link, another owner than
    ``owner`` (by default this process's user), a mode other than 0600, a line that does not
    parse (a machine crash may tear the last line). Only reads."""
    uid = os.geteuid() if owner is None else owner
    match = _NAME.match(path.name)
    if match is None:
        raise LecentralError(f"{path} is not a journal lecentral writes (its name); not "
                             "trusted: look at it and remove it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise LecentralError(f"cannot open the journal {path} ({exc.strerror}: a symbolic "
                             "link?); not trusted: look at it and remove it") from None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != uid
                or stat.S_IMODE(st.st_mode) != FILE_MODE or st.st_nlink != 1):
            raise LecentralError(
                f"the journal {path} is not lecentral's (owned by uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):o}, {st.st_nlink} link(s); expected a file of uid "
                f"{uid}, mode 600): not trusted, nothing removed; look at it and "
                "remove it")
        if st.st_size > _MAX_BYTES:
            raise LecentralError(f"the journal {path} is {st.st_size} bytes, more than lecentral "
                                 "writes: not trusted, nothing removed; look at it and remove it")
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read()
    finally:
        os.close(fd)
    return LeftJournal(path, int(match.group(1)), _records(path, text), int(st.st_mtime))


def _records(path: Path, text: bytes) -> list[dict[str, Any]]:
    noted: dict[tuple[str, str, str], dict[str, Any]] = {}
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no newline at its end: the last write was torn
        lines[-1] = b"\xff"  # made unparsable, so the file is refused below
    for number, raw in enumerate(lines, 1):
        try:
            entry = _entry(json.loads(raw.decode("ascii")))
        except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise LecentralError(f"the journal {path} is corrupt at line {number} ({exc}): not "
                                 "trusted, nothing removed; look at it (the challenge records "
                                 "it names may still be there: lecentral dns check --all), "
                                 "then remove it") from None
        key = _key(entry["kind"], entry)
        if entry.pop("op") == "add":
            noted[key] = entry
        else:
            noted.pop(key, None)
    return list(noted.values())


def _entry(entry: object) -> dict[str, Any]:
    """One line, checked: exactly the fields of its op and kind, each a non-empty text (``dirs``:
    a list of texts)."""
    if not isinstance(entry, dict):
        raise TypeError("not an object")
    kind, op = entry.get("kind"), entry.get("op")
    if kind not in ADD_FIELDS:
        raise ValueError(f"unknown kind {kind!r}")
    if op == "add":
        fields = {"op", "kind", "cert", *ADD_FIELDS[kind]}
    elif op == "del":
        fields = {"op", "kind", *DEL_FIELDS[kind]}
    else:
        raise ValueError(f"op {op!r} is neither add nor del")
    if set(entry) != fields:
        raise ValueError(f"fields {sorted(entry)}, not {sorted(fields)}")
    for name, value in entry.items():
        if name == "dirs":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError("dirs is not a list of texts")
        elif not isinstance(value, str) or not value:
            raise ValueError(f"{name} is not a text")
    return dict(entry)


def remove_left(path: Path) -> None:
    """Delete a journal whose records are all dealt with; LecentralError if it cannot be."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LecentralError(f"cannot delete the journal {path} ({exc.strerror}); its records "
                             "are dealt with: remove it by hand") from None


def leftover_key(leftover: Leftover) -> tuple[str, str, str]:
    """What names a stored leftover's record, as :func:`record_key` names a journal's."""
    if leftover.kind == DNS_TXT:
        return (DNS_TXT, leftover.target.lower().rstrip("."), str(leftover.data.get("value")))
    return (leftover.kind, leftover.target, "")


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """What names a record a journal still notes (:attr:`LeftJournal.records`)."""
    if record["kind"] == DNS_TXT:
        return (DNS_TXT, str(record["fqdn"]).lower().rstrip("."), str(record["value"]))
    return (record["kind"], str(record["path"]), "")


def covered_by(stored: Iterable[Leftover]) -> set[tuple[str, str, str]]:
    """The records that stored leftovers already stand for (the run that could not remove them
    stored them; they are retried as leftovers): a TXT wherever it was stored, a file only if
    stored by this host (another host's journal is not here)."""
    host = this_host()
    return {leftover_key(left) for left in stored if left.kind == DNS_TXT or left.host == host}


# --- looking at the journals without touching them (lecentral check, lecentral doctor) ----------


@dataclass
class JournalSurvey:
    """What the journal directory holds, as a reader that must not change it sees it."""

    directory: Path
    #: journals of gone processes, each with the records it still notes that no stored leftover
    #: stands for (the next lecentral renew removes them); journals with none are left out
    left: list[LeftJournal] = field(default_factory=list)
    #: why a journal (or the directory) is not trusted: the renew job removes nothing it names,
    #: alerts at every run and keeps it for the admin
    refused: list[str] = field(default_factory=list)
    #: why this user cannot look (the directory is the renew user's, mode 700): None if it could
    unreadable: str | None = None

    @property
    def records(self) -> int:
        """How many records the gone processes' journals still note."""
        return sum(len(j.records) for j in self.left)


def survey(state_dir: str, stored: Iterable[Leftover]) -> JournalSurvey:
    """Read every journal of ``state_dir`` as the next renew run would, changing nothing (no
    journal is removed, none is opened for writing): the ones of gone processes that still note
    records (less those ``stored`` leftovers stand for), the ones that run would refuse, or why
    they cannot be read by this user. Root reads them as their owner's (the directory's); any
    other user than the owner cannot read a directory of mode 700."""
    directory = journal_dir(state_dir)
    found = JournalSurvey(directory)
    euid = os.geteuid()
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return found
    except OSError as exc:
        found.unreadable = f"cannot read {directory} ({exc.strerror})"
        return found
    owner = st.st_uid if euid == 0 else euid
    if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o077 and st.st_uid != owner:
        found.unreadable = (f"cannot read {directory}: it belongs to uid {st.st_uid} (mode 700), "
                            f"this command runs as uid {euid}")
        return found
    try:
        paths = journal_paths(state_dir, owner)
    except LecentralError as exc:
        found.refused.append(str(exc))
        return found
    covered = covered_by(stored)
    for path in paths:
        if is_live(path):
            continue  # a run sleeping between rounds, a worker still removing its records
        try:
            left = read_left(path, owner)
        except LecentralError as exc:
            if not os.path.lexists(path):
                continue  # removed since it was listed (the renew that cleaned it up): gone
            found.refused.append(str(exc))
            continue
        records = [r for r in left.records if record_key(r) not in covered]
        if records:
            found.left.append(LeftJournal(left.path, left.pid, records, left.written))
    return found
