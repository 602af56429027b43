"""One certificate's attempt, in two parts: the worker's (issue, check, spool: no database) and
the saver's (:meth:`RenewJob.finish_issued`: the database, the events, the alerts).

A worker thread hands its :class:`Issued` to a saver thread and takes the next certificate at
once, so the CA and the nameservers are kept busy while the saves (group commits,
lecentral/renew/saving.py) go on beside them; a worker process ([renew] processes,
lecentral/renew/forked.py) sends it to the first process, which saves it the same way. The
certificate is in the spool before it leaves the worker, as before.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lecentral.certificates import now_ts
from lecentral.errors import ConfigError, LecentralError, PluginError
from lecentral.leftovers import collecting
from lecentral.phases import phase, recording
from lecentral.renew.checks import check_issued

if TYPE_CHECKING:
    from lecentral.certificates import Csr
    from lecentral.interfaces import IssuedCertificate
    from lecentral.leftovers import Leftover
    from lecentral.renew.context import Redactor
    from lecentral.renew.outcome import Progress
    from lecentral.renew.spool import Spooled
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

class Issuing(Protocol):
    """What a worker's part of an attempt needs of its run (a
    :class:`~lecentral.renew.job.RenewJob`; named here, not imported: the job imports this)."""

    redact: Redactor
    progress: Progress

    def _issue_with_fallback(self, row: CertRow, csr: Csr, issuer_name: str
                             ) -> tuple[IssuedCertificate, tuple[str, str], list[str]]: ...

    def _spool(self, row: CertRow, csr: Csr, crt: bytes, ca: bytes, ts_expire: int,
               issuer: str, now: int, issuer_ca: tuple[str, str]) -> Spooled | None: ...


#: threads saving what the workers issued (their transactions are grouped: lecentral/renew/saving.py)
SAVERS = 2


@dataclass
class Issued:
    """What a worker hands to a saver (a worker process to the first process) for one
    certificate: how its issuance ended, and where the time went. ``status``: issued (``issued``, ``issuer_ca``, ``tried``, ``now``, ``spooled``),
    failed, refused or blocked (``message``, ``exit_code``)."""

    name: str
    status: str
    started: float  # time.monotonic(), which is the system's: the same clock in every process
    message: str = ""
    exit_code: int = 1
    issued: IssuedCertificate | None = None
    issuer_ca: tuple[str, str] = ("", "")
    tried: list[str] = field(default_factory=list)
    now: int = 0
    spooled: Spooled | None = None
    phases: dict[str, float] = field(default_factory=dict)
    phases_cpu: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    leftovers: list[Leftover] = field(default_factory=list)


class Relayed(LecentralError):
    """A run problem (configuration, plugin) a worker met, with the exit status of its class."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def issue_and_spool(job: Issuing, row: CertRow, csr: Csr, issuer_name: str) -> Issued:
    """A worker's part of one attempt, up to the database: issue, check, spool; with where its
    time went and what it left behind."""
    started = time.monotonic()
    cpu: dict[str, float] = {}
    cpu_started = time.thread_time()
    with collecting(row.name) as found, recording(cpu) as timed:
        result = _issued(job, row, csr, issuer_name, started)
    result.phases, result.phases_cpu = timed, cpu
    result.cpu_seconds = time.thread_time() - cpu_started
    result.leftovers = list(found)
    return result


def _issued(job: Issuing, row: CertRow, csr: Csr, issuer_name: str, started: float) -> Issued:
    job.progress(row.name, f"issuing with {issuer_name}")
    try:
        issued, issuer_ca, tried = job._issue_with_fallback(row, csr, issuer_name)
    except (ConfigError, PluginError) as exc:  # the run's problem: said once, by the run
        return Issued(row.name, "blocked", started, message=job.redact(str(exc)),
                      exit_code=exc.exit_code)
    except LecentralError as exc:
        return Issued(row.name, "failed", started, message=job.redact(str(exc)))
    except Exception as exc:  # a plugin's bug fails this certificate, never the run
        log.exception("issuer %s crashed on %s", issuer_name, row.name)
        return Issued(row.name, "failed", started, message=job.redact(
            f"issuer {issuer_name} crashed: {type(exc).__name__}: {exc}"))
    now = now_ts()
    try:
        with phase("save"):
            cert = check_issued(row, csr, issued.crt, issued.ca, now)
    except LecentralError as exc:
        return Issued(row.name, "refused", started, message=job.redact(str(exc)))
    with phase("save"):
        spooled = job._spool(row, csr, issued.crt, issued.ca, cert.not_after, issuer_name, now,
                             issuer_ca)
    return Issued(row.name, "issued", started, issued=issued, issuer_ca=issuer_ca,
                  tried=tried, now=now, spooled=spooled)
