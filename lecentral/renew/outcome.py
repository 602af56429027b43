"""What a renew run was asked, and what happened: the records the job, the recovery of earlier
runs and the ``lecentral renew`` command share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lecentral.leftovers import Leftover
    from lecentral.store.rows import LockHolder

#: outcomes that make ``lecentral renew`` exit non-zero
FAILED = ("failed", "refused", "invalid")

#: the outcome of a row not tried because of a run-level problem (:class:`RunProblem`): not the
#: row's failure, so not counted in ``count_fail_update`` nor alerted per row
BLOCKED = "blocked"

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class RenewRequest:
    """What to renew: ``names`` (empty: every row), and how.

    ``once``: one pass, no retry rounds. ``lock_timeout``: seconds to wait for the renew lock
    before the first pass (later rounds wait at least ``renew.retry_pause``)."""

    names: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    once: bool = False
    lock_timeout: float = 0.0


@dataclass
class Outcome:
    """What happened to one certificate in one pass."""

    name: str
    #: issued | failed | refused | invalid | blocked | not-due | would-issue, or skipped: a row
    #: asked for by name that is disabled (a refusal: the command exits 1)
    status: str
    message: str
    issuer: str | None = None
    seconds: float = 0.0
    ts_expire: int | None = None
    count_fail_update: int | None = None
    round: int = 1
    leftovers: list[Leftover] = field(default_factory=list)  # challenge records left behind
    issuer_ca: str | None = None  # the [[acme.ca]] name of the CA that issued ("default": [acme])
    #: where the attempt's time went: phase name -> seconds (see lecentral.phases)
    phases: dict[str, float] = field(default_factory=dict)
    #: the CPU seconds of this worker thread in each phase, and for the whole attempt
    phases_cpu: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0


#: what a :class:`RunProblem` is, as its alert's subject says it
CONFIGURATION_PROBLEM = "configuration problem"
PLUGIN_PROBLEM = "plugin problem"
WORKER_DIED = "a worker process died"
LEASE_LOST = "the renew lease was lost"
#: ... in the order an alert names them
CAUSES = (CONFIGURATION_PROBLEM, PLUGIN_PROBLEM, WORKER_DIED, LEASE_LOST)


@dataclass
class RunProblem:
    """A problem of the run, not of any row: of its configuration (an account key that cannot be
    created or read, a TSIG key file that cannot be read or parsed), of a plugin (an issuer that
    cannot be built), a worker process (``[renew] processes``) that died before it reported its
    certificates, a Galera renew lease lost. Reported once for the run (one message, one alert
    whose subject says its ``cause``, the exit status of its error: 2 configuration, 3 plugin,
    1 a dead worker, 4 a lost lease); the rows it stopped are ``blocked``, their failure counts
    left as they were."""

    message: str
    exit_code: int
    names: list[str] = field(default_factory=list)  # the rows it stopped, in name order
    cause: str = CONFIGURATION_PROBLEM


@dataclass
class RenewReport:
    """Every outcome of a run (the last one per name first in ``final``)."""

    outcomes: list[Outcome] = field(default_factory=list)
    #: another run held the renew lock: nothing done (round 1), or the retries stopped
    locked_out: bool = False
    locked_out_round: int = 0
    lock_holder: LockHolder | None = None
    rounds: int = 0
    start: list[Outcome] = field(default_factory=list)  # spooled certificates, before round 1
    cleaned: list[Leftover] = field(default_factory=list)  # earlier leftovers removed now
    kept: list[Leftover] = field(default_factory=list)  # earlier leftovers still there
    #: the run's own time, added up over its rounds: start_of_run, select, issue (the passes'
    #: workers; each certificate's phases are in its outcome)
    phases: dict[str, float] = field(default_factory=dict)
    #: enabled rows a sweep did not read: unchanged since checked and not in their renewal
    #: window (decided in SQL, lecentral/store/facts.py); not in ``outcomes``, all not due
    unchanged: int = 0
    problems: list[RunProblem] = field(default_factory=list)  # the run's own, once each
    disabled: list[str] = field(default_factory=list)  # rows not renewed: enable is not 'Y'
    #: the run was asked to stop (SIGTERM, SIGINT): why, and its exit status (128 + signal)
    stopped: str = ""
    stopped_exit: int = 0

    @property
    def leftovers(self) -> list[Leftover]:
        """Challenge records still left behind at the end of the run (earlier ones, then new)."""
        return [*self.kept, *(left for o in self.outcomes for left in o.leftovers)]

    @property
    def ok(self) -> bool:
        """Nothing failed, nothing is left behind, no pass locked out, no run-level problem, no
        row asked for by name was disabled (``skipped``): ``lecentral renew`` exits 0."""
        return not (self.failed or self.leftovers or self.locked_out or self.problems
                    or self.stopped
                    or any(o.status in FAILED for o in self.start)
                    or any(o.status == "skipped" for o in self.final))

    @property
    def final(self) -> list[Outcome]:
        """The latest outcome of each name, in name order."""
        last: dict[str, Outcome] = {}
        for outcome in self.outcomes:
            last[outcome.name] = outcome
        return [last[n] for n in sorted(last)]

    @property
    def failed(self) -> list[Outcome]:
        """Names whose latest outcome is a failure."""
        return [o for o in self.final if o.status in FAILED]
