"""What the agent tells the central database about this host (``[agent] report = true``).

After a run, for every configured entry: the certificate installed in its files and the one its
service presents (one look per verify URL, or the verification the run just did), written to
``lecentral_deployments`` together with the run in ``lecentral_runs``, in one transaction. The
database refusing it (down, no grant, a trigger saying this account may not report for this host)
never undoes an install: the run says the report was not delivered, and exits 1.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lecentral import __version__
from lecentral.certificates import Certificate
from lecentral.errors import LecentralError
from lecentral.fleet.store import Deployment, FleetStore, Run
from lecentral.install.result import Result

if TYPE_CHECKING:
    from lecentral.interfaces import Installer, Service, Store
    from lecentral.records import CertEntry
    from lecentral.registry import Registry

log = logging.getLogger(__name__)

#: seconds for the one look at each verify URL of an entry that was not installed in this run
LOOK_TIMEOUT = 10.0


def _facts(data: bytes | None) -> Certificate | None:
    if not data:
        return None
    try:
        return Certificate.load(data)
    except LecentralError:
        return None


def observe(registry: Registry, entry: CertEntry, service: Service, installer: Installer,
            result: Result, now: int) -> Deployment:
    """What is installed for ``entry`` and what its service presents, after ``result``."""
    from lecentral.verify import presented_leaf

    try:
        installed = _facts(installer.installed())
    except LecentralError:
        installed = None
    urls = list(service.verify_urls(entry)) if entry.action == "reload" else list(entry.verify)
    served: Certificate | None = None
    served_url = served_error = None
    verified = result.status == "installed" and entry.action == "reload" and urls
    for url in urls:
        if verified and installed is not None:  # the run just saw it there, twice
            served, served_url = installed, url
            break
        try:
            seen = Certificate.load(presented_leaf(registry, url, min(entry.verify_timeout,
                                                                       LOOK_TIMEOUT)))
        except LecentralError as exc:
            served, served_url, served_error = None, url, str(exc)
            break  # the first URL that fails is the one to report
        if served is None or seen.fingerprint != served.fingerprint:
            if served is not None:  # two URLs, two certificates: report the odd one
                served, served_url = seen, url
                break
            served, served_url = seen, url
    return Deployment(
        name=entry.name, entry=entry.id, service=entry.service,
        installed_fp=installed.fingerprint if installed else None,
        installed_not_after=installed.not_after if installed else None,
        served_fp=served.fingerprint if served else None,
        served_not_after=served.not_after if served else None,
        served_names=served.names if served else None,
        served_key_md5=served.md5_modulus if served else None,
        served_url=served_url, served_error=served_error,
        ts_served=now if served_url else None, verify_urls=urls,
        paths=[p for p in entry.files.values() if p], result=result.status,
        message=" ".join(result.message.split())[:2000])


def send(store: Store | None, host: str, items: Sequence[Deployment], results: Sequence[Result],
         started: int, clock: Callable[[], int], unlogged: Sequence[str] = ()) -> Result | None:
    """Write the report; a :class:`Result` (status ``failed``) saying why it was not delivered,
    or which install events the central event log refused (``unlogged``)."""
    counts = dict(Counter(r.status for r in results))
    exit_code = 1 if any(r.failed for r in results) or unlogged else 0
    now = clock()
    run = Run(kind="agent", host=host, ts_start=started, ts_end=now, exit_code=exit_code,
              counts=counts, message=f"{len(results)} {'entry' if len(results) == 1 else 'entries'}")
    try:
        if store is None:
            raise LecentralError("the database was not opened")
        FleetStore(store).report(host, items, run, __version__, now)
    except LecentralError as exc:
        reason = str(exc)
        if any(word in reason for word in ("no such table", "doesn't exist", "does not exist")):
            reason += ("; the central database lacks the fleet tables: run lecentral upgrade on "
                       "the central host")
        message = (f"the report to the central database was not delivered ({reason}); the "
                   "certificates above were handled all the same. Check the agent's database "
                   "grants (contrib/sql/) and `lecentral agent list` on the central host")
        log.error("%s", message)
        return Result("(report)", "-", "failed", " ".join(message.split()))
    if unlogged:
        message = (f"the central event log refused {len(unlogged)} install event(s) of this run "
                   f"({unlogged[0]}); deployments and the run were reported")
        return Result("(report)", "-", "failed", " ".join(message.split()))
    return None
