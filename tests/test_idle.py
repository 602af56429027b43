"""``renew.processes = "auto"`` forks a second process only where a core is free: measured as
the machine's idle CPU while the command started (lecentral/idle.py), against real busy
processes on every core."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from lecentral import idle
from lecentral.config import CentralConfig
from lecentral.renew import forked

HOG = "while True: pass"


@pytest.fixture
def unmarked() -> Iterator[None]:
    """The module's mark as a library use has it (none), whatever the test did."""
    yield
    idle._mark = None


def a_pass(processes: int | str = "auto") -> SimpleNamespace:
    """What :func:`forked.processes` reads of a renew job: its configuration and its store."""
    config = CentralConfig()
    renew = dataclasses.replace(config.renew, processes=processes)
    return SimpleNamespace(config=dataclasses.replace(config, renew=renew), store=object())


def test_not_marked_it_is_not_measured(unmarked: None) -> None:
    """A library's use (tests, another program): no mark, "auto" goes by the cores alone."""
    assert idle.idle_cores() is None
    cores = len(os.sched_getaffinity(0))
    assert forked.processes(a_pass(), 100) == (2 if cores >= 2 else 1)  # type: ignore[arg-type]


def test_right_after_the_mark_it_is_not_measured_yet(unmarked: None) -> None:
    idle.mark()
    assert idle.idle_cores() is None  # a few clock ticks would say nothing


def test_the_idle_cores_are_those_of_the_machine(unmarked: None) -> None:
    idle.mark()
    time.sleep(0.3)
    measured = idle.idle_cores()
    assert measured is not None and 0 <= measured <= (os.cpu_count() or 1) + 0.5


def test_with_every_core_busy_auto_stays_in_one_process(unmarked: None) -> None:
    """A busy process on every core while the command starts: no core is free, so a second
    renew process would only take CPU from them; a number of processes set is kept."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)  # the hogs running
        idle.mark()
        time.sleep(0.5)
        measured = idle.idle_cores()
        assert measured is not None and measured < forked.IDLE_FOR_A_SECOND
        assert forked.processes(a_pass(), 100) == 1  # type: ignore[arg-type]
        assert forked.processes(a_pass(2), 100) == 2  # type: ignore[arg-type]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_a_retry_round_counts_its_own_sleeping_core_as_not_free(unmarked: None) -> None:
    """A ``--rounds`` retry measures the end of its sleep (``mark(asleep=True)``): the core this
    process leaves idle while it sleeps is the one it will use, not a free one. Busy processes
    on every other core: the only idle core is its own, so "auto" stays in one process."""
    others = (os.cpu_count() or 1) - 1
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(others)]
    try:
        time.sleep(0.3)  # the hogs running
        idle.mark(asleep=True)
        time.sleep(0.5)
        measured = idle.idle_cores()
        assert measured is not None and measured < forked.IDLE_FOR_A_SECOND
        assert forked.processes(a_pass(), 100) == 1  # type: ignore[arg-type]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("due", [1, 8])
def test_a_pass_of_at_most_workers_certificates_is_one_process(unmarked: None, due: int) -> None:
    assert forked.processes(a_pass(2), due) == 1  # type: ignore[arg-type]


def test_the_console_script_marks_its_start() -> None:
    code = ("import sys\nsys.argv = ['lecentral', '--version']\n"
            "import atexit\nfrom lecentral import idle\n"
            "atexit.register(lambda: print('marked', idle._mark is not None, file=sys.stderr))\n"
            "from lecentral.cli.start import central\ncentral()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and "marked True" in result.stderr


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup file system as the kernel shows it (the files written here: no kernel needed to
    read them), and a /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self").write_text(membership)
    return root, tmp_path / "self"


def test_a_v2_quota_is_the_smallest_along_the_path(tmp_path: Path) -> None:
    """systemd's CPUQuota=150% on the unit, a container's 4 cores above it: 1.5 cores."""
    root, self_ = cgroup_tree(tmp_path, "0::/system.slice/lecentral-renew.service\n", {
        "cgroup.controllers": "cpu io memory\n",
        "system.slice/cpu.max": "400000 100000\n",
        "system.slice/lecentral-renew.service/cpu.max": "150000 100000\n"})
    assert idle.quota_cores(root, self_) == 1.5


def test_no_quota_is_none(tmp_path: Path) -> None:
    root, self_ = cgroup_tree(tmp_path, "0::/user.slice\n", {
        "cgroup.controllers": "cpu\n", "user.slice/cpu.max": "max 100000\n"})
    assert idle.quota_cores(root, self_) is None
    assert idle.quota_cores(root, tmp_path / "missing") is None


def test_a_v1_quota_is_read_from_the_cpu_controller(tmp_path: Path) -> None:
    root, self_ = cgroup_tree(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n"})
    assert idle.quota_cores(root, self_) == 1.0


def test_this_machines_quota_is_read_without_error() -> None:
    quota = idle.quota_cores()
    assert quota is None or quota > 0
