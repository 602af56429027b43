"""File primitives: read without following links, write new files durably, replace atomically,
fsync directories (the agent's file sets, the renew spool, dns zone). Every error names the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat

from lecentral.errors import InstallError

#: in the names of the agent's temp files, so that a crash's leftovers are recognised
TEMP_MARK = ".lecentral-"


def read_nofollow(path: str) -> bytes | None:
    """The bytes of regular file ``path``, ``None`` if it does not exist; a symlink is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InstallError(f"{path} is a symbolic link; refusing to read or replace it "
                               "(point the configuration at the real file)") from None
        if exc.errno == errno.ENXIO:  # a socket: open() answers "No such device or address"
            raise not_regular(path) from None
        raise InstallError(f"cannot read {path}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # checked before fdopen, which names a directory by its fd number
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InstallError(f"{path} is a directory; the configuration must name the file "
                               "itself (for example .../cert.pem), not its directory")
        raise not_regular(path)
    with os.fdopen(fd, "rb") as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise InstallError(f"cannot read {path}: {exc.strerror}") from None


def not_regular(path: str) -> InstallError:
    return InstallError(f"{path} is not a regular file (a FIFO, a socket, a device?); refusing to "
                        "replace it: remove it, or point the configuration at another path")


def fsync_dir(path: str) -> None:
    """Make renames and unlinks in directory ``path`` durable (``""``: the current directory,
    which is what ``os.path.dirname`` gives for a relative file name)."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """Create ``path`` (which must not exist) with ``data``, owner and mode, and fsync it.

    An OSError always names ``path`` (os.write's ENOSPC names no file by itself).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except OSError as exc:
        exc.filename = exc.filename or path
        raise
    finally:
        os.close(fd)


def replace_atomically(path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path`` (for the journal)."""
    temp = temp_name(path)
    try:
        write_new(temp, data, uid, gid, mode)
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)
        raise
    fsync_dir(os.path.dirname(path))


def temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{TEMP_MARK}{secrets.token_hex(4)}.tmp")


def unlink_quietly(path: str) -> None:
    # a read-only file system answers EROFS, not ENOENT, for a file that is not there
    if not os.path.lexists(path):
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def user_name() -> str:
    """The name of the user this process runs as (its uid where it has none: a container's)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def this_user() -> str:
    """``user NAME (uid N)``: who this process runs as, for errors about files it cannot read or
    write (the fix is usually the file's ownership for the service user)."""
    return f"user {user_name()} (uid {os.geteuid()})"
