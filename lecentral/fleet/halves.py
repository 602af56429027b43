"""The fleet's pass over ``certs`` in two processes: ``fleet``, ``fleet --json`` and ``metrics``
of a large fleet on two cores.

The pass (:meth:`lecentral.fleet.store.FleetStore.snapshot` with a ``taker``) is one statement
whose rows Python turns into text: at 100,000 certificates on 3 hosts about 1.5 s on SQLite,
one core busy (SQLite's steps and its checksum callbacks, then the taker), the other idle. Above :data:`FORK_ABOVE` rows, this process forks before it reads: the child reads
the rows from the middle name on, on a connection of its own, and hands them to a *twin* of
the taker (the same kind, with temporary files of its own); this process reads the rows below
the middle name meanwhile. The child then writes what its taker learned and the rows it held
(about 2 %, judged here) into a temporary file and exits; this process appends the twin's
files to its taker's (:meth:`~lecentral.fleet.onepass.OnePass.merge`), as if it had read the
rows itself after its own, and goes on.

Only on SQLite (a file). The two halves are two reads a moment apart, and this process's
statements are each their own read then (one process alone reads one snapshot:
:meth:`~lecentral.fleet.store.FleetStore._one_snapshot`; a read transaction kept open while the
child reads would lock a writer out: the child waiting for the writer, the writer for this
process, until the writer's busy timeout), as every SQLite read was before: a report landing
between them can leave a target of the child's half out of that one view, and a row renamed
across the middle name is seen twice or not at all, that once; the state changes that ``renew``
and ``probe`` notify never come from two halves (no taker). On MariaDB, MySQL and PostgreSQL
two connections would not share the one snapshot either (a report landing between them could be
judged against the other snapshot: a target shown as never reported, an unclaimed report left
out), and with a local server the statement already runs on the second core while Python reads
(measured: no gain). Anything that keeps the child from giving its half (an error, a child not
done by :func:`patience` after this process's own half) makes this process read that half
itself, after its own: the output is the same, it only takes longer. Where no child can be had
(not Linux, no ``fork``, one core, a thread other than the main one, SIGCHLD ignored), there is
one process.

The child is forked before this process opens its reading transaction, after the store's
idle connections are closed (SQLite keeps per-process records of its locks: a connection
carried across ``fork`` would share them), with SIGINT blocked across the fork; the child
uses none of the parent's connections: it opens its own store from the same URL, dies
with the parent (the parent death signal, and the parent's pid checked), and leaves through
``os._exit`` (no atexit, no flushing of this process's buffers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, Self

from lecentral.names import pem_fingerprint

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from lecentral.fleet.current import Split
    from lecentral.fleet.taker import RowTaker
    from lecentral.store.sql import SqlStore

log = logging.getLogger(__name__)

#: above this many rows of ``certs``, the pass reads its two halves in two processes
FORK_ABOVE = 20_000

#: the pass's rows, as ``lecentral.store.packed.rows`` reads them: (their keys, the rows)
Rows = tuple[list[str], Iterable[Any]]


@dataclass
class Scan:
    """What the pass does with each row before the snapshot sees it: its fingerprint (the
    crt's, or the facts' where no crt was sent), the deployments SQL counted of its exact
    name (``attached``), the taker's look; yields the rows the taker did not take, with
    their fingerprints."""

    keys: list[str]
    taker: RowTaker | None
    #: deployments counted over every row (``attached`` of :meth:`Split.others`)
    attached: int = 0
    _at: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        at_counts = self.keys.index("fleet_counts") if "fleet_counts" in self.keys else -1
        self._at = (self.keys.index("crt"), self.keys.index("cached_fp"), at_counts)

    def held(self, rows: Iterable[Any]) -> Iterator[tuple[Any, str | None]]:
        """(row, fingerprint) of each of ``rows`` the taker does not take."""
        at_crt, at_cached, at_counts = self._at
        take = self.taker.take if self.taker is not None else None
        for row in rows:
            pem = row[at_crt]
            fingerprint = row[at_cached] if pem is None else pem_fingerprint(pem)
            if take is not None:
                if row[at_counts]:
                    self.attached += int(str(row[at_counts]).partition(":")[0])
                if take(row, fingerprint):
                    continue
            yield row, fingerprint


@dataclass
class Handed:
    """What the child hands back: its aggregate limit, its keys, the deployments it counted,
    the rows it held (as tuples, with their fingerprints) and its taker's state."""

    max_chars: int | None
    keys: list[str]
    attached: int
    held: list[tuple[tuple[Any, ...], str | None]]
    state: dict[str, Any]


