"""lecentral/fleet/tempfiles.py's ``append``: how the fleet passes in two processes join the
child's temporary file to the command's (tests/test_fleet_halves.py runs it through the
commands; these are the paths a command reaches only on another kernel or a full disk)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest
from test_store_sqlite_errors import fill, tmpfs

from lecentral.errors import LecentralError
from lecentral.fleet import tempfiles

#: more than the read/write fallback's one-megabyte pieces, not a multiple of them
PAYLOAD = os.urandom((5 << 19) + 17)


def _files(where: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(dst: a few bytes still in its buffer, src: PAYLOAD written and flushed, as the child
    leaves it)."""
    dst = tempfile.TemporaryFile(dir=where)  # noqa: SIM115 - closed by the tests
    dst.write(b"own")
    src = tempfile.TemporaryFile(dir=where)  # noqa: SIM115
    src.write(PAYLOAD)
    src.flush()
    return dst, src


def _content(f: IO[bytes]) -> bytes:
    f.seek(0)
    return f.read()


def test_append_puts_the_other_files_bytes_after_its_own(tmp_path: Path) -> None:
    dst, src = _files(tmp_path)
    with dst, src:
        assert tempfiles.append(dst, src) == 3  # its size before: its buffer was flushed
        assert dst.tell() == 3 + len(PAYLOAD)  # what it writes next goes after them
        dst.write(b"next")
        assert _content(dst) == b"own" + PAYLOAD + b"next"


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                     None], ids=["exdev", "enosys", "einval", "eopnotsupp",
                                                 "no-copy_file_range"])
def test_append_reads_and_writes_where_the_kernel_will_not_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int | None) -> None:
    """Where the kernel refuses copy_file_range for these files (an older kernel, two file
    systems, a file system without it) or Python has none, the bytes are read and written in
    pieces: the same file. A mock: this kernel copies two files of one file system, so its
    refusal is stood in for."""
    if refusal is None:
        monkeypatch.delattr(os, "copy_file_range")
    else:
        def refuse(*args: Any) -> int:
            raise OSError(refusal, os.strerror(refusal))

        monkeypatch.setattr(os, "copy_file_range", refuse)
    dst, src = _files(tmp_path)
    with dst, src:
        assert tempfiles.append(dst, src) == 3
        assert dst.tell() == 3 + len(PAYLOAD)
        assert _content(dst) == b"own" + PAYLOAD


def test_another_copy_error_is_the_commands_not_a_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that is not the kernel's "cannot copy these" (an I/O error) is not papered
    over by reading and writing: the command's error, naming where its temporary files go.
    A mock: no real file here fails with EIO."""
    def broken(*args: Any) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "copy_file_range", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    dst, src = _files(tmp_path)
    with dst, src, pytest.raises(LecentralError) as info:
        tempfiles.append(dst, src)
    message = str(info.value)
    assert f"cannot use a temporary file in {tmp_path}" in message, message
    assert os.strerror(errno.EIO) in message, message


@pytest.mark.parametrize("copy", [True, False], ids=["kernel-copy", "read-write"])
def test_append_on_a_full_file_system_is_the_commands_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: bool) -> None:
    """``$TMPDIR`` full (a real 1 MB tmpfs, filled) while the child's half is appended: the
    command's error, saying no room and where, not a short file taken for the whole."""
    if not copy:
        monkeypatch.delattr(os, "copy_file_range")
    small = tmp_path / "small"
    with tmpfs(small, "1m"):
        monkeypatch.setenv("TMPDIR", str(small))
        dst = tempfile.TemporaryFile(dir=small)  # noqa: SIM115
        src = tempfile.TemporaryFile(dir=tmp_path)  # noqa: SIM115 - the child's: elsewhere
        src.write(PAYLOAD)
        src.flush()
        fill(small)
        with dst, src, pytest.raises(LecentralError) as info:
            tempfiles.append(dst, src)
        message = str(info.value)
        assert f"cannot use a temporary file in {small}" in message, message
        assert os.strerror(errno.ENOSPC) in message, message
        assert "set TMPDIR" in message, message
