"""A site's webroot as the HTTP-01 issuers use it: validated, challenge files in, and out again.

The ``webroot_path`` column comes from the database, so it is checked before anything is written:
an absolute path, no control characters, an existing directory. Challenge files go to
``<webroot>/.well-known/acme-challenge/``; missing directories are created 0755 and removed again
when the last certificate using them is done (if empty), as certbot does. Each file is created
0644 with O_EXCL and O_NOFOLLOW (a symlink planted in the site's content is never followed for
the file itself) and removed whatever happens (one that cannot be removed is reported to
:mod:`lecentral.leftovers`, and removed by the next renew run). Two certificates of one site may be issued at the
same time: :class:`ChallengeDirs` counts the users of each webroot so that neither removes a
directory the other still writes into.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lecentral import journal, leftovers
from lecentral.errors import IssueError

log = logging.getLogger(__name__)

CHALLENGE_PATH = ".well-known/acme-challenge"
FILE_MODE = 0o644
DIR_MODE = 0o755


def webroot_of(row_name: str, webroot_path: str | None) -> Path:
    """The row's ``webroot_path`` as an existing absolute directory; IssueError naming it otherwise."""
    if not webroot_path or not webroot_path.strip():
        raise IssueError(f"{row_name} has certbot='Y' but no webroot_path: set the site's "
                         "DocumentRoot in webroot_path (lecentral add NAME --certbot --webroot PATH), "
                         "or issue it by DNS-01 (certbot='N')")
    if any(ord(c) < 32 or ord(c) == 127 for c in webroot_path):
        raise IssueError(f"{row_name}: webroot_path {webroot_path!r} contains control characters; "
                         "fix the row's webroot_path")
    path = Path(webroot_path)
    if not path.is_absolute():
        raise IssueError(f"{row_name}: webroot_path {webroot_path!r} is not an absolute path; "
                         "store the site's DocumentRoot as an absolute path")
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as exc:
        raise IssueError(f"{row_name}: webroot_path {path} cannot be examined "
                         f"({exc.strerror}); check its permissions") from None
    if not exists:
        raise IssueError(f"{row_name}: webroot_path {path} does not exist on this host; the site's "
                         "DocumentRoot must be a directory here, served by the web server for "
                         "every name of the certificate (fix webroot_path or create it)")
    if not is_dir:
        raise IssueError(f"{row_name}: webroot_path {path} is not a directory; it must be the "
                         "site's DocumentRoot")
    return path


def http01_names(row_name: str, names: list[str]) -> list[str]:
    """The CSR's names, refusing wildcards (HTTP-01 cannot prove them, RFC 8555 §8.3)."""
    wild = [n for n in names if n.startswith("*.")]
    if wild:
        raise IssueError(f"{row_name}: HTTP-01 cannot prove the wildcard name {', '.join(wild)}; "
                         "issue this certificate by DNS-01 (certbot='N', a sub-zone per name)")
    return names


def _not_writable(webroot: Path, where: Path, exc: OSError) -> IssueError:
    return IssueError(
        f"webroot {webroot} is not writable here: cannot create {where} ({exc.strerror}); "
        f"lecentral must be able to write {webroot}/{CHALLENGE_PATH}/ as user "
        f"{_user()} (fix the permissions, or the row's webroot_path)")


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


@dataclass
class _Lease:
    users: int = 0
    created: list[Path] = field(default_factory=list)


class ChallengeDirs:
    """``.well-known/acme-challenge`` of each webroot in use, created once, removed by the last user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[Path, _Lease] = {}

    @contextlib.contextmanager
    def open(self, webroot: Path) -> Iterator[ChallengeFiles]:
        """The challenge directory of ``webroot``, ready for files; every file written through
        the yielded :class:`ChallengeFiles` is removed on exit, whatever happens."""
        key = Path(os.path.realpath(webroot))
        with self._lock:
            lease = self._leases.setdefault(key, _Lease())
            if lease.users == 0:
                try:
                    lease.created = _make_dirs(webroot)
                except IssueError:
                    del self._leases[key]
                    raise
            lease.users += 1
        files = ChallengeFiles(webroot, lease.created)
        try:
            yield files
        finally:
            files.remove_all()
            with self._lock:
                lease.users -= 1
                if lease.users == 0:
                    del self._leases[key]
                    _remove_dirs(lease.created)


def _make_dirs(webroot: Path) -> list[Path]:
    """Create the missing parts of ``webroot/.well-known/acme-challenge`` (0755); return them."""
    created: list[Path] = []
    where = webroot
    for part in CHALLENGE_PATH.split("/"):
        where = where / part
        try:
            os.mkdir(where, DIR_MODE)
        except FileExistsError:
            if not where.is_dir():
                _remove_dirs(created)
                raise IssueError(f"webroot {webroot}: {where} exists but is not a directory; "
                                 "remove or rename it so that challenge files can be served") from None
            continue
        except OSError as exc:
            _remove_dirs(created)
            raise _not_writable(webroot, where, exc) from None
        os.chmod(where, DIR_MODE)  # whatever the umask: the web server must read it
        created.append(where)
    return created


def _remove_dirs(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError as exc:  # not empty (someone else's file) or gone: leave it
            log.debug("leaving %s: %s", path, exc.strerror)


class ChallengeFiles:
    """The files one certificate wrote under a webroot's challenge directory."""

    def __init__(self, webroot: Path, created: list[Path] | None = None) -> None:
        self.webroot = webroot
        self.directory = webroot / CHALLENGE_PATH
        self.written: list[Path] = []
        self.created = created if created is not None else []  # the directories made for them

    def write(self, token: str, content: str) -> Path:
        """Create ``<dir>/<token>`` holding ``content``, mode 0644; IssueError naming the path."""
        if not token or "/" in token or token.startswith(".") or not token.isascii():
            raise IssueError(f"the CA sent an unusable HTTP-01 token {token[:60]!r}; try again")
        path = self.directory / token
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        # noted first: a process killed before its removal leaves it noted (lecentral/journal.py)
        noted = {"path": str(path), "dirs": [str(d) for d in self.created]}
        journal.note_added(leftovers.HTTP01_FILE, noted)
        try:
            fd = os.open(path, flags, FILE_MODE)
        except OSError as exc:
            # not ours (O_EXCL: one already there is another's): never to be removed for us
            journal.note_removed(leftovers.HTTP01_FILE, noted)
            raise _not_writable(self.webroot, path, exc) from None
        self.written.append(path)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(content)
        return path

    def write_probe(self) -> tuple[str, str]:
        """A random file for a self-check before any CA request; returns (file name, content)."""
        name = f"lecentral-probe-{secrets.token_urlsafe(16)}"
        content = secrets.token_urlsafe(32)
        self.write(name, content)
        return name, content

    def remove(self, file_name: str) -> None:
        """Remove one file written (never raises)."""
        path = self.directory / file_name
        if path in self.written:
            self.written.remove(path)
            self._unlink(path)

    def remove_all(self) -> None:
        """Remove every file written (never raises: a file that stays is reported as a leftover)."""
        for path in self.written:
            self._unlink(path)
        self.written.clear()

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            journal.note_removed(leftovers.HTTP01_FILE, {"path": str(path)})
        except OSError as exc:
            # the renew job stores it and removes it at its next run (lecentral.leftovers)
            leftovers.report(leftovers.HTTP01_FILE, str(path),
                             {"path": str(path), "dirs": [str(d) for d in self.created]},
                             f"cannot remove it: {exc.strerror}")
        else:
            journal.note_removed(leftovers.HTTP01_FILE, {"path": str(path)})
