"""A pass of many certificates on more than one CPU core: ``[renew] processes``.

The renew workers are threads of one Python process, which runs Python code on one core at a
time: a pass of many certificates is bound by that one core (about 15-20 ms of CPU per
certificate: the ACME requests, the DNS messages, the save) while the other cores idle. With
``processes = N`` (N > 1; the default "auto" is 2 where this process may run on 2 cores or
more and a core sat idle while the command started, see :func:`processes`) a pass of more
certificates than ``workers`` forks N - 1 processes after everything is imported and set up,
each issuing its share of the certificates on its
share of the ``workers`` threads (``workers`` stays what the CA sees at once), with its own
HTTPS connections and its own ACME client (the same account).

What a child does and does not do:

* it orders, publishes and removes the TXT records, and checks and *spools* each certificate
  (:mod:`lecentral.renew.spool`) exactly as a worker thread does, then sends the result to the
  parent over a pipe; it never touches the database;
* the parent saves the children's certificates (with its own: one writer, group commits),
  records failures, leftovers, events and alerts, and the run's problems, as for its own rows;
* it issues only the certificates of issuers that say it may (``Issuer.processes_safe``: the
  built-in DNS-01 sub-zone issuer); the others (certbot's and the native webroot's HTTP-01, a
  plugin's by default) stay in the first process, whose threads take turns where those issuers
  need it (certbot's state directories, a webroot's challenge directory);
* a child that dies (killed, crashed) is the run's problem, said once: the certificates it did
  not report are blocked (not tried by this run, their failure counts unchanged); what it
  issued is in the spool, and the next run saves it without a new order; the challenge
  records its journal still notes (:mod:`lecentral.journal`) are removed by the parent once
  the pass is over, still under the renew lock.

Not used under a Galera lease (the lease is checked per certificate against the database) nor
where ``os.fork`` does not exist: then the pass runs in one process, as with ``processes = 1``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from lecentral import journal
from lecentral.config import AUTO, auto_processes, processes_for
from lecentral.dns.tsig import warn_readable
from lecentral.errors import LecentralError
from lecentral.idle import idle_cores
from lecentral.renew.attempt import SAVERS, Issued, Issuing, issue_and_spool
from lecentral.renew.outcome import WORKER_DIED
from lecentral.renew.stopping import StopFlag, parent_gone, watch_parent

if TYPE_CHECKING:
    from lecentral.certificates import Csr
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Issuer, Store
    from lecentral.renew.outcome import Outcome
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")


class Pass(Issuing, Protocol):
    """What a pass over several processes needs of its run (a
    :class:`~lecentral.renew.job.RenewJob`; named here, not imported: the job imports this)."""

    config: CentralConfig
    store: Store
    #: set when a worker process ended otherwise than by exiting 0 (killed, crashed)
    children_died: bool
    stop: StopFlag

    def renew_one(self, row: CertRow, csr: Csr, issuer_name: str, number: int,
                  savers: ThreadPoolExecutor) -> Outcome | Future[Outcome]: ...

    def finish_issued(self, row: CertRow, csr: Csr, issuer_name: str, number: int,
                      result: Issued) -> Outcome: ...

    def prepare_acme(self) -> None: ...

    def _issuer(self, name: str) -> Issuer | LecentralError: ...

    def forget_acme_clients(self) -> None: ...

    def _save_spooled(self, name: str, number: int) -> Outcome | None: ...

    def _failed(self, row: CertRow, issuer: str, error: str, status: str, started: float,
                number: int, *, record: bool = True) -> Outcome: ...

    def _blocked(self, row: CertRow, issuer: str, exc: LecentralError, started: float,
                 number: int, *, cause: str | None = None) -> Outcome: ...

    def not_started(self, row: CertRow, issuer: str, started: float, number: int) -> Outcome: ...


#: "auto" forks a second process only if at least this many cores sat idle, on average, while
#: the command started (lecentral/idle.py): a second process where no core is free only costs CPU
IDLE_FOR_A_SECOND = 0.5


def processes(job: Pass, due: int) -> int:
    """How many processes this pass of ``due`` certificates runs on: 1 unless it has more than
    ``workers`` certificates, ``os.fork`` exists and no Galera lease is held; then ``[renew]
    processes``, where "auto" is 2 on 2 cores or more (:func:`~lecentral.config.processes_for`)
    when a core sat idle while the command started (:mod:`lecentral.idle`; not measured: a
    library's use, 2), else 1."""
    if (due <= job.config.renew.workers or not hasattr(os, "fork")
            or getattr(job.store, "leased", False)):
        return 1
    setting = job.config.renew.processes
    if setting != AUTO:
        return processes_for(setting)
    count, why = auto_processes()
    if count == 1:
        log.debug("renew.processes auto: 1 process: %s", why)
        return 1
    idle = idle_cores()
    if idle is not None and idle < IDLE_FOR_A_SECOND:
        log.debug("renew.processes auto: 1 process: %s, but %.2f cores idle during the start",
                  why, idle)
        return 1
    log.debug("renew.processes auto: %d processes: %s, %s cores idle during the start", count,
              why, "(not measured)" if idle is None else f"{idle:.2f}")
    return count


def threads(job: Pass, count: int) -> int:
    """Worker threads per process (of ``count``): ``workers`` shared out, so the CA sees no
    more at once."""
    return -(-job.config.renew.workers // count)


def run_pass(job: Pass, due: list[tuple[CertRow, Csr, str]], number: int,
             count: int) -> list[Outcome]:
    """The pass on ``count`` processes (:func:`processes`): this one and the children it forks;
    the outcomes in the order of ``due``."""
    results: dict[str, Outcome] = {}
    todo = []
    for row, csr, issuer in due:  # saved at once here, as a worker would first thing
        saved = job._save_spooled(row.name, number)
        if saved is not None:
            results[row.name] = saved
        else:
            todo.append((row, csr, issuer))
    job.prepare_acme()  # the account key made and registered once, before the children read it
    dns = job.config.dns  # said here once, not again by each process reading them
    warn_readable([p for p in [dns.tsig_key_file, *(z.tsig_key_file for z in dns.zones.values())]
                   if p])
    # only the certificates of an issuer that says so (Issuer.processes_safe) are shared out:
    # the others take turns between the threads of one process (certbot's state directories
    # and webroots, the native webroot's challenge directories), so they stay in this one
    spread: list[tuple[CertRow, Csr, str]] = []
    kept: list[tuple[CertRow, Csr, str]] = []
    for item in todo:
        safe = getattr(job._issuer(item[2]), "processes_safe", False)
        (spread if safe else kept).append(item)
    shares = [spread[i::count] for i in range(count)]
    shares[0] = kept + shares[0]
    workers_each = threads(job, count)
    children = [_fork(job, share, number, workers_each) for share in shares[1:] if share]
    alive = _Alive({pid for pid, _, _ in children}, job.stop)
    job.stop.listeners.append(alive.stop)  # `kill PID` reaches the first process only
    workers = max(1, min(workers_each, len(shares[0])))
    futures: dict[str, Future[Outcome]] = {}
    futures_lock = threading.Lock()
    # this process's own share on its workers; its savers save those and the children's
    # certificates as they come (each already spooled by its child)
    try:
        with ThreadPoolExecutor(max_workers=SAVERS, thread_name_prefix="renew-save") as savers, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="renew") as pool:
            own = {row.name: pool.submit(job.renew_one, row, csr, issuer, number, savers)
                   for row, csr, issuer in shares[0]}
            readers = []
            for pid, read_fd, share in children:
                reader = threading.Thread(target=_read_child, name=f"renew-child-{pid}", args=(
                    job, savers, pid, read_fd, share, number, futures, futures_lock, alive))
                reader.start()
                readers.append(reader)
            for reader in readers:
                reader.join()
            for name, started in own.items():
                outcome = started.result()
                results[name] = outcome.result() if isinstance(outcome, Future) else outcome
            with futures_lock:
                pending = dict(futures)
            results.update({name: future.result() for name, future in pending.items()})
    finally:
        job.stop.listeners.remove(alive.stop)
    for row, _, issuer in todo:  # a bug of this module, not a silent success
        if row.name not in results:
            results[row.name] = job._failed(
                row, issuer, "no result came back from its renew worker process (a bug in "
                "lecentral/renew/forked.py); if the CA issued it, it is in the spool and the "
                "next run saves it", "failed", time.monotonic(), number)
    return [results[row.name] for row, _, _ in due]


def _fork(job: Pass, share: list[tuple[CertRow, Csr, str]], number: int,
          workers: int) -> tuple[int, int, list[tuple[CertRow, Csr, str]]]:
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # None where the caller closed it (cron's >&-)
        if stream is not None:
            stream.flush()
    parent, from_main = os.getpid(), threading.current_thread() is threading.main_thread()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        code = 1
        try:
            watch_parent(job.stop, parent, from_main)  # never ordering on alone
            _child(job, share, number, write_fd, workers, parent)
            code = 0
        except BaseException:  # said on stderr; the parent fails what is missing
            log.exception("renew worker process %d failed", os.getpid())
        finally:
            os._exit(code)  # no atexit, no finalizers: the parent's connections stay its own
    os.close(write_fd)
    return pid, read_fd, share


def _child(job: Pass, share: list[tuple[CertRow, Csr, str]], number: int,
           write_fd: int, workers: int, parent: int) -> None:
    """Issue ``share`` on (at most) ``workers`` threads and send each result to the parent;
    asked to stop (:mod:`lecentral.renew.stopping`), start no more: the parent says which
    were not tried."""
    job.forget_acme_clients()  # the parent's HTTPS connections are not this process's
    journal.in_child(job.config.renew.state_dir)  # its own journal: it may be killed alone
    job.store = _NoStore()  # type: ignore[assignment]  # the parent saves
    send_lock = threading.Lock()

    def one(row: CertRow, csr: Csr, issuer: str) -> None:
        if parent_gone(job.stop, parent):
            return
        try:
            result = issue_and_spool(job, row, csr, issuer)
        except BaseException as exc:  # reported as this certificate's failure
            log.exception("issuing %s in worker process %d crashed", row.name, os.getpid())
            result = Issued(row.name, "failed", time.monotonic(),
                            message=f"issuer {issuer} crashed: {type(exc).__name__}: {exc}")
        data = pickle.dumps(result)
        with send_lock:
            try:
                _write_all(write_fd, _LENGTH.pack(len(data)) + data)
            except BrokenPipeError:  # the parent is gone: what was issued is in the spool
                if not job.stop.is_set():
                    log.error("renew worker process %d: its first process is gone; stopping "
                              "(%s is in the spool: the next run saves it)", os.getpid(),
                              row.name)
                job.stop.set(signal.SIGTERM, "stopped: its first process ended")

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(share))),
                            thread_name_prefix="renew") as pool:
        for future in [pool.submit(one, row, csr, issuer) for row, csr, issuer in share]:
            future.result()
    journal.end_pass()
    os.close(write_fd)


