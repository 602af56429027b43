"""Group commit of the renew workers' saves: one database transaction for the certificates issued
meanwhile, instead of one each.

A save is mostly the commit (on SQLite: the journal and the database file written and fsynced),
and SQLite allows one writer at a time, so with one transaction per certificate the workers of a
pass queued behind each other's commits: 50 certificates meant 50 commits in a row. Here a worker
whose certificate is spooled (:mod:`lecentral.renew.spool`: it is safe on disk already) queues it
and takes the job's write lock; whoever holds the lock saves everything queued by then in one
:meth:`~lecentral.interfaces.Store.save_issued_many`, and each worker gets its own certificate's
answer. A worker that finds its certificate saved by another one's transaction returns at once.

Nothing is weaker than one transaction each: a row's own problem (its CSR replaced, the row gone)
fails that certificate alone, a database error is retried certificate by certificate by the
store, and a certificate not saved stays in the spool for the next run, as before. Once the
database stayed unavailable through a whole ``[database] retry_for``, the pass saves nothing
more: every later save would wait as long again (a new-user trial saw a pass hang for
(certificates + groups) x retry_for with MariaDB stopped); their spool copies wait for the next
run.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from lecentral.errors import DatabaseUnavailable, LecentralError

if TYPE_CHECKING:
    from lecentral.interfaces import IssuedSave, Store


class _Queued:
    """One certificate waiting for a transaction, and what became of it."""

    def __init__(self, save: IssuedSave) -> None:
        self.save = save
        self.done = False
        self.error: BaseException | None = None


class GroupSaver:
    """Saves the certificates of concurrent workers together, under the job's write lock."""

    def __init__(self, store: Store, write_lock: threading.Lock) -> None:
        self.store = store
        self.write_lock = write_lock
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        #: transactions made and certificates saved through them (for the curious: -v, tests)
        self.transactions = 0
        #: the database stayed unavailable through a whole retry time: the pass saves nothing
        #: more (each save would wait as long again; the spool keeps what was issued)
        self.unavailable: DatabaseUnavailable | None = None

    @property
    def queued(self) -> int:
        """How many certificates wait for the next transaction."""
        with self._queue_lock:
            return len(self._queue)

    def save(self, save: IssuedSave) -> LecentralError | None:
        """Save ``save`` (with whatever else is queued); None once committed, else the error
        that stopped it. An unexpected exception of the store is raised in every worker whose
        certificate was in that transaction."""
        mine = _Queued(save)
        with self._queue_lock:
            self._queue.append(mine)
        with self.write_lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if mine.error is None or isinstance(mine.error, LecentralError):
            return mine.error
        raise mine.error

    def _commit(self, batch: list[_Queued]) -> None:
        results: list[BaseException | None]
        if self.unavailable is not None:
            for queued in batch:
                queued.error, queued.done = self.unavailable, True
            return
        try:
            results = list(self.store.save_issued_many([queued.save for queued in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the store answered {len(results)} results for "
                                   f"{len(batch)} certificates")
        except BaseException as exc:  # noqa: BLE001 - raised again in each worker that waited
            results = [exc for _ in batch]
        self.transactions += 1
        self.unavailable = next((r for r in results if isinstance(r, DatabaseUnavailable)), None)
        for queued, result in zip(batch, results, strict=True):
            queued.error = result
            queued.done = True
