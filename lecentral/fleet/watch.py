"""Load the fleet view for the central CLI, and tell its state changes (once each)."""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lecentral.fleet.current import Limit
from lecentral.fleet.model import FleetSettings, FleetView
from lecentral.fleet.states import changes, compute, counted_in_full, notification_for
from lecentral.fleet.store import FleetStore
from lecentral.fleet.taker import RowTaker

if TYPE_CHECKING:
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Store
    from lecentral.registry import Registry

log = logging.getLogger(__name__)


@contextmanager
def bulk() -> Iterator[None]:
    """No cyclic garbage collection while a view of 100,000 targets is built and printed: the
    collector would walk every new record again and again (a third of the time) for cycles
    that these plain records never make."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settings_of(config: CentralConfig) -> FleetSettings:
    """``[fleet]`` as the judge needs it."""
    fleet = config.fleet
    return FleetSettings(stale_after=fleet.stale_after, agent_max_age=fleet.agent_max_age,
                         renew_max_age=fleet.renew_max_age)


def load_view(store: Store, config: CentralConfig, now: int, names: Iterable[str] = (),
              split: bool = False, listing: bool = False,
              ok_limits: Sequence[Limit] | None = None,
              count_above: int = 0,
              problems_only: bool = False,
              taker: RowTaker | None = None,
              exact: bool = False) -> tuple[FleetStore, FleetView]:
    """The fleet as it stands at ``now`` (all certificates, or ``names``).

    ``split``: the targets SQL finds current are only counted, not judged in Python
    (:mod:`lecentral.fleet.current`); what check and metrics need, not what notify needs;
    ``listing``: and named (:meth:`FleetStore.current_targets`), for metrics;
    ``ok_limits`` (with ``split``, check of the whole fleet): the certificates the database
    finds plainly OK are only counted (``FleetView.plain_ok``), if more than ``count_above``;
    ``problems_only`` (with ``split``, ``fleet --problems``): likewise those disabled or plainly
    current; ``taker`` (with ``split``): sees every ``certs`` row first and keeps the ones it
    takes out of the view (:mod:`lecentral.fleet.spool`); ``exact``: ``names`` are stored
    names, read exactly (:meth:`FleetStore.snapshot`).
    """
    fleet = FleetStore(store)
    settings = settings_of(config)
    after = now - settings.agent_max_age if split else None
    snap = fleet.snapshot(names, current_after=after, listing=listing,
                          ok_limits=ok_limits if split else None, now=now,
                          count_above=count_above, problems_only=split and problems_only,
                          taker=taker if split else None, exact=exact)
    return fleet, compute(snap, settings, now, fleet)


def load_for_changes(store: Store, config: CentralConfig, now: int
                     ) -> tuple[FleetStore, FleetView]:
    """The whole fleet at ``now`` for :func:`notify_changes` (``lecentral renew`` and
    ``lecentral probe`` after a complete run): a split view whose plainly current targets SQL
    counted and listed (each is current; only the others are judged in Python), not the full
    view (at 100,000 certificates × 3 hosts: 19 s and 900 MB a run); the full view where the
    listed targets do not add up to the counted ones."""
    fleet, view = load_view(store, config, now, split=True, listing=True)
    if not counted_in_full(view):
        log.info("the fleet's state changes from the full view: the split view's counted "
                 "targets were not all listed")
        return load_view(store, config, now)
    return fleet, view


def _log_changes(fleet: FleetStore, logged: Sequence[tuple[str, str, str, int]]) -> None:
    """The event log's lines of the changes told (the alerts went out: the lines are extra,
    a failure is a warning): together; where that failed but the database is there, each on
    its own, so that one line the database refuses does not take the others with it."""
    from lecentral.errors import DatabaseUnavailable

    try:
        fleet.store.record_events(logged)
        return
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not log %d fleet changes in the event log: %s", len(logged), exc)
        if isinstance(exc, DatabaseUnavailable):  # (each would wait as long again)
            return
    for name, kind, message, when in logged:
        try:
            fleet.store.record_event(name, kind, message, when)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("could not log the fleet change of %s: %s", name, exc)


def notify_changes(fleet: FleetStore, view: FleetView, registry: Registry,
                   config: CentralConfig, *, complete: bool = True) -> list[str]:
    """Send every state change since the last call to the notifiers, the event log and the
    ``lecentral_fleet_state_changed`` hook; remember the new states. Return the unsent errors.

    A change whose alert could not be sent is not remembered, so the next call tries again.
    Only a ``complete`` view (all certificates) forgets subjects that disappeared.
    """
    before = fleet.states()
    changed, gone = changes(view, before)
    if not complete:
        gone = []
    delivered = []
    settings = dataclasses.asdict(config.notify)
    errors: list[str] = []
    logged: list[tuple[str, str, str, int]] = []  # (written together: one transaction)
    for old, new in changed:
        note = notification_for(old, new)
        unsent: list[str] = []
        if note is not None:  # an alert, or the end of one: mail, syslog, the event log
            log.log(logging.INFO if note.severity == "info" else logging.WARNING, "%s",
                    note.subject)
            unsent = registry.notify(note, settings)
            errors += unsent
            if new.name != "-":
                logged.append((new.name, "fleet", f"{new.target}: {new.state}: {new.detail}",
                               view.now))
        # every change, a first sighting too: a CMDB or a dashboard follows the whole fleet
        registry.emit("lecentral_fleet_state_changed", name=new.name, target=new.target,
                      old=old, new=new.state, detail=new.detail)
        if not unsent:
            delivered.append(new)
    _log_changes(fleet, logged)
    fleet.save_states(delivered, gone)
    return errors