class _Alive:
    """The worker processes not yet waited for (their pids cannot be reused meanwhile): those a
    stop of the run is passed on to."""

    def __init__(self, pids: set[int], flag: StopFlag) -> None:
        self.pids, self.flag, self.lock = pids, flag, threading.Lock()

    def stop(self) -> None:
        """Pass the run's stop on (called from its signal handler)."""
        with self.lock:
            for pid in self.pids:
                try:
                    os.kill(pid, self.flag.signum or signal.SIGTERM)
                except OSError:  # already ended
                    pass

    def reaped(self, pid: int) -> None:
        """``pid`` is about to be waited for: never signalled after."""
        with self.lock:
            self.pids.discard(pid)


def _read_child(job: Pass, pool: ThreadPoolExecutor, pid: int, read_fd: int,
                share: list[tuple[CertRow, Csr, str]], number: int,
                futures: dict[str, Future[Outcome]], futures_lock: threading.Lock,
                alive: _Alive) -> None:
    """Hand each result of child ``pid`` to the pool, to be saved; then fail what it did not
    report."""
    try:
        _read_results(job, pool, pid, read_fd, share, number, futures, futures_lock, alive)
    except Exception:  # the rows without a result fail in run_pass, loudly
        log.exception("reading the results of renew worker process %d failed", pid)


