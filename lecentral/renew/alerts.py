"""A run's failure alerts: the first few one by one, the rest of each pass in one digest.

A failing certificate is alerted through ``[notify]`` as it fails: the operator hears of it at
once, and an alert sent is not lost if the run is killed later. But a failure that meets every
due certificate (the CA down, the nameserver refusing updates) would be one mail per
certificate: a thousand on a big fleet, and as many again at every retry round, where the one
thing to say is "these all fail the same way". :class:`FailureAlerts` lets the first
``[renew] alert_digest_after`` failures of a run through one by one; those after them are held,
and :meth:`FailureAlerts.digest` makes them one alert at the end of their pass, grouped by
their error (a certificate's own name in its error read as ``NAME``, so one cause is one
group). Every failure still has its event, its ``lecentral_renew_failed`` hook and its
``count_fail_update``: only the mail is shared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lecentral.records import Notification

#: groups of one digest shown in full, and names shown per group: a digest stays a readable
#: mail (and a syslog line short enough to be sent) however many certificates failed
GROUPS_SHOWN = 10
NAMES_SHOWN = 20


@dataclass(frozen=True)
class Held:
    """A failure whose alert waits for the digest."""

    name: str
    status: str  # "failed", "refused"
    error: str
    count: int  # its count_fail_update after this failure


class FailureAlerts:
    """The failure alerts of one run (shared by its worker threads)."""

    def __init__(self, separate: int) -> None:
        #: failures alerted one by one per run; then digests (``[renew] alert_digest_after``)
        self.separate = separate
        self.sent = 0
        self._held: list[Held] = []
        self._lock = threading.Lock()

    def admit(self, held: Held) -> bool:
        """True: alert this failure now, on its own; False: it is held for the pass's digest."""
        with self._lock:
            if self.sent < self.separate:
                self.sent += 1
                return True
            self._held.append(held)
            return False

    def digest(self, max_failures: int) -> Notification | None:
        """The held failures as one alert (None if none), and forget them."""
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return None
        groups: dict[tuple[str, str], list[Held]] = {}
        for one in held:
            groups.setdefault((one.status, _general(one.error, one.name)), []).append(one)
        ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
        parts = []
        for (status, error), members in ordered[:GROUPS_SHOWN]:
            names = sorted(m.name for m in members)
            more = len(names) - NAMES_SHOWN
            shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{len(members)} {status}: {error}\n    {shown}")
        if len(ordered) > GROUPS_SHOWN:
            rest = sum(len(m) for _, m in ordered[GROUPS_SHOWN:])
            parts.append(f"{rest} more, with {len(ordered) - GROUPS_SHOWN} other error(s)")
        repeated = sum(1 for one in held if one.count > 2)
        severity = "error" if repeated else "warning"
        subject = f"renew: {len(held)} more certificate(s) failed"
        if repeated:
            subject += f", {repeated} of them more than twice in a row"
        body = (f"This run alerted its first {self.separate} failure(s) one by one ([renew] "
                f"alert_digest_after); the {len(held)} certificate(s) that failed after them in "
                "this pass are in this one alert, by error (a certificate's own name read as "
                "NAME):\n\n" + "\n\n".join(parts) + "\n\nEach failure is counted "
                f"(count_fail_update; renew.max_failures {max_failures}) and in its event log: "
                "lecentral show NAME; lecentral check lists every certificate that fails.\n")
        return Notification(severity, subject, body)


def _general(error: str, name: str) -> str:
    """``error`` with ``name`` read as NAME (case as written), so that one cause is one group."""
    return error.replace(name, "NAME")
