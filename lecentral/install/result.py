"""One entry's outcome in a ``lecentral-install run``: what the summary line and ``--json`` show."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: the statuses that make ``lecentral-install run`` exit 1
FAILED = ("failed", "rolled-back", "rollback-failed")


@dataclass
class Result:
    """What happened to one ``[[cert]]`` entry in this run."""

    name: str
    service: str
    status: str  # installed, up-to-date, skipped, would-install, failed, rolled-back, rollback-failed
    message: str
    fingerprint: str | None = None
    expires: int | None = None
    paths: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    def line(self) -> str:
        """The summary line printed on stdout."""
        label = self.name if self.service in ("files", "-") else f"{self.name} ({self.service})"
        return f"{label}: {self.status}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
