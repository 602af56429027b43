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


def owner_for(path: str) -> tuple[int, int]:
    """Who a state file lecentral creates at ``path`` should belong to: this process's user,
    except when root creates it in a directory that belongs to another user (``/var/lib/lecentral``,
    made for the ``lecentral`` service user by tmpfiles.d): then that directory's owner and group,
    so that a first step run by hand as root (``lecentral init``, ``account import``, a renew)
    does not leave files the service's units cannot open. That user owns the directory already:
    handing it the file gives it nothing it could not take."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        return uid, gid
    try:
        st = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return uid, gid
    return (st.st_uid, st.st_gid) if st.st_uid != 0 else (uid, gid)


def give_to_owner(path: str) -> None:
    """``chown`` a file this process just created to :func:`owner_for` (a no-op unless root)."""
    uid, gid = owner_for(path)
    if (uid, gid) != (os.geteuid(), os.getegid()):
        os.chown(path, uid, gid, follow_symlinks=False)


def file_access_hint(path: str) -> str:
    """What to check when this user cannot open ``path`` (or create it in its directory): who
    owns the file (or the directory) and who runs lecentral — the usual cause is a first step
    run as root, leaving files that the service user of the units cannot open."""
    import grp

    def group(gid: int) -> str:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)

    for target in (path, os.path.dirname(os.path.abspath(path))):
        try:
            st = os.stat(target)
        except OSError:
            continue
        owner = f"{user_name(st.st_uid)}:{group(st.st_gid)} mode {stat.S_IMODE(st.st_mode):04o}"
        what = "it" if target == path else "its directory"
        return (f"{what} {target} belongs to {owner} and lecentral runs as {user_name()}: give it "
                f"to the user the units run as (chown lecentral: {target}), or run lecentral as "
                "that user")
    return f"check that {path} and its directory exist and are writable by {user_name()}"


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


def user_name(uid: int | None = None) -> str:
    """The name of user ``uid`` (default: the one this process runs as); its number where it has
    none (a container's)."""
    import pwd

    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def this_user() -> str:
    """``user NAME (uid N)``: who this process runs as, for errors about files it cannot read or
    write (the fix is usually the file's ownership for the service user)."""
    return f"user {user_name()} (uid {os.geteuid()})"
