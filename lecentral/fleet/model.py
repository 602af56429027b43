"""The fleet as :mod:`lecentral.fleet.states` computes it: plain records for the views.

``lecentral fleet`` prints them, ``lecentral check`` turns them into a monitoring-plugin line,
``lecentral metrics`` into Prometheus samples; none of them reads the database itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# States of one target (a host's entry, or an endpoint the central host probes).
CURRENT = "current"  # serves (and has installed) the database's certificate
#: the detail of a current target (the full view's, and what a split view's counted ones have)
CURRENT_DETAIL = "the database's certificate"
PENDING = "pending"  # still the previous certificate, but the new one is younger than stale_after
STALE = "stale"  # still the previous (or an older) certificate for longer than stale_after
MISMATCH = "mismatch"  # a certificate for another key or another name
UNREACHABLE = "unreachable"  # nothing could be read from the endpoint
SILENT = "silent"  # the host's agent has not reported within agent_max_age
NEVER_REPORTED = "never-reported"  # an enabled, issued certificate that no agent or probe knows
NOT_ISSUED = "not-issued"  # enabled, but the database holds no certificate yet
DISABLED = "disabled"  # the certificate is disabled: not judged

#: states that are alerts; the others are fine (or not judged)
ALERTING = (STALE, MISMATCH, UNREACHABLE, SILENT)
#: worst first: a certificate's state is its worst target's
SEVERITY = (SILENT, MISMATCH, STALE, UNREACHABLE, NEVER_REPORTED, NOT_ISSUED, PENDING, CURRENT,
            DISABLED)

# States of the central renew timer.
TIMER_OK = "current"
DEAD_TIMER = "dead-timer"  # no completed renew run within renew_max_age
NEVER_RUN = "never-run"  # no renew run recorded at all
#: the latest renew run stopped on a problem of its configuration or plugins (exit 2 or 3): its
#: certificates were not tried (BLOCKED, uncounted), so no certificate's state shows it
RUN_ERROR = "run-error"
#: the exit statuses of lecentral renew that are the run's own problem (lecentral.errors)
RUN_ERROR_EXITS = (2, 3)


def worst(states: list[str]) -> str:
    """The most severe of ``states`` (``current`` for none)."""
    return min(states, key=SEVERITY.index) if states else CURRENT


# Seen, Target and CertFleet are the records made 100,000 times a run: slots, not frozen (a frozen
# dataclass's __init__ costs twice as much); treat them as read-only all the same.
@dataclass(slots=True)
class Seen:
    """One look at a certificate: installed in files, or presented by a service."""

    fingerprint: str | None  # SHA-256 hex of the leaf; None when nothing was seen
    not_after: int | None = None
    url: str | None = None  # where it was presented (None: installed files)
    error: str | None = None  # why nothing was seen
    ts: int | None = None  # when


@dataclass(slots=True)
class Target:
    """One place a certificate lives: a host's ``[[cert]]`` entry, or a probed endpoint."""

    kind: str  # "agent" (reported by a host's agent) or "probe" (seen by the central host)
    target: str  # "host (entry)" or the probed URL
    host: str | None  # the agent's host; for a probe, the URL's host
    installed: Seen | None  # agent only
    served: Seen | None
    ts: int | None  # last report (agent) or probe
    state: str
    detail: str  # why, in words
    result: str | None = None  # the agent's last status for the entry (installed, failed...)
    db_user: str | None = None  # who wrote the report, as the database recorded it

    @property
    def alerting(self) -> bool:
        return self.state in ALERTING


@dataclass(slots=True)
class CertFleet:
    """One row of ``certs`` and every place it is installed or served."""

    name: str
    enabled: bool
    fingerprint: str | None  # the database's leaf
    ts_expire: int | None
    ts_last_update: int | None
    count_fail_update: int
    targets: list[Target] = field(default_factory=list)
    state: str = CURRENT  # the worst target's state (or never-reported / disabled)
    #: current targets SQL counted and left out of ``targets`` (a split view: check, metrics)
    current_targets: int = 0


@dataclass(frozen=True, slots=True)
class Unclaimed:
    """A report (an agent's entry, a probe result) filed under a name no row of ``certs`` has:
    a certificate removed (or never added) that a host still holds, and nothing renews."""

    name: str  # as the report files it
    kind: str  # "agent" or "probe", as Target.kind
    host: str  # the agent's host; for a probe, the URL's host ("" if it has none)
    target: str  # "host (entry)" or the probed URL, as Target.target
    ts: int | None  # when the agent last reported it (or the probe last looked)
    entry: str | None = None  # the agent's [[cert]] entry (None for a probe)


@dataclass(frozen=True)
class Run:
    """One run of ``lecentral renew``, ``lecentral probe`` or ``lecentral-install run``."""

    kind: str  # renew, agent, probe
    host: str
    ts_start: int
    ts_end: int
    exit_code: int
    counts: dict[str, int]
    message: str = ""


@dataclass(frozen=True)
class RunInfo(Run):
    """The latest recorded run of one kind on one host, with its latest success."""

    last_success: int | None = None  # ts_end of the latest run with exit code 0


@dataclass(frozen=True)
class FleetSettings:
    """``[fleet]``, in seconds."""

    stale_after: int = 2 * 86400
    agent_max_age: int = 2 * 86400
    renew_max_age: int = 2 * 86400


@dataclass(frozen=True)
class FleetView:
    """Everything ``fleet``, ``check`` and ``metrics`` show, computed at ``now``."""

    now: int
    settings: FleetSettings
    certs: list[CertFleet]
    renew_state: str  # current, dead-timer, never-run
    renew_detail: str
    runs: list[RunInfo]  # the latest run per (kind, host)
    #: a split view: the targets SQL found current are counted in ``CertFleet.current_targets``
    #: and not listed (lecentral.fleet.current); state changes need the full view
    split: bool = False
    #: certificates the database found plainly OK and only counted, not in ``certs``: for
    #: check enabled ones with nothing to say (not the soonest expiry), for ``fleet
    #: --problems`` disabled or current ones
    plain_ok: int = 0
    #: (name, target, ts) of each report (an agent's entry, a probe) filed under a name no row
    #: of ``certs`` has: a certificate removed (or never added) that a host still holds
    unclaimed: list[tuple[str, str, int | None]] = field(default_factory=list)
    #: the same reports, one :class:`Unclaimed` each, in the same order (with kind and host)
    unclaimed_reports: list[Unclaimed] = field(default_factory=list)
    #: a split view read with ``listing``: the targets SQL only counted as current
    #: ("host (entry)"), per certificate name as stored; None otherwise
    counted: dict[str, list[str]] | None = None

    def alerts(self) -> list[tuple[CertFleet, Target]]:
        """Every alerting target, certificate by certificate."""
        return [(c, t) for c in self.certs for t in c.targets if t.alerting]
