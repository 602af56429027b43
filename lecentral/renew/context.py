"""What the parts of one renew run share: the configuration, the store, the plugins, the spool,
the secret redactor and the database write lock. :class:`~lecentral.renew.job.RenewJob` is one;
the recovery of earlier runs needs nothing more, so it depends on this and not on the job."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Store
    from lecentral.registry import Registry
    from lecentral.renew.spool import CertSpool


class RunContext(Protocol):
    """One renew run's shared parts."""

    config: CentralConfig
    store: Store
    registry: Registry
    spool: CertSpool
    redact: Redactor

    @property
    def write_lock(self) -> threading.Lock:
        """Held around each database write (SQLite allows one writer at a time)."""
        ...


class Redactor:
    """Removes every configured secret from a text (defence in depth: messages are built from
    names, but a server's or library's error text is quoted as it is)."""

    def __init__(self, config: CentralConfig) -> None:
        from sqlalchemy.engine import make_url

        secrets: set[str] = {acme.eab_hmac_key for _, acme in config.acme.authorities()}
        try:
            secrets.add(make_url(config.database.url).password or "")
        except Exception:  # noqa: BLE001, S110 - an unparsable URL has no password to hide
            pass
        self._lock = threading.Lock()
        self.secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Never show ``secret`` from now on (the TSIG secrets, as the DNS layer loads them: the
        key files are read once, where they are used)."""
        if not secret or len(secret) < 6:
            return
        with self._lock:
            if secret not in self.secrets:
                self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text
