"""``lecentral``'s stdout that cannot be written (lecentral/cli/output.py), with the real console
script: a reader gone (a broken pipe) keeps the command's own exit status, quietly; a full disk
(/dev/full) is said once on stderr, exit 9 (3, UNKNOWN, for ``lecentral check``), no traceback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_world import Fleet

LECENTRAL = shutil.which("lecentral") or "lecentral"
A, B = "a.example.test", "b.example.test"


@pytest.fixture
def critical(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet whose check is CRITICAL (exit 2): a dead renew timer."""
    fleet = Fleet(tmp_path)
    fleet.issue(A, days=90, age=1)
    fleet.issue(B, days=90, age=1)
    fleet.renew_run(ago=3)
    yield fleet
    fleet.close()


def _with_reader_gone(*args: str) -> tuple[int, str]:
    """Run ``lecentral ARGS`` with stdout a pipe whose reader has gone before it writes."""
    process = subprocess.Popen([LECENTRAL, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=120), err


def test_check_with_its_reader_gone_keeps_its_state(critical: Fleet) -> None:
    """``lecentral check | head -0``: CRITICAL stays 2 (click alone made it 1, WARNING)."""
    assert critical.check()[0] == 2
    for args in (["check"], ["check", "--json"], ["list"]):
        code, err = _with_reader_gone("--config", str(critical.config), *args)
        assert (code, err) == (2 if args[0] == "check" else 0, ""), (args, err)


@pytest.mark.parametrize(("args", "status"), [(["list"], 9), (["list", "--json"], 9),
                                               (["check"], 3), (["check", "--json"], 3)])
def test_a_full_disk_is_said_once_and_exits_with_an_output_error(
        critical: Fleet, args: list[str], status: int) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run([LECENTRAL, "--config", str(critical.config), *args],
                              check=False, stdin=subprocess.DEVNULL, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    own = 2 if args[0] == "check" else 0
    assert done.stderr == ("lecentral: error: the output could not be written to stdout: No space "
                           "left on device; the rest of it was dropped (the command itself ran "
                           f"to its end, exit status {own})\n")


def test_the_guard_keeps_the_stream_it_wraps_open(tmp_path: Path) -> None:
    """A program that made sys.stdout its own file (its only reference) and then runs the
    console script's code: the guard keeps that file open. Before, collecting it closed its
    descriptor, the next file opened (the SQLite database) got that number, and the output
    was written into the database."""
    import gc
    import os
    import sys

    from lecentral.cli import output

    saved = sys.stdout
    sys.stdout = open(tmp_path / "out.txt", "w", encoding="utf-8")  # noqa: SIM115 - the test
    try:
        output.guard_stdout()
        gc.collect()
        other = tmp_path / "database"
        fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            print("the table", flush=True)
            assert os.fstat(fd).st_size == 0
        finally:
            os.close(fd)
        sys.stdout.close()
    finally:
        sys.stdout = saved
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "the table\n"
