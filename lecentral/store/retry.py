"""Retrying a crowded or restarting database: jittered exponential backoff within a bounded time.

Thousands of agents waking in the same minute can fill the server's ``max_connections``
(MariaDB error 1040, PostgreSQL's "too many clients"), and a server restarting refuses
connections for a few seconds. Those errors are transient: the same request succeeds a moment
later. Anything else (a wrong password, a missing table, a grant lacking, the server's TLS
certificate refused) is not, and fails at once.

A :class:`RetryPolicy` comes from ``[database] retry_for``, ``retry_delay`` and
``retry_max_delay``. :func:`retrying` calls an operation until it succeeds, it fails with an error
that is not transient, or the next wait would pass ``retry_for`` seconds after the first attempt;
the waits double from ``retry_delay`` up to ``retry_max_delay``, each drawn at random between half
and all of that (so that a thousand agents refused together do not return together).
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lecentral.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: MariaDB/MySQL client and server error numbers that a moment's wait can cure
MYSQL_TRANSIENT = {
    1040: "too many connections",  # ER_CON_COUNT_ERROR: max_connections reached
    1203: "too many connections for this user",  # max_user_connections
    1053: "server shutting down",
    1927: "connection killed",  # MariaDB: the server killed it (shutdown)
    2002: "cannot connect (socket)",
    2003: "cannot connect (refused or unreachable)",
    2006: "server has gone away",
    2013: "lost connection",
    2055: "lost connection",
}

#: what TLS says of a server certificate it refused (libpq, OpenSSL): no wait cures that
CERTIFICATE_REFUSED = ("certificate verify failed", "does not match host name")

#: PostgreSQL (psycopg) messages and SQLSTATEs meaning the same
PG_TRANSIENT_STATES = {"53300", "57P01", "57P02", "57P03", "08006", "08001"}
PG_TRANSIENT_WORDS = (
    "too many clients",
    "remaining connection slots are reserved",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "connection refused",
    "terminating connection due to administrator command",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying (``total`` seconds; 0: once only) and how long to wait between tries."""

    total: float = 0.0
    first_delay: float = 0.5
    max_delay: float = 10.0

    @classmethod
    def of(cls, settings: Any) -> RetryPolicy:
        """The policy of a ``[database]`` table (:class:`lecentral.config.DatabaseConfig`)."""
        return cls(settings.retry_for, settings.retry_delay, settings.retry_max_delay)

    def delay(self, attempt: int, rand: Callable[[float, float], float] = random.uniform) -> float:
        """The wait after failed attempt number ``attempt`` (1, 2, ...): exponential, jittered."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** min(attempt - 1, 30))
        return rand(ceiling / 2, ceiling)


def transient(exc: BaseException) -> str | None:
    """Why ``exc`` (a SQLAlchemy error, or the driver's own: the agent's direct read) is worth a
    retry (a short reason), or ``None`` if it is not."""
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy's DBAPIError
        return "connection lost"
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = getattr(orig, "args", ())
    module = type(orig).__module__
    if module.startswith(("pymysql", "MySQLdb")):
        if _refused_certificate(getattr(orig, "original_exception", None)):
            return None  # (PyMySQL says 2003, "can't connect", for it too)
        code = args[0] if args and isinstance(args[0], int) else None
        return MYSQL_TRANSIENT.get(code) if code is not None else None
    if module.startswith("psycopg"):
        state = getattr(orig, "sqlstate", None)
        text = str(orig).lower()
        if ("password authentication failed" in text or "does not exist" in text
                or any(words in text for words in CERTIFICATE_REFUSED)):
            return None
        if state in PG_TRANSIENT_STATES:
            return f"SQLSTATE {state}"
        for words in PG_TRANSIENT_WORDS:
            if words in text:
                return words
    return None


def _refused_certificate(exc: object) -> bool:
    """Whether ``exc`` is TLS refusing the server's certificate (another CA, another name):
    no wait cures that. (ssl is looked up, not imported: when such an error exists, it is
    loaded.)"""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


class GaveUp(Exception):
    """The database stayed unavailable for the whole retry time: ``last`` is its last error."""

    def __init__(self, last: Exception, attempts: int, elapsed: float) -> None:
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed


def retrying(policy: RetryPolicy, what: str, where: str, operation: Callable[[], T],
             *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """``operation()``, tried again after a transient database error while ``policy`` allows.

    A non-transient error is raised at once, as it is; so is any error when retry is off
    (``total`` is 0). Once the time is up, :class:`GaveUp` with the last error.
    Each retry is logged as a warning naming ``where`` (the host), ``what`` and the reason.
    Errors of SQLAlchemy and of the drivers alike (:func:`transient` tells them apart); this
    module imports neither, so the agent's direct read stays light.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as exc:  # anything not transient is raised as it is
            reason = transient(exc)
            if reason is None or policy.total <= 0:
                raise
            elapsed = clock() - start
            if elapsed >= policy.total:
                raise GaveUp(exc, attempt, elapsed) from None
            # the last wait is cut short: one last try at the end of the retry time
            wait = min(policy.delay(attempt), policy.total - elapsed)
            log.warning("database %s: %s: %s (%s); retry %d in %.1f s (giving up %.0f s after "
                        "the first try: [database] retry_for)", where, what, reason,
                        _first_line(exc), attempt, wait, policy.total)
            sleep(wait)


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.splitlines()[0] if text else type(exc).__name__


def crowded_hint(reason: str) -> str:
    """What to do when the server stayed unavailable for the whole retry time."""
    if "many" in reason.lower() or "connection slots" in reason:
        return ("the server refuses more connections: raise its max_connections, spread the "
                "agents over more time (RandomizedDelaySec in the timer, a random sleep in cron: "
                "docs/agent.md), or raise [database] retry_for")
    return ("check that the server is up and that the host and port of [database] url are "
            "right, or raise [database] retry_for to wait longer for a restart")


def gave_up_error(shown_url: str, what: str, server: str, gave: GaveUp,
                  policy: RetryPolicy) -> DatabaseUnavailable:
    """The error once :func:`retrying` gave up (``shown_url``: the URL with its password masked)."""
    reason = _first_line(gave.last)
    return DatabaseUnavailable(
        f"database {shown_url}: {what} failed: the server {server} stayed unavailable "
        f"({reason}) through {gave.attempts} attempt{'s' if gave.attempts != 1 else ''} over "
        f"{gave.elapsed:.0f} s (retried with jittered backoff for [database] retry_for = "
        f"{policy.total:g} s); nothing was changed; {crowded_hint(reason)}")
