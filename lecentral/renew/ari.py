"""The renew job's ARI windows (RFC 9773): asked of each certificate's CA, kept in the database
until the CA's ``Retry-After`` (``lecentral_ari_windows``, migration 0007), and asked
concurrently for the certificates whose answer is missing or stale.

RFC 9773 §4.3: a client should not ask for a certificate's renewal information again before the
``Retry-After`` of the last answer (Let's Encrypt sends about six hours); a ``lecentral renew``
every four hours over 100,000 certificates used to ask the CA 100,000 times, one request after
the other, every run. Now:

- a window is used from the cache while its ARI certID and fingerprint are still those of the
  row's ``crt`` (a new certificate needs a new answer) and before its retry time (bounded:
  :data:`lecentral.acme.client.RETRY_AFTER_MAX`); what is read back is validated, a row that
  does not validate is asked again;
- the others are asked :data:`lecentral.acme.client.ARI_WORKERS` at a time per CA; each answer
  is stored with its retry time; a failed request (unreachable, an HTTP error, an answer that
  does not parse) makes the renewal window decide for that certificate this run, with a
  warning, as without ARI, and is stored as a *failure* (a row whose window is 0 to 0): the
  certificate is not asked again before a back-off as long as the failures have lasted (at
  least :data:`BACKOFF_MIN`, at most :data:`BACKOFF_MAX`, the interval a CA that sends no
  Retry-After gets; RFC 9773 §4.3.3), so that a CA that does not know 100,000 certificates
  (or is down) is not asked more often than a healthy one, and a window it moved into the
  past meanwhile is seen within six hours of its recovery;
- the renew sweep (:func:`lecentral.store.facts.ari_settled`) skips in SQL the rows whose
  cached window is fresh and whose ARI due time has not come, and those backing off (their
  renewal window decides, as for a CA without ARI).
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, TypeGuard

from lecentral.certificates import now_ts
from lecentral.errors import LecentralError

if TYPE_CHECKING:
    from collections.abc import Callable

    from lecentral.acme.client import RenewalInfoReader, RenewalWindow
    from lecentral.certificates import Certificate
    from lecentral.config import AcmeConfig
    from lecentral.interfaces import Store
    from lecentral.store.rows import AriWindowRow, CertRow

log = logging.getLogger(__name__)

UTC = datetime.UTC
#: the shortest and the longest wait after a failed renewalInfo request before the
#: certificate is asked again (the longest: lecentral.acme.client.RETRY_AFTER_DEFAULT)
BACKOFF_MIN = 3600
BACKOFF_MAX = 6 * 3600


class Known:
    """A window settled before the decisions (from the cache or asked): what :func:`due_reason`
    asks for (:class:`lecentral.renew.checks.WindowSource`)."""

    def __init__(self, window: RenewalWindow | None) -> None:
        self._window = window

    def window(self, crt_pem: bytes) -> RenewalWindow | None:
        """The window settled for this row's certificate (None: the renewal window decides)."""
        return self._window


