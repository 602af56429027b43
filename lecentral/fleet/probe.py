"""``lecentral probe``: the central host looks at every endpoint of a certificate itself.

An agent reports what its own service presented, seen from the server; the central host dials
the same endpoints from outside (every verify URL the agents reported, plus the endpoints an
operator added with ``lecentral endpoint add``), so a certificate that is installed but not
served, or served only on loopback, shows up too. Each endpoint is dialed with the certificate's
name as SNI (a virtual host picks its certificate by it) unless its URL names one.

Agents' URLs come from the database, written by the agents' own users: each is checked by its
verifier (scheme, host, port, parameters) before anything is dialed, and a bad one is a result
that says so. Every failure is a result, never an exception: one dead server must not hide the
others.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlsplit

from lecentral.fleet.states import probe_url_host
from lecentral.fleet.store import FleetStore, ProbeResult, ProbeTarget
from lecentral.verify.url import masked_url

if TYPE_CHECKING:
    from lecentral.certificates import Certificate
    from lecentral.registry import Registry

__all__ = ["MAX_URL", "ProbeResult", "ProbeTarget", "probe", "targets", "with_sni"]

log = logging.getLogger(__name__)

#: the longest URL the probe tables hold (``lecentral_probes.url``, ``lecentral_endpoints.url``)
MAX_URL = 500

#: seconds a probe may overrun its timeout before it is given up as hanging (a verifier that
#: ignores its deadline): its result says so and the run goes on without it
GRACE = 2.0


def with_sni(url: str, name: str) -> str:
    """``url`` with ``?sni=NAME`` added, unless it names an SNI already (``?sni=``, even empty,
    is the operator's explicit choice) or ``name`` cannot be one (a wildcard)."""
    parts = urlsplit(url)
    if any(key == "sni" for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    name = name.strip().rstrip(".").lower()
    if not name or "*" in name:
        return url
    query = f"{parts.query}&sni={quote(name, safe='.-_')}" if parts.query else \
        f"sni={quote(name, safe='.-_')}"
    return parts._replace(query=query).geturl()


def targets(fleet_store: FleetStore, names: Iterable[str] = ()) -> list[ProbeTarget]:
    """Every endpoint to probe for ``names`` (all certificates when empty): the verify URLs the
    agents reported (a loopback host replaced by the reporting host, since the central host must
    dial the server itself) and the operator's endpoints; SNI the certificate's name; each
    (name, URL) once, an agent's first."""
    wanted = list(names)
    found: dict[tuple[str, str], ProbeTarget] = {}
    for name, host, url in fleet_store.reported_urls(wanted):
        url = masked_url(url)
        try:
            dial = with_sni(probe_url_host(url, host), name)
        except ValueError:  # not even a URL (a port out of range...): probe says why, undialed
            dial = url
        if len(dial) > MAX_URL:
            log.warning("%s: the verify URL reported by %s is longer than %d characters; not probed",
                        name, host, MAX_URL)
            continue
        found.setdefault((name, dial), ProbeTarget(name=name, url=dial, source="agent"))
    for row in fleet_store.endpoints(wanted):
        name, url = str(row["name"]), str(row["url"])
        found.setdefault((name, url), ProbeTarget(name=name, url=url, source="operator"))
    return sorted(found.values(), key=lambda t: (t.name.lower(), t.url))


def probe_one(registry: Registry, target: ProbeTarget, timeout: float) -> ProbeResult:
    """Dial one endpoint; whatever happens, a result (an ``error`` when no leaf was read)."""
    from lecentral.certificates import Certificate
    from lecentral.errors import LecentralError
    from lecentral.verify import check_verify_url, presented_leaf

    def failed(error: str) -> ProbeResult:
        return ProbeResult(name=target.name, url=target.url, source=target.source, error=error)

    try:
        check_verify_url(registry, target.url)  # the URL came from the database: check it first
        der = presented_leaf(registry, target.url, timeout)
    except LecentralError as exc:  # VerifyError (unreachable...), ConfigError (a bad URL)...
        return failed(str(exc))
    except Exception as exc:  # a plugin's bug is this endpoint's result, not a crash
        log.debug("probe of %s failed", target.url, exc_info=True)
        return failed(f"probe {target.url}: {type(exc).__name__}: {exc}")
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        cert = Certificate.load(der, f"the certificate presented at {target.url}")
    except LecentralError as exc:  # served, but unparsable: the fingerprint still says which
        log.warning("%s", exc)
        return ProbeResult(name=target.name, url=target.url, source=target.source,
                           fingerprint=fingerprint)
    return ProbeResult(name=target.name, url=target.url, source=target.source,
                       fingerprint=fingerprint, not_after=cert.not_after, names=_dns_sans(cert),
                       key_md5=cert.md5_modulus)


def _dns_sans(cert: Certificate) -> list[str]:
    """The leaf's DNS subjectAltNames (what TLS clients match; the CN only without any SAN)."""
    from cryptography import x509

    try:
        san = cert.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.names
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def probe(registry: Registry, targets: Sequence[ProbeTarget], timeout: float, workers: int,
          progress: Callable[[int, int], None] | None = None) -> list[ProbeResult]:
    """Probe ``targets`` ``workers`` at a time, each within ``timeout`` seconds; one result per
    target, in the same order. ``progress(done, total)`` is called as results come in.

    The verifiers keep their own deadline; one that overruns it by more than :data:`GRACE`
    seconds is given up (its thread is left to finish on its own) so the run always ends.
    """
    total = len(targets)
    results: list[ProbeResult | None] = [None] * total
    if not total:
        return []
    started: dict[int, float] = {}
    lock = threading.Lock()

    def run(index: int) -> ProbeResult:
        with lock:
            started[index] = time.monotonic()
        return probe_one(registry, targets[index], timeout)

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, total)),
                              thread_name_prefix="lecentral-probe")
    futures: dict[Future[ProbeResult], int] = {pool.submit(run, i): i for i in range(total)}
    pending = set(futures)
    done_count = 0
    try:
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                index = futures[future]
                try:
                    results[index] = future.result()
                except Exception as exc:  # noqa: BLE001 - probe_one returns; this is a last guard
                    results[index] = _error(targets[index], f"probe {targets[index].url}: {exc}")
            now = time.monotonic()
            with lock:
                hung = {f for f in pending
                        if futures[f] in started and now - started[futures[f]] > timeout + GRACE}
            for future in hung:
                target = targets[futures[future]]
                log.warning("probe of %s did not end within its %gs timeout; given up", target.url,
                            timeout)
                results[futures[future]] = _error(
                    target, f"probe {target.url}: no answer within the {timeout:g}s timeout "
                    "(the verifier did not stop on time)")
            pending -= hung
            done_count += len(done) + len(hung)
            if progress is not None and (done or hung):
                progress(done_count, total)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [r if r is not None else _error(t, f"probe {t.url}: not run")
            for r, t in zip(results, targets, strict=True)]


def _error(target: ProbeTarget, error: str) -> ProbeResult:
    return ProbeResult(name=target.name, url=target.url, source=target.source, error=error)
