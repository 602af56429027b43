"""The fleet passes' temporary files (lecentral/fleet/spool.py, onepass.py, halves.py): where
they go (``$TMPDIR`` as set), their errors as the command's, and closing and appending them.

The files are anonymous (``tempfile.TemporaryFile``: unlinked as soon as they are made), so
they go on every path, an error, Ctrl-C or a kill included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import IO, Any

from lecentral.errors import LecentralError


def append(dst: IO[Any], src: IO[Any]) -> int:
    """Append the bytes of file ``src`` (written by another process: its size is the file's)
    to ``dst`` (everything collected flushed first), copied by the kernel where it can;
    ``dst``'s size before. For :meth:`lecentral.fleet.spool.MetricsPass.merge` and
    :meth:`lecentral.fleet.onepass.OnePass.merge`."""
    try:
        dst.flush()
        at = os.fstat(dst.fileno()).st_size
        count = os.fstat(src.fileno()).st_size
        done = 0
        while done < count:
            try:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), count - done,
                                            done, at + done)
            except (AttributeError, OSError) as exc:  # no copy_file_range here: read, write
                if isinstance(exc, OSError) and exc.errno not in _NO_KERNEL_COPY:
                    raise
                copied = os.pwrite(dst.fileno(), os.pread(src.fileno(), min(count - done,
                                                                               1 << 20), done),
                                   at + done)
            if not copied:
                raise OSError(errno.EIO, f"{src} ended at {done} of {count} bytes")
            done += copied
        dst.seek(0, os.SEEK_END)  # (the file object's position: after what was appended)
    except OSError as exc:
        raise temp_error(exc) from None
    return at


#: copy_file_range's errors that only say the kernel cannot copy these files
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                             errno.EBADF})


def discard(f: IO[Any]) -> None:
    """Close an anonymous temporary file whose contents are no longer wanted; its buffer's
    failed write (a full disk) is not an error then."""
    try:
        f.close()
    except OSError:
        with contextlib.suppress(OSError):
            f.close()  # the first close failed in its flush: this one closes the descriptor


def temp_dir() -> str | None:
    """``$TMPDIR`` when it is set, else None (``tempfile``'s choice). Given to ``tempfile`` as
    its ``dir``: left to itself, ``tempfile`` skips a ``$TMPDIR`` it cannot write to and falls
    back to ``/tmp``, ``/var/tmp`` or the working directory, silently; an admin who set it to
    a file system with room (``/tmp`` a small tmpfs) must get an error instead (a new-user
    trial found the fallback)."""
    return os.environ.get("TMPDIR") or None


def temp_error(exc: OSError) -> LecentralError:
    """An error of a temporary file, as the error of the command (exit 1), naming where."""
    where = temp_dir()
    if where is None:
        try:
            where = tempfile.gettempdir()
        except OSError:  # none usable: tempfile tried /tmp, /var/tmp, /usr/tmp and the cwd
            where = "any temporary directory (TMPDIR is not set; /tmp, /var/tmp, /usr/tmp tried)"
    return LecentralError(
        f"cannot use a temporary file in {where}: {exc.strerror or exc}; "
        "nothing was written (a --textfile is left as it was): make it a writable directory "
        "with room, or set TMPDIR to one")
