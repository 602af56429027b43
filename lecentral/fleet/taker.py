"""What sees every ``certs`` row of a split snapshot's pass first: the protocol of
``lecentral metrics``', ``fleet --json``'s and ``fleet``'s passes
(:meth:`lecentral.fleet.store.FleetStore.snapshot`, :mod:`lecentral.fleet.halves`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from lecentral.fleet.current import Split


class RowTaker(Protocol):
    """Sees every ``certs`` row of a split snapshot's pass first (``lecentral metrics``:
    :class:`lecentral.fleet.spool.MetricsPass`; ``fleet --json``:
    :class:`lecentral.fleet.jsonpass.JsonPass`; ``fleet``:
    :class:`lecentral.fleet.textpass.TextPass`)."""

    #: rows kept out of the snapshot
    taken: int
    #: what the pass aggregates per current target (:class:`~lecentral.fleet.current.Split`):
    #: ``"json"`` (``fleet --json``), ``"text"`` (``fleet``), or ``""`` (as ``listing`` says)
    wants: str

    def start(self, keys: Sequence[str], split: Split) -> None:
        """The pass's column names and its split (:meth:`Split.cut`), before the first row."""

    def take(self, row: Any, fp: str | None) -> bool:
        """True to keep ``row`` (its fingerprint ``fp``) out of the snapshot."""

    def abandon(self, why: str) -> None:
        """What was taken cannot stand for the judge's view: the caller computes it anew."""

    def twin(self) -> Self:
        """Another taker of the same kind, with temporary files of its own, for the rows a
        forked process reads (:mod:`lecentral.fleet.halves`)."""

    def handoff(self) -> dict[str, Any]:
        """In that process, after its rows: everything collected written into the files,
        what else the taker learned (picklable)."""

    def merge(self, twin: Self, state: dict[str, Any]) -> None:
        """After this taker's own rows: ``twin``'s (its ``state`` from :meth:`handoff`), as
        if this taker had taken them after its own."""

    def close(self) -> None:
        """Close (and so remove) the temporary files."""