class AriReaders:
    """The renewal-information readers of one selection, one per CA, made when a certificate of
    that CA is first considered: a certificate's window is asked of the CA that issued it (RFC
    9773: only the issuing CA knows it), as recorded in ``lecentral_cert_settings``; the first
    CA for a certificate issued before lecentral recorded it.

    :meth:`settle` finds, before the decisions, the windows of the rows that need one: from the
    store's cache, or asked concurrently (and stored)."""

    def __init__(self, authorities: list[tuple[str, AcmeConfig]],
                 issuing: dict[str, tuple[str, str]],
                 readers: dict[str, RenewalInfoReader] | None = None,
                 store: Store | None = None, stop: Callable[[], bool] | None = None) -> None:
        self.authorities = dict(authorities)
        self.first = authorities[0][0]
        self.issuing = issuing
        self.readers: dict[str, RenewalInfoReader] = dict(readers or {})
        self.store = store
        #: true once the run is asked to stop: the windows not yet asked are not asked
        self.stop = stop
        #: row name -> the window settled for it (None: none to go by)
        self.known: dict[str, RenewalWindow | None] = {}
        #: how many windows were asked of a CA, how many came from the cache, and how many
        #: were not asked because their last request failed recently (for tests and the log)
        self.asked = 0
        self.cached = 0
        self.backing_off = 0

    def for_row(self, row: CertRow) -> RenewalInfoReader | Known | None:
        """What gives ``row``'s window: the one settled for it, else the reader of the CA that
        issued its certificate; None if that CA offers no ARI (or is no longer configured: its
        window cannot be asked anywhere else)."""
        if row.name in self.known:
            return Known(self.known[row.name])
        return self.reader(row)

    def reader(self, row: CertRow) -> RenewalInfoReader | None:
        """The reader of the CA that issued ``row``'s certificate, if it offers ARI."""
        from lecentral.acme.client import RenewalInfoReader

        if not (row.enable and row.crt):  # nothing to ask about: not a reason to reach a CA
            return None
        recorded = self.issuing.get(row.name.strip().lower().rstrip("."))
        name = recorded[0] if recorded is not None else self.first
        if name not in self.authorities:
            return None
        if name not in self.readers:
            self.readers[name] = RenewalInfoReader(self.authorities[name])
        reader = self.readers[name]
        return reader if reader.offered else None

    def settle(self, wanted: list[tuple[CertRow, Certificate]], now: int) -> None:
        """Find the windows of ``wanted`` (rows whose decision asks for one, with their parsed
        certificate): fresh cached ones as they are, the others asked, ``ARI_WORKERS`` at a
        time per CA, and stored. Warnings in the order of ``wanted``, each kind once."""
        from lecentral.acme.client import NotAsked, ari_cert_id

        by_reader: dict[int, tuple[RenewalInfoReader, list[tuple[CertRow, Certificate, str]]]] = {}
        problems: dict[str, int] = {}
        for row, cert in wanted:
            reader = self.reader(row)
            if reader is None:
                continue
            try:
                cert_id = ari_cert_id(row.crt or b"")
            except Exception as exc:  # noqa: BLE001 - no AKI, no serial: the window decides
                self.known[row.name] = None
                _count(problems, f"renewal information from {reader.base} unreadable "
                                 f"({' '.join(str(exc).split())[:200]}); the renewal window "
                                 "(renew.before) decides")
                continue
            by_reader.setdefault(id(reader), (reader, []))[1].append((row, cert, cert_id))
        if not by_reader:
            return
        cache = self._cached([row.name for _, items in by_reader.values() for row, _, _ in items])
        save: list[AriWindowRow] = []
        for reader, items in by_reader.values():
            ask: list[tuple[CertRow, Certificate, str]] = []
            for row, cert, cert_id in items:
                stored = cache.get(row.name)
                window = usable(stored, cert_id, cert.fingerprint, now)
                if window is not None:
                    self.known[row.name] = window
                    self.cached += 1
                elif backing_off(stored, cert_id, cert.fingerprint, now):
                    self.known[row.name] = None  # the renewal window decides, as last time
                    self.backing_off += 1
                else:
                    ask.append((row, cert, cert_id))
            answers = reader.ask_many([(row.crt or b"", cert_id) for row, _, cert_id in ask],
                                      stop=self.stop)
            self.asked += len(ask)
            fetched = now_ts()
            for (row, cert, cert_id), answer in zip(ask, answers, strict=True):
                if isinstance(answer, str) or answer is None:
                    self.known[row.name] = None
                    if answer is not None:
                        _count(problems, answer)
                    if isinstance(answer, str) and not isinstance(answer, NotAsked):
                        save.append(_failed(row.name, cert_id, cert.fingerprint,
                                            cache.get(row.name), fetched))
                    continue
                self.known[row.name] = answer.window
                save.append(_stored(row.name, cert_id, cert.fingerprint, answer.window,
                                    fetched, fetched + answer.retry_after))
        log.debug("renewal windows: %d kept in the database, %d asked of the CAs",
                  self.cached, self.asked)
        if self.backing_off:
            log.info("renewal windows of %d certificate(s) not asked: their last request "
                     "failed, asked again after a back-off (at most %d h); the renewal window "
                     "(renew.before) decides meanwhile", self.backing_off, BACKOFF_MAX // 3600)
        for message, count in problems.items():
            log.warning("%s%s", message, f" ({count} certificates)" if count > 1 else "")
        if save and self.store is not None:
            try:
                self.store.save_ari_windows(save)
            except LecentralError as exc:  # a cache: the next run asks these windows again
                log.warning("%s; the next renew asks the CA for these renewal windows again", exc)

    def _cached(self, names: list[str]) -> dict[str, AriWindowRow]:
        if self.store is None:
            return {}
        try:
            return self.store.ari_windows(names)
        except LecentralError as exc:  # a cache: without it, every window is asked
            log.warning("%s; asking the CA for every renewal window", exc)
            return {}

    def close(self) -> None:
        """Close every reader made."""
        for reader in self.readers.values():
            reader.close()


def _count(problems: dict[str, int], message: str) -> None:
    problems[message] = problems.get(message, 0) + 1


def _stored(name: str, cert_id: str, fingerprint: str, window: RenewalWindow, fetched: int,
            retry: int) -> AriWindowRow:
    from lecentral.renew.checks import ari_due_at
    from lecentral.store.rows import AriWindowRow

    start, end = int(window.start.timestamp()), int(window.end.timestamp())
    explanation = window.explanation
    if explanation is not None and (len(explanation) > 500 or not explanation.isascii()
                                    or not explanation.isprintable()):
        explanation = None  # a column of ASCII; only shown, never followed
    return AriWindowRow(name=name, ari_cert_id=cert_id, fingerprint=fingerprint,
                        window_start=start, window_end=end,
                        due_at=ari_due_at(start, end, fingerprint), explanation=explanation,
                        ts_fetched=fetched, ts_retry=retry)


def _failed(name: str, cert_id: str, fingerprint: str, stored: AriWindowRow | None,
            now: int) -> AriWindowRow:
    """The failure row stored after a failed request at ``now``: ``ts_fetched`` is when the
    failures began (kept from ``stored`` if that was a failure of the same certificate whose
    back-off ended less than :data:`BACKOFF_MAX` ago: the failures went on; an older one, of
    a time ARI was off or the certificate disabled, starts afresh), the retry time ``now``
    plus as long as they have lasted, at least :data:`BACKOFF_MIN`, at most
    :data:`BACKOFF_MAX`."""
    from lecentral.store.rows import AriWindowRow

    began = now
    if (_is_failure(stored) and stored.ari_cert_id == cert_id
            and stored.fingerprint == fingerprint and stored.ts_fetched <= now
            and stored.ts_retry > now - BACKOFF_MAX):
        began = stored.ts_fetched
    wait = max(BACKOFF_MIN, min(BACKOFF_MAX, now - began))
    return AriWindowRow(name=name, ari_cert_id=cert_id, fingerprint=fingerprint, window_start=0,
                        window_end=0, due_at=0, explanation=None, ts_fetched=began,
                        ts_retry=now + wait)


def _is_failure(stored: AriWindowRow | None) -> TypeGuard[AriWindowRow]:
    """True for a stored failure row (:func:`_failed`) with values of the right types."""
    if stored is None:
        return False
    numbers = (stored.window_start, stored.window_end, stored.due_at, stored.ts_fetched,
               stored.ts_retry)
    return (all(type(n) is int for n in numbers)
            and stored.window_start == stored.window_end == stored.due_at == 0)


def backing_off(stored: AriWindowRow | None, cert_id: str, fingerprint: str, now: int) -> bool:
    """True if the last request for this certificate (``cert_id``, ``fingerprint``) failed and
    its retry time has not come: it is not asked this run (the renewal window decides). A
    row from the database that does not check out (another certificate, a retry time more
    than :data:`~lecentral.acme.client.RETRY_AFTER_MAX` ahead: a day, far above
    :data:`BACKOFF_MAX`, so that another central host's clock a little ahead does not
    matter) is asked again."""
    from lecentral.acme.client import RETRY_AFTER_MAX

    if not _is_failure(stored):
        return False
    return bool(stored.ari_cert_id == cert_id and stored.fingerprint == fingerprint
                and stored.ts_fetched <= now + 60
                and now < stored.ts_retry <= now + RETRY_AFTER_MAX)


def usable(stored: AriWindowRow | None, cert_id: str, fingerprint: str,
           now: int) -> RenewalWindow | None:
    """The window of a cached row if it may be used at ``now`` for the certificate with
    ``cert_id`` and ``fingerprint``: the same certificate, before its retry time (at most
    :data:`~lecentral.acme.client.RETRY_AFTER_MAX` after it was asked), values of the right
    types and in order (the row comes from the database: anyone may have written it)."""
    from lecentral.acme.client import RETRY_AFTER_MAX, RenewalWindow

    if stored is None or stored.ari_cert_id != cert_id or stored.fingerprint != fingerprint:
        return None
    numbers = (stored.window_start, stored.window_end, stored.due_at, stored.ts_fetched,
               stored.ts_retry)
    if not all(type(n) is int for n in numbers):
        return None
    start, end, due_at, fetched, retry = numbers
    if not (start < end and fetched < retry <= fetched + RETRY_AFTER_MAX
            and fetched <= now + 60 and now < retry):
        return None
    from lecentral.renew.checks import ari_due_at

    if due_at != ari_due_at(start, end, fingerprint):
        return None
    explanation = stored.explanation if isinstance(stored.explanation, str) else None
    try:
        return RenewalWindow(start=datetime.datetime.fromtimestamp(start, UTC),
                             end=datetime.datetime.fromtimestamp(end, UTC),
                             explanation=explanation)
    except (OverflowError, OSError, ValueError):
        return None
