"""The records the engine hands to plugins: plain frozen dataclasses and their constants.

This module is the bottom of the contract (with :mod:`lecentral.errors`): it imports nothing else
of lecentral, so the hook specs, the registration records (:mod:`lecentral.types`) and the
interfaces (:mod:`lecentral.interfaces`) can all depend on it without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: the files the agent can write, in the order it writes them
FILE_ROLES = ("cert", "chain", "fullchain", "combined")
COMBINED_PARTS = ("key", "cert", "chain")
#: a file holding the private key is never readable by more than its owner and group
KEY_BEARING_MAX_MODE = 0o640
#: a certificate may be world-readable, never writable by anyone but its owner
CERT_MAX_MODE = 0o644
#: ``lecentral-install csr --rotate`` puts the new key beside the live one, under this suffix
NEXT_KEY_SUFFIX = ".next"


def next_key_path(key: str) -> str:
    """Where a staged rotation keeps the new key until its certificate is installed."""
    return key + NEXT_KEY_SUFFIX


@dataclass(frozen=True)
class CertEntry:
    """One ``[[cert]]`` table after merging the service's defaults and validation."""

    name: str = ""
    service: str = "files"
    key: str = ""
    cert: str = ""
    chain: str = ""
    fullchain: str = ""
    combined: str = ""
    combined_order: list[str] = field(default_factory=lambda: list(COMBINED_PARTS))
    owner: str = ""
    group: str = ""
    mode: str = ""
    action: str = "reload"
    check: str = ""
    reload: str = ""
    verify: list[str] = field(default_factory=list)
    verify_timeout: float = 30.0
    command_timeout: float = 120.0
    #: ``[cert.options]``: an instance of the service's ``options_model`` (a plain dict for a
    #: service without one); read it typed with :meth:`options_as`
    options: Any = field(default_factory=dict, metadata={"internal": True})
    index: int = field(default=0, metadata={"internal": True})

    @property
    def id(self) -> str:
        """Unique per config: the same certificate may serve two daemons (postfix and dovecot)."""
        return f"{self.service}-{self.name}"

    @property
    def label(self) -> str:
        return self.name if self.service == "files" else f"{self.name} ({self.service})"

    @property
    def next_key(self) -> str:
        """The pending new key of a staged rotation (``KEY.next``), whether it exists or not."""
        return next_key_path(self.key)

    @property
    def files(self) -> dict[str, str]:
        """role -> path of every file this entry writes, in writing order."""
        return {role: getattr(self, role) for role in FILE_ROLES if getattr(self, role)}

    def key_bearing(self, role: str) -> bool:
        """True for a file that holds the private key (``combined`` unless its order leaves it out)."""
        return role == "combined" and "key" in self.combined_order

    def options_as(self, model: type[T]) -> T:
        """``options`` as the service's options dataclass ``model`` (built from a dict when the
        entry was made by hand, e.g. in a test; the model's own checks then run too)."""
        if isinstance(self.options, model):
            return self.options
        if isinstance(self.options, dict):
            return model(**self.options)
        raise TypeError(f"{self.label}: options is a {type(self.options).__name__}, not {model.__name__}")

    @property
    def mode_bits(self) -> int | None:
        return int(self.mode, 8) if self.mode else None


@dataclass(frozen=True)
class Notification:
    """One alert or report, handed to every configured notifier."""

    severity: str  # "info", "warning" or "error" (syslog priorities map from these)
    subject: str
    body: str
    name: str | None = None  # the certificate it is about, if any
