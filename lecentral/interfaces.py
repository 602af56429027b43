"""The small abstract classes a plugin implements; the engine only ever calls these methods."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from lecentral.certificates import Csr
    from lecentral.store.rows import CertRow, EventRow
    from lecentral.types import Notification


@dataclass(frozen=True)
class IssuedCertificate:
    """What an issuer hands back: the leaf and the CA chain above it, both PEM."""

    crt: bytes
    ca: bytes


class Issuer(ABC):
    """Gets a CSR signed by an ACME CA, proving control of every name in it."""

    @abstractmethod
    def issue(self, row: "CertRow", csr: "Csr") -> IssuedCertificate:
        """Order a certificate for ``csr`` (already validated) and return it.

        Raise :class:`lecentral.errors.IssueError` with a message a sysadmin can act on. Must clean
        up whatever it published (TXT records, webroot tokens) whatever happens.
        """

    def begin_pass(self) -> None:
        """A renew pass starts: forget per-pass state (e.g. which DNS zones were already checked)."""

    def close(self) -> None:
        """Release sessions and connections; called once at the end of a renew run."""


class Store(ABC):
    """The certificate database: the seed's ``certs`` table plus lecentral's own tables."""

    @abstractmethod
    def init_schema(self) -> list[str]:
        """Create missing tables (never touching an existing ``certs``); return the names created."""

    @abstractmethod
    def get(self, name: str) -> "CertRow | None":
        """The row for ``name``, validated, or ``None``."""

    @abstractmethod
    def list(self) -> "list[CertRow]":
        """Every row, validated, sorted by name."""

    @abstractmethod
    def add(self, row: "CertRow") -> None:
        """Insert a new row; :class:`StoreError` if the name exists."""

    @abstractmethod
    def set_csr(self, name: str, csr: bytes, md5_modulus: str) -> None:
        """Replace the CSR and its md5_modulus."""

    @abstractmethod
    def set_enable(self, name: str, enable: bool) -> None:
        """Flip the ``enable`` column."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Delete the row (its event history stays)."""

    @abstractmethod
    def save_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int, now: int) -> None:
        """Store a new certificate in one transaction: old_crt/old_ca take crt/ca, md5_ca,
        ts_expire, ts_last_update set, count_fail_update 0, and an ``issued`` event."""

    @abstractmethod
    def record_failure(self, name: str, error: str, now: int) -> int:
        """count_fail_update + 1, ts_last_update = now, and a ``failed`` event; return the new count."""

    @abstractmethod
    def record_event(self, name: str, kind: str, message: str, now: int) -> None:
        """Append to the event log without touching ``certs``."""

    @abstractmethod
    def events(self, name: str | None = None, limit: int = 50) -> "list[EventRow]":
        """The newest events first, for one name or all."""

    @abstractmethod
    def renew_lock(self, timeout: float = 0) -> AbstractContextManager[bool]:
        """A lock held across hosts for the length of a renew run; yields False if not acquired."""

    def close(self) -> None:
        """Dispose of connections."""


class Verifier(ABC):
    """Connects to a running service and reports the leaf certificate it presents."""

    @abstractmethod
    def presented_certificate(self, url: str, timeout: float) -> bytes:
        """DER of the leaf the service at ``url`` presents; raise :class:`VerifyError` if unreachable."""


class Service(ABC):
    """The server-side behaviour of one kind of daemon: config test, reload, verify."""

    def check_config(self, entry: Mapping[str, Any]) -> None:
        """Run the daemon's own config test on the newly written files; raise InstallError if it fails."""

    @abstractmethod
    def activate(self, entry: Mapping[str, Any]) -> None:
        """Make the daemon use the new files (reload, restart...); raise InstallError on failure."""


class Notifier(ABC):
    """Delivers a notification to a human or a log."""

    @abstractmethod
    def send(self, notification: "Notification") -> None:
        """Deliver it; raise on failure (the caller logs and carries on with the other notifiers)."""