def patience(own: float) -> float:
    """Seconds to wait for the child after this process's own half took ``own`` seconds:
    as long again and a margin (its half is as large), then this process reads it."""
    return 2 * own + 5


class OtherHalf:
    """The rows of ``certs`` from :attr:`middle` on, read by a forked child: see the module's
    docstring. :meth:`rest` gives them (the child's held rows, its taker's work merged into
    this process's taker), or reads them here."""

    def __init__(self, pid: int, ready: int, out: IO[bytes], twin: RowTaker,
                 middle: Any) -> None:
        self.pid: int | None = pid
        self._ready = ready  # the pipe's read end: EOF when the child is gone
        self._out = out
        self._twin = twin
        #: the first name of the child's half
        self.middle = middle
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def fork(cls, store: SqlStore, query: Any, middle: Any, split: Split, taker: RowTaker,
             chars: Callable[[Connection], int | None]) -> OtherHalf | None:
        """Fork a child reading the rows of ``query`` (those from the name ``middle`` on) into
        a twin of ``taker`` (``chars``: how it learns its aggregate limit on its connection);
        None if not forked (this process reads every row)."""
        from lecentral.errors import LecentralError
        from lecentral.fleet.tempfiles import discard, temp_dir

        try:
            other: RowTaker = taker.twin()
        except LecentralError as exc:  # (no room for its files: one process may still fit)
            log.debug("reading every row here: %s", exc)
            return None
        try:
            out = tempfile.TemporaryFile(prefix="lecentral-half-", dir=temp_dir())  # noqa: SIM115
        except OSError:
            other.close()
            return None
        store.engine.dispose()  # (no SQLite connection carried into the child)
        with _ctrl_c_held() as held:
            half = cls._forked(store, query, middle, split, other, chars, out)
            if half is None:
                discard(out)
                other.close()
            elif held:  # (a Ctrl-C while forking: the child stopped, then the Ctrl-C's turn)
                half.close()
        return half

    @classmethod
    def _forked(cls, store: SqlStore, query: Any, middle: Any, split: Split, other: RowTaker,
                chars: Callable[[Connection], int | None], out: IO[bytes]) -> OtherHalf | None:
        """:meth:`fork`'s fork (SIGINT held by the caller, blocked here until the child has
        the default action); None if there is none."""
        parent = os.getpid()
        ready, done = os.pipe()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
        except OSError as exc:
            log.debug("reading every row here: no fork (%s)", exc)
            for fd in (ready, done):
                os.close(fd)
            return None
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pid == 0:  # the child: never returns
            _child(parent, blocked, ready, store.url, query, split, other, chars, out)
        os.close(done)
        return cls(pid, ready, out, other, middle)

    def rest(self, own: Rows, scan: Scan, split: Split, here: Callable[[], Rows]
             ) -> Iterator[tuple[Any, str | None]]:
        """This process's rows (``own``) through ``scan``, then the child's held rows, its
        taker's work merged into ``scan``'s taker and its count into ``scan``; or, where the
        child did not give its half, the rows of ``here()``, read in this process."""
        yield from scan.held(own[1])
        handed = self._handed(time.monotonic() - self._started)
        if handed is not None and (handed.keys != own[0] or handed.max_chars != split.max_chars):
            log.debug("reading the second half here: the child read it otherwise")
            handed = None
        if handed is None:
            yield from scan.held(here()[1])
            return
        assert scan.taker is not None
        scan.taker.merge(self._twin, handed.state)
        self._twin.close()  # (its files' room given back at once)
        scan.attached += handed.attached
        yield from handed.held

    def _handed(self, own: float) -> Handed | None:
        """The child's work, waited for at most :func:`patience`; None if it gave none."""
        poll = select.poll()  # (not select(): a descriptor above 1023 is no error to poll)
        poll.register(self._ready, select.POLLIN | select.POLLHUP)
        try:
            readable = poll.poll(patience(own) * 1000)
        except OSError:
            readable = []
        if not readable:
            log.debug("reading the second half here: the child is not done")
            self.close()
            return None
        code = self._reap()
        if code != 0:
            log.debug("reading the second half here: the child ended with %s", code)
            return None
        try:
            self._out.seek(0)
            handed = pickle.load(self._out)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            log.debug("reading the second half here: %s", exc)
            return None
        return handed if isinstance(handed, Handed) else None

    def _reap(self, kill: bool = False) -> int | None:
        """The child's exit status (waited for; ``kill``: killed first); None if gone."""
        pid, self.pid = self.pid, None
        if pid is None:
            return None
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """The child stopped (killed if still running) and waited for, the files closed."""
        from lecentral.fleet.tempfiles import discard

        self._reap(kill=True)
        if self._ready >= 0:
            os.close(self._ready)
            self._ready = -1
        discard(self._out)
        self._twin.close()


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[list[int]]:
    """While forking: a SIGINT only noted (blocking it covers this thread alone, and another
    thread, the start-up's timer, may take it: Python would then raise KeyboardInterrupt here
    at any point, between the fork and the child's pid kept); after, the previous handler and,
    if one came, the signal raised again for it."""
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)
        if noted:
            signal.raise_signal(signal.SIGINT)


