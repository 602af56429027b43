"""``lecentral metrics``, ``fleet --json`` and ``fleet`` reading ``certs`` in two processes
(issue 16: lecentral/fleet/halves.py): on SQLite, above ``FORK_ABOVE`` rows (here: any) a
forked child reads the names from the middle one on into a twin of the pass, this process the
others; the output must be the bytes of one process's pass, whatever the rows; a child that
does not give its half leaves it to this process; no child or temporary file outlives the
command, however it ends. MariaDB and PostgreSQL read in one transaction: no child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from test_fleet_onepass import _Taken, odd_world, pass_of, recorded_temporary_files
from test_fleet_split import (
    escaped_world,
    orphan_world,
    plain_world,
    separator_world,
    upper_world,
    world,
)

from lecentral.fleet import halves, onepass, spool, tempfiles, textpass

COMMANDS = (("metrics",), ("fleet", "--json"), ("fleet",))


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """A SQLite fleet whose commands all see one second (their outputs are compared)."""
    f = _frozen(Fleet(tmp_path), monkeypatch)
    yield f
    f.close()


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def any_fleet(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """The same on each database."""
    url = None
    if request.param != "sqlite":
        url = request.getfixturevalue("mariadb_url" if request.param == "mariadb"
                                      else "postgres_url")
    f = _frozen(Fleet(tmp_path, url), monkeypatch)
    yield f
    f.close()


def _frozen(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.names

    for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
        monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
    return fleet


class _Children:
    """The children forked (their pids) and the twins' work merged here (spied on)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pids: list[int] = []
        self.merged = 0
        real_init = halves.OtherHalf.__init__

        def init(this: halves.OtherHalf, pid: int, *args: Any) -> None:
            self.pids.append(pid)
            self.middles.append(args[-1])
            real_init(this, pid, *args)

        monkeypatch.setattr(halves.OtherHalf, "__init__", init)
        self.middles: list[Any] = []
        for cls in (onepass.OnePass, spool.MetricsPass):  # (TextPass's calls OnePass's)
            real = cls.__dict__["merge"]

            def merge(this: Any, twin: Any, state: Any, real: Any = real) -> None:
                self.merged += 1
                real(this, twin, state)

            monkeypatch.setattr(cls, "merge", merge)

    def all_reaped(self) -> bool:
        """True if no child forked is left (each was waited for: no zombie)."""
        for pid in self.pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            return False
        return True


def _outputs(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, fork_above: int,
             commands: tuple[tuple[str, ...], ...] = COMMANDS) -> list[bytes]:
    monkeypatch.setattr(halves, "FORK_ABOVE", fork_above)
    found = []
    for args in commands:
        result = fleet.run(*args)
        assert result.exit_code == 0, (args, result.output)
        found.append(result.stdout_bytes)
    return found


@pytest.mark.parametrize("made", [world, plain_world, upper_world, odd_world, orphan_world,
                                  escaped_world, separator_world],
                         ids=["world", "plainly-ok", "upper-case", "odd", "orphans", "escaped",
                              "separators"])
