"""The console scripts' start (lecentral/cli/start.py, lecentral/cli/startup.py): no cyclic GC while the modules load, and
never a command left without it."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lecentral.cli import startup as start


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave the collector as it was (on, nothing frozen) whatever the test did."""
    yield
    start._paused = False
    gc.enable()
    gc.unfreeze()


def test_started_resumes_the_collector_and_freezes_what_was_loaded(collector: None) -> None:
    start.pause()
    assert not gc.isenabled()
    start.started()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_started_without_a_pause_changes_nothing(collector: None) -> None:
    """Imported by a test or another program, the CLI leaves the collector alone."""
    start.started()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_the_backstop_resumes_the_collector_of_a_command_that_never_started(
        collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(start, "BACKSTOP", 0.05)
    start.pause()
    deadline = time.monotonic() + 5
    while not gc.isenabled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gc.isenabled()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The console script's entry point in a fresh interpreter, saying at exit whether the
    collector runs."""
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('gc', gc.isenabled(), file=sys.stderr))\n"
            f"sys.argv = {['lecentral', *argv]!r}\n"
            "from lecentral.cli.start import central\n"
            "central()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_command_that_opened_the_store_runs_with_the_collector(tmp_path: Path) -> None:
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n')
    assert _run("--config", str(config), "init").returncode == 0
    result = _run("--config", str(config), "list")
    assert result.returncode == 0, result.stderr
    assert "gc True" in result.stderr


def test_a_command_ending_before_its_start_leaves_it_paused(tmp_path: Path) -> None:
    """``--version`` ends before any start (and before the backstop): nothing ran without it."""
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert "lecentral, version" in result.stdout
    assert "gc False" in result.stderr