def _child(parent: int, blocked: set[int | signal.Signals], ready: int, url: str, query: Any,
           split: Split, taker: RowTaker, chars: Callable[[Connection], int | None],
           out: IO[bytes]) -> NoReturn:
    """The child's whole life: its half read into ``taker``, what it learned pickled into
    ``out``; exit 0, or 1 on any error (the parent then reads the half itself). SIGINT is
    blocked until it is the default action (Ctrl-C: gone at once, no traceback, none of the
    parent's code run)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(ready)
        from lecentral.renew.stopping import death_signal
        from lecentral.store import packed
        from lecentral.store.sql import SqlStore

        death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # gone before the prctl
            raise SystemExit(1)
        store = SqlStore(url)
        with store.engine.connect() as conn, conn.begin():
            split.max_chars = chars(conn)  # (its own session's: Split.cut trusts it)
            keys, rows = packed.rows(conn, query, yield_per=2000)
            taker.start(keys, split)
            scan = Scan(keys, taker)
            held = [(tuple(row), fp) for row, fp in scan.held(rows)]
        state = taker.handoff()
        pickle.dump(Handed(split.max_chars, keys, scan.attached, held, state), out,
                    protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
        code = 0
    except BaseException:  # noqa: BLE001, S110 - any: the parent reads the half itself
        pass
    finally:
        os._exit(code)


def usable(store: SqlStore) -> bool:
    """True if the pass may fork here: ``fork``, two cores, none of the store's connections
    checked out, a SQLite file (see the module's docstring; not SQLite in memory: the
    child's database would be empty, its half silently missing) through lecentral's own
    store."""
    from lecentral.store.sql import SqlStore

    if (type(store) is not SqlStore or store.dialect != "sqlite"
            or not (store.sqlite_path and os.path.isfile(store.sqlite_path))):
        return False  # (a plugin's store class: its own connect-time settings not known here)
    pool = store.engine.pool
    # Linux: the child dies with this process (the parent death signal); the main thread:
    # SIGINT's handler is set there; SIGCHLD not ignored: else the kernel reaps the child and
    # its work is never had
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and _cores() >= 2
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN
            and not getattr(pool, "checkedout", lambda: 0)())


def _cores() -> int:
    """The CPUs this process may use: its affinity, and a cgroup's CPU limit (``cpu.max``,
    a container's ``--cpus``) where one is set."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count