def test_two_processes_write_the_bytes_of_one(fleet: Fleet, made: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    made(fleet)
    one = _outputs(fleet, monkeypatch, 10 ** 9)
    children = _Children(monkeypatch)
    spied = _Taken(monkeypatch)
    for args, alone in zip(COMMANDS, one, strict=True):
        merged, spied.taken = children.merged, 0
        [two] = _outputs(fleet, monkeypatch, 0, (args,))
        assert two == alone, args
        assert children.merged == merged + 1, args  # forked, and the child's half used
        if made in (plain_world, odd_world, escaped_world):  # and the pass stood
            assert spied.taken >= 20, args
    assert len(children.pids) == len(COMMANDS)
    assert children.all_reaped()


def test_a_name_in_each_half_that_the_judge_files_under_one_key(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ZZZ-CASE.split.example.test`` sorts before the middle name (capitals before small
    letters), ``zzz-case.split.example.test`` after it: each half reads one, and the output
    is one process's (the judge files both under one key)."""
    from sqlalchemy import update

    from lecentral.store.schema import certs

    plain_world(fleet)
    for name in ("yyy-case.split.example.test", "zzz-case.split.example.test"):
        cert = fleet.issue(name, age=2)
        fleet.report("web1", name, cert, cert)
    with fleet.store.transaction("two spellings") as conn:
        conn.execute(update(certs).where(certs.c.name == "yyy-case.split.example.test")
                     .values(name="ZZZ-CASE.split.example.test"))
    one = _outputs(fleet, monkeypatch, 10 ** 9)
    children = _Children(monkeypatch)
    two = _outputs(fleet, monkeypatch, 0)
    assert one == two
    assert children.pids and children.all_reaped()
    assert all("ZZZ-CASE.split.example.test" < str(m) <= "zzz-case.split.example.test"
               for m in children.middles), children.middles


def _exits_at_once(*args: Any) -> None:
    os._exit(1)


def _never_done(*args: Any) -> None:
    time.sleep(60)
    os._exit(0)


@pytest.mark.parametrize("how", ["exit", "slow"])
def test_a_child_that_does_not_give_its_half_leaves_it_here(
        fleet: Fleet, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that ends without its half (stood in for by a child ending at once: an error,
    a kill), or one not done when this process has waited for it (stood in for by one that
    sleeps, with a short patience): this process reads that half itself, the output is one
    process's, the child is killed and waited for."""
    plain_world(fleet)
    one = _outputs(fleet, monkeypatch, 10 ** 9)
    children = _Children(monkeypatch)
    monkeypatch.setattr(halves, "_child", _exits_at_once if how == "exit" else _never_done)
    monkeypatch.setattr(halves, "patience", lambda own: 0.5)
    started = time.monotonic()
    two = _outputs(fleet, monkeypatch, 0)
    assert one == two
    assert children.pids and children.merged == 0
    assert children.all_reaped()
    assert time.monotonic() - started < 30  # (no child waited for to its end)


def test_no_child_on_a_database_server(any_fleet: Fleet,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB and PostgreSQL read the pass in one transaction (one snapshot): no child there,
    whatever the table's size; SQLite forks."""
    plain_world(any_fleet)
    children = _Children(monkeypatch)
    _outputs(any_fleet, monkeypatch, 0)
    assert bool(children.pids) == any_fleet.url.startswith("sqlite")


def test_no_room_for_the_twins_files_leaves_every_row_here(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The twin's temporary files cannot be made (stood in for by the error they raise: a
    $TMPDIR that fills up just then cannot be timed): no child, this process reads every row,
    the output is one process's."""
    plain_world(fleet)
    one = _outputs(fleet, monkeypatch, 10 ** 9)
    children = _Children(monkeypatch)

    def no_room(self: Any) -> Any:
        raise tempfiles.temp_error(OSError(28, "No space left on device"))

    for cls in (onepass.OnePass, textpass.TextPass, spool.MetricsPass):
        monkeypatch.setattr(cls, "twin", no_room)
    assert _outputs(fleet, monkeypatch, 0) == one
    assert children.pids == []


@pytest.mark.parametrize("args", COMMANDS)
def test_ctrl_c_leaves_no_child_and_no_file(fleet: Fleet, args: tuple[str, ...],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of this process's half: the child is killed and waited for, every
    temporary file (the twin's and the child's hand-over included) closed."""
    plain_world(fleet)
    monkeypatch.setattr(halves, "FORK_ABOVE", 0)
    children = _Children(monkeypatch)
    made = recorded_temporary_files(monkeypatch)
    cls = pass_of(args)
    real_take = cls.take
    seen: list[Any] = []

    def take(self: Any, row: Any, fp: Any) -> bool:
        seen.append(row)
        if len(seen) == 3 and os.getpid() == parent:
            raise KeyboardInterrupt
        return bool(real_take(self, row, fp))

    parent = os.getpid()
    monkeypatch.setattr(cls, "take", take)
    result = fleet.run(*args)
    assert result.exit_code != 0
    assert children.pids and children.all_reaped()
    assert made and all(f.closed for f in made)


def test_no_child_where_its_connection_would_see_another_database(tmp_path: Path) -> None:
    """SQLite in memory: a child's own connection would open an empty database (its half
    silently missing): no fork. A SQLite file: a fork, where there are two cores."""
    from lecentral.store.sql import SqlStore

    memory = SqlStore("sqlite://")
    assert not halves.usable(memory)
    memory.close()
    Fleet(tmp_path).close()
    on_disk = SqlStore(f"sqlite:///{tmp_path / 'lecentral.db'}")
    assert halves.usable(on_disk) == (halves._cores() >= 2)
    on_disk.close()


def test_a_mixed_certificate_with_a_row_of_another_spelling_is_judged_in_full(
        any_fleet: Fleet) -> None:
    """A certificate with a current and a stale target (read again after the pass, by its
    stored name: through the tables' keys) and another ``certs`` row the judge files under
    the same key (upper case): the view is judged in full, as ``--notify``'s is, not from
    the one row of the exact name."""
    from sqlalchemy import update

    from lecentral.config import RenewConfig
    from lecentral.store.schema import certs

    fleet = any_fleet
    plain_world(fleet)
    name = "mixed-case.split.example.test"
    cert = fleet.issue(name, age=2)
    old = fleet.cert(name, days=90, age=80)
    fleet.report("web1", name, cert, cert)
    fleet.report("web2", name, old, old, ago=5)
    other = fleet.issue("other-case.split.example.test", age=2)
    fleet.report("web3", "other-case.split.example.test", other, other)
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    with fleet.store.transaction("another spelling") as conn:
        conn.execute(update(certs).where(certs.c.name == "other-case.split.example.test")
                     .values(name=name.upper()))
    for args in (("fleet", "--json"), ("fleet",)):
        split = fleet.run(*args)
        full = fleet.run(*args, "--notify")
        assert split.exit_code == full.exit_code == 0, split.output
        assert split.stdout == full.stdout, args


#: ``lecentral fleet --json`` forking on any table, each row taken slowly (the halves last
#: seconds: time to send a signal while both processes run)
SLOW_FLEET = """
import sys, time
from lecentral.fleet import halves, onepass
halves.FORK_ABOVE = 0
real = onepass.OnePass.take
def take(self, row, fp):
    time.sleep(0.5)
    return real(self, row, fp)
onepass.OnePass.take = take
from lecentral.cli.start import central
sys.argv = ["lecentral", "--config", sys.argv[1], "fleet", "--json"]
central()
"""


def _gone(pid: int) -> bool:
    """True if process ``pid`` has ended (gone, or a zombie nobody waits for here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_the_child_ends_with_the_command(fleet: Fleet, how: str) -> None:
    """The console script's code in its own process, its child forked: Ctrl-C (SIGINT to the
    process group, as a terminal sends it), SIGTERM or SIGKILL to the command alone (``kill
    PID``, systemd's ``KillMode=mixed``, a crash): the child ends too (the parent death
    signal), within seconds, not after its half."""
    plain_world(fleet)
    command = subprocess.Popen([sys.executable, "-c", SLOW_FLEET, str(fleet.config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        children_file = Path(f"/proc/{command.pid}/task/{command.pid}/children")
        deadline = time.monotonic() + 60
        kids: list[int] = []
        while not kids and time.monotonic() < deadline and command.poll() is None:
            kids = [int(p) for p in children_file.read_text().split()]
            time.sleep(0.05)
        assert kids, "no child forked"
        time.sleep(0.5)  # (the child past its start, reading)
        if how == "ctrl-c":
            os.killpg(command.pid, signal.SIGINT)
        else:
            command.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        code = command.wait(timeout=30)
        assert code != 0
        deadline = time.monotonic() + 2  # (its half: 6 s more)
        while not all(_gone(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(k) for k in kids), kids
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


def test_ctrl_c_while_forking_leaves_no_child_and_no_blocked_signal(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the moment of the fork, taken by another thread (as the start-up's timer
    thread may take it): the command ends as Ctrl-C ends it, the child stopped and waited
    for, every temporary file closed, SIGINT neither blocked nor handled otherwise after.
    (The signal is sent right after the fork: a terminal's Ctrl-C cannot be timed so.)"""
    import threading

    plain_world(fleet)
    monkeypatch.setattr(halves, "FORK_ABOVE", 0)
    children = _Children(monkeypatch)
    made = recorded_temporary_files(monkeypatch)
    real_fork = os.fork
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)  # a thread that takes signals
    other.start()

    def fork() -> int:
        pid = real_fork()
        if pid:
            os.kill(os.getpid(), signal.SIGINT)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    try:
        result = fleet.run("fleet", "--json")
    finally:
        stop.set()
        other.join()
    assert result.exit_code != 0
    assert children.pids and children.all_reaped()
    assert made and all(f.closed for f in made)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_child_where_it_could_not_be_had_or_waited_for(tmp_path: Path) -> None:
    """SIGCHLD ignored (the kernel would reap the child: its work never had), or a thread
    other than the main one (SIGINT's handler is the main thread's): one process."""
    import threading

    from lecentral.store.sql import SqlStore

    Fleet(tmp_path).close()
    store = SqlStore(f"sqlite:///{tmp_path / 'lecentral.db'}")
    try:
        assert halves.usable(store) == (halves._cores() >= 2)
        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            assert not halves.usable(store)
        finally:
            signal.signal(signal.SIGCHLD, previous)
        found: list[bool] = []
        thread = threading.Thread(target=lambda: found.append(halves.usable(store)))
        thread.start()
        thread.join()
        assert found == [False]
    finally:
        store.close()
