"""Where one certificate's issue time goes: named phases, timed per certificate.

The renew job opens a :func:`recording` around each certificate's attempt (in its worker thread);
the issuer marks its steps with :func:`phase`, and the job marks the save. ``lecentral renew
--json`` shows the result per attempt (``"phases"``: name -> seconds) and ``lecentral -v renew``
logs it, so the slow step of a run is visible without a profiler. Outside a recording,
:func:`phase` costs one ``perf_counter`` call and records nothing.

A recording may also collect each phase's CPU seconds (this thread's ``thread_time``): with
several workers sharing one interpreter a phase's wall time is mostly waiting for its turn, and
its CPU time says what it costs (``"phases_cpu"`` in ``lecentral renew --json``).

The built-in issuers use these names (a plugin's issuer may add its own)::

    dns_check     the once-per-zone update-permission test (add and delete a random TXT)
    account       getting the run's ACME client: the first certificates wait while the CA's
                  directory is read and the account registered (once per CA and run; with
                  [renew] processes, before the pass in the first process, and the directory
                  and account read again by each worker process)
    order         newOrder and reading its authorizations
    dns_publish   the RFC 2136 updates adding the challenge TXT records
    propagation   until every authoritative nameserver serves them
    validation    answering the challenges and polling the authorizations until valid
    finalize      finalize, waiting for the certificate, downloading the chain
    dns_remove    the RFC 2136 updates removing the TXT records
    save          the spool copy and the database transaction
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "lecentral_phases", default=None)
_current_cpu: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "lecentral_phases_cpu", default=None)


@contextlib.contextmanager
def recording(cpu: dict[str, float] | None = None) -> Iterator[dict[str, float]]:
    """Collect the phases of the block (this thread) into the dict yielded, in order of first use;
    and their CPU seconds (this thread's) into ``cpu`` when one is given."""
    phases: dict[str, float] = {}
    token = _current.set(phases)
    cpu_token = _current_cpu.set(cpu)
    try:
        yield phases
    finally:
        _current_cpu.reset(cpu_token)
        _current.reset(token)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall time to phase ``name`` of the current recording (if any); a phase
    entered twice (two zones, a retry) adds up. Recorded also when the block raises."""
    started = time.perf_counter()
    cpu = _current_cpu.get()
    cpu_started = time.thread_time() if cpu is not None else 0.0
    try:
        yield
    finally:
        phases = _current.get()
        if phases is not None:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
        if cpu is not None:
            cpu[name] = cpu.get(name, 0.0) + time.thread_time() - cpu_started


def describe(phases: dict[str, float]) -> str:
    """``order 0.021 s, dns_publish 0.004 s, ...`` for a log line."""
    return ", ".join(f"{name} {seconds:.3f} s" for name, seconds in phases.items())


def current_phases() -> dict[str, float]:
    """The phases recorded so far in this thread's recording (empty outside one)."""
    return dict(_current.get() or {})