def _read_results(job: Pass, pool: ThreadPoolExecutor, pid: int, read_fd: int,
                  share: list[tuple[CertRow, Csr, str]], number: int,
                  futures: dict[str, Future[Outcome]], futures_lock: threading.Lock,
                  alive: _Alive) -> None:
    rows = {row.name: (row, csr, issuer) for row, csr, issuer in share}
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            head = pipe.read(_LENGTH.size)
            if len(head) < _LENGTH.size:
                break
            data = pipe.read(_LENGTH.unpack(head)[0])
            try:
                result: Issued = pickle.loads(data)
                row, csr, issuer = rows.pop(result.name)
            except Exception:  # a truncated message: the child died mid-write
                log.exception("renew worker process %d sent an unreadable result", pid)
                break
            future = pool.submit(job.finish_issued, row, csr, issuer, number, result)
            with futures_lock:
                futures[row.name] = future
    alive.reaped(pid)
    _, status = os.waitpid(pid, 0)
    if status != 0:  # its challenge journal may still note records: the parent removes them
        job.children_died = True
    if not rows:
        return
    if job.stop.is_set() and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        for name, (row, _, issuer) in rows.items():  # not started: the run was stopped
            stopped: Future[Outcome] = Future()
            stopped.set_result(job.not_started(row, issuer, time.monotonic(), number))
            with futures_lock:
                futures[name] = stopped
        return
    how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exited with status {os.waitstatus_to_exitcode(status)}")
    message = (f"the renew worker process {pid} {how} before it reported these certificates; "
               "any the CA issued are in the spool ([renew] state_dir): the next run saves them "
               "without a new order and tries the others")
    # said once, as the run's problem (the CLI's error line, the alert): here for -v only
    log.info("%s: %s", ", ".join(sorted(rows)), message)
    # the run's problem, not the rows': their failure counts and last attempt stay as they were,
    # so the next run tries them at once (a failure recorded here would hold them back for
    # renew.min_interval while that run says all is well)
    problem = LecentralError(message)
    for name, (row, _, issuer) in rows.items():
        blocked: Future[Outcome] = Future()
        blocked.set_result(job._blocked(row, issuer, problem, time.monotonic(), number,
                                        cause=WORKER_DIED))
        with futures_lock:
            futures[name] = blocked


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _NoStore:
    """The database in a child: every use is a bug, said loudly (the parent saves)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a renew worker process used the database ({name}); only the "
                           "parent process may")
