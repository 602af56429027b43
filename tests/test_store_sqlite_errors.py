"""SQLite's own errors get their own hints: a full file system, a write lock another process holds.

Real parts: an SQLite file on a small tmpfs that is really full (the tests run as root to mount
it), and a second process (the sqlite3 shell) really holding the write lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lecentral_testing.pki import make_csr

from lecentral.certificates import Csr
from lecentral.errors import StoreError
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore
from lecentral.store.sqlitehint import BUSY_TIMEOUT


def new_row(name: str) -> CertRow:
    csr = Csr.load(make_csr([name])[0])
    return CertRow(name=name, csr=csr.pem, md5_modulus=csr.md5_modulus, ts_expire=1,
                   ts_last_update=1, count_fail_update=0)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[None]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(directory: Path) -> None:
    """Write a file until the file system is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_file_system_says_free_space_not_server_up(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    with tmpfs(mnt, "1m"):
        path = mnt / "lecentral.db"
        store = SqlStore(f"sqlite:///{path}")
        store.init_schema()
        store.add(new_row("kept.example.test"))
        fill(mnt)
        try:
            with pytest.raises(StoreError) as info:
                for i in range(50):  # the first pages may still fit in the file's free pages
                    store.add(new_row(f"n{i}.example.test"))
            message = str(info.value)
            assert "database or disk is full" in message, message
            assert f"free space on the file system of {path} (df -h {mnt}: " in message, message
            assert "server is up" not in message, message
            os.unlink(mnt / "filler")
            assert store.get("kept.example.test") is not None  # nothing lost
        finally:
            store.close()


def test_locked_database_names_the_holder_and_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "lecentral.db"
    store = SqlStore(f"sqlite:///{path}")
    store.init_schema()
    shell = shutil.which("sqlite3")
    assert shell, "the sqlite3 shell (Debian package sqlite3) is needed"
    holder = subprocess.Popen([shell, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdin and holder.stdout
        holder.stdin.write("BEGIN IMMEDIATE;\nSELECT 'held';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.add(new_row("www.example.test"))
        assert time.monotonic() - started >= BUSY_TIMEOUT - 0.5  # it did wait
        message = str(info.value)
        assert "database is locked" in message, message
        assert f"another process holds a write lock on {path} (lecentral waits up to " \
               f"{BUSY_TIMEOUT:g} s for it): processes with it open: {holder.pid} (sqlite3)" \
               in message, message
        assert "server is up" not in message, message
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait()
    store.add(new_row("www.example.test"))  # the lock gone, the same call works
    assert store.get("www.example.test") is not None
    store.close()
