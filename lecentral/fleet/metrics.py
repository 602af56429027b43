"""``lecentral metrics``: the fleet view as Prometheus metrics, for node_exporter's textfile collector.

The exposition format is written by ``prometheus_client`` (never by hand): one custom collector
turns the :class:`~lecentral.fleet.model.FleetView` into metric families when the registry is
rendered, which stays fast for 10,000 certificates × several hosts (no per-sample ``Gauge``
objects). Names follow the Prometheus conventions: ``lecentral_`` prefix, base units in the name
(``_seconds``, ``_timestamp_seconds``), gauges only (every value here can go down).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lecentral.fleet.model import (
    CURRENT,
    DEAD_TIMER,
    DISABLED,
    NEVER_RUN,
    SEVERITY,
    FleetView,
)

if TYPE_CHECKING:
    from lecentral.leftovers import Leftover

log = logging.getLogger(__name__)

TARGET_LABELS = ["name", "kind", "host", "target"]


class FleetCollector(Collector):
    """The samples of one fleet view (and the leftovers), built when the registry is rendered."""

    def __init__(self, view: FleetView, leftovers: Sequence[Leftover],
                 lifetimes: Mapping[str, int] | None = None) -> None:
        self.view = view
        self.leftovers = leftovers
        self.lifetimes = lifetimes or {}

    def collect(self) -> Iterator[Metric]:
        view = self.view

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        expiry = gauge("lecentral_certificate_expiry_timestamp_seconds",
                       "notAfter of the database's certificate (ts_expire), Unix time.", ["name"])
        lifetime = gauge("lecentral_certificate_lifetime_seconds",
                         "notAfter - notBefore of the database's certificate (for alerts on a "
                         "fraction of it).", ["name"])
        failures = gauge("lecentral_certificate_failures",
                         "Failed renewals in a row (count_fail_update; 0 after a success).",
                         ["name"])
        attempt = gauge("lecentral_certificate_last_attempt_timestamp_seconds",
                        "Last issuance or failed attempt (ts_last_update), Unix time.", ["name"])
        # Sparse families: a target that is current serves the database's certificate, whose
        # values are above already; only the others get a series (10,000 names × 3 hosts would
        # otherwise mean 150,000 mostly redundant samples, a slow scrape and a big textfile).
        cert_state = gauge("lecentral_certificate_state",
                           "1 for the fleet state of a certificate that is not current (its worst "
                           "target's); absent when current or disabled.", ["name", "state"])
        # one series per target of the whole fleet (30,000 for 10,000 names on 3 hosts): two
        # labels, not four (the target names its host: "host (entry)" or the probed URL); the
        # sparse families below carry kind and host for the targets that are not current
        current = gauge("lecentral_deployment_current",
                        "1 if the target installed and serves the database's certificate, else 0.",
                        ["name", "target"])
        state = gauge("lecentral_deployment_state",
                      "1 for the state of a target that is not current (pending, stale, "
                      "mismatch, unreachable, silent); absent when current.",
                      [*TARGET_LABELS, "state"])
        installed = gauge("lecentral_installed_expiry_timestamp_seconds",
                          "notAfter of the certificate an agent reported installed, for targets "
                          "that are not current.", TARGET_LABELS)
        served = gauge("lecentral_served_expiry_timestamp_seconds",
                       "notAfter of the certificate the service presented (agent or probe), for "
                       "targets that are not current.", TARGET_LABELS)
        reported = gauge("lecentral_deployment_last_report_timestamp_seconds",
                         "When the agent last reported (or the probe last looked at) a target that "
                         "is not current.", TARGET_LABELS)
        seen: set[str] = set()
        seen_targets: set[tuple[str, ...]] = set()
        for cert in view.certs:
            key = cert.name.lower()
            if key in seen:  # two rows whose names differ only in case: one series each
                log.warning("certs has two rows named %s (case differs): the metrics show the "
                            "first", cert.name)
                continue
            seen.add(key)
            name = cert.name
            if not cert.enabled:  # not managed, not judged: its state only, no series to alert on
                cert_state.add_metric([name, DISABLED], 1)
                continue
            if cert.ts_expire and cert.ts_expire > 1 and cert.fingerprint:
                expiry.add_metric([name], cert.ts_expire)
                if cert.name in self.lifetimes:
                    lifetime.add_metric([name], self.lifetimes[cert.name])
            failures.add_metric([name], cert.count_fail_update)
            if cert.ts_last_update and cert.ts_last_update > 1:
                attempt.add_metric([name], cert.ts_last_update)
            if cert.state not in (CURRENT, DISABLED):
                cert_state.add_metric([name, cert.state], 1)
            for t in cert.targets:
                labels = [name, t.kind, t.host or "", t.target]
                if tuple(labels) in seen_targets:
                    continue
                seen_targets.add(tuple(labels))
                current.add_metric([name, t.target], 1 if t.state == CURRENT else 0)
                if t.state == CURRENT:
                    continue
                state.add_metric([*labels, t.state], 1)
                if t.installed is not None and t.installed.not_after:
                    installed.add_metric(labels, t.installed.not_after)
                if t.served is not None and t.served.not_after:
                    served.add_metric(labels, t.served.not_after)
                if t.ts:
                    reported.add_metric(labels, t.ts)
        yield from (expiry, lifetime, failures, attempt, cert_state, current, state, installed,
                    served, reported)

        states = gauge("lecentral_certificates", "Certificates per fleet state.", ["state"])
        for s in SEVERITY:
            states.add_metric([s], sum(1 for c in view.certs if c.state == s))
        yield states

        run_labels = ["kind", "host"]
        last_success = gauge("lecentral_run_last_success_timestamp_seconds",
                             "End of the latest run with exit code 0 (renew, agent, probe).",
                             run_labels)
        last_end = gauge("lecentral_run_last_timestamp_seconds",
                         "End of the latest run, whatever its result.", run_labels)
        duration = gauge("lecentral_run_duration_seconds", "Duration of the latest run.",
                         run_labels)
        exit_code = gauge("lecentral_run_exit_code", "Exit code of the latest run (0: success).",
                          run_labels)
        for run in view.runs:
            labels = [run.kind, run.host]
            if run.last_success is not None:
                last_success.add_metric(labels, run.last_success)
            last_end.add_metric(labels, run.ts_end)
            duration.add_metric(labels, max(0, run.ts_end - run.ts_start))
            exit_code.add_metric(labels, run.exit_code)
        yield from (last_success, last_end, duration, exit_code)

        timer = gauge("lecentral_renew_timer_ok",
                      "1 if a lecentral renew run ended within [fleet] renew_max_age, 0 if not; "
                      "absent before the first run (see lecentral_renew_never_run).", [])
        never = gauge("lecentral_renew_never_run",
                      "1 while no lecentral renew run was ever recorded (a new installation: "
                      "lecentral check says WARNING), else 0.", [])
        never.add_metric([], 1 if view.renew_state == NEVER_RUN else 0)
        if view.renew_state != NEVER_RUN:
            timer.add_metric([], 0 if view.renew_state == DEAD_TIMER else 1)  # alive
        yield from (timer, never)
        left = gauge("lecentral_challenge_leftovers",
                     "Challenge records (TXT, webroot files) left behind by failed cleanups.", [])
        left.add_metric([], len(self.leftovers))
        yield left
        generated = gauge("lecentral_metrics_generated_timestamp_seconds",
                          "When lecentral metrics computed these values.", [])
        generated.add_metric([], view.now)
        yield generated


def exposition(view: FleetView, leftovers: Sequence[Leftover],
               lifetimes: Mapping[str, int] | None = None) -> bytes:
    """The Prometheus text format of ``view``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(view, leftovers, lifetimes))
    return generate_latest(registry)


def write_textfile(path: str, data: bytes) -> None:
    """Replace ``path`` atomically (mode 0644): node_exporter never reads a half-written file."""
    from lecentral.errors import LecentralError
    from lecentral.files_io import replace_atomically

    path = os.path.abspath(path)
    try:
        replace_atomically(path, data, os.geteuid(), os.getegid(), 0o644)
    except OSError as exc:
        raise LecentralError(f"cannot write the metrics to {path}: {exc.strerror or exc}; the "
                             "previous file (if any) is unchanged") from None
