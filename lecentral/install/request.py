"""The request to an operator (``action = "mail"`` or ``"syslog"``), kept until it is delivered.

With those actions nobody restarts the daemon but the operator the mail (or syslog line) asks to:
a request lost because the relay or syslog was down means the new certificate is never used, and
the old one expires in service. So the request is saved in the entry's state directory before
it is sent, dropped once its channel (the mail or the syslog notifier) has delivered it, and sent
again by every run until then.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.errors import InstallError, LecentralError
from lecentral.files_io import fsync_dir, replace_atomically
from lecentral.install.result import Result
from lecentral.records import Notification

if TYPE_CHECKING:
    from lecentral.records import CertEntry
    from lecentral.registry import Registry

log = logging.getLogger(__name__)

REQUEST = "restart-request.json"
#: the actions whose request must be delivered, and the notifier that delivers it
CHANNELS = {"mail": "MailNotifier", "syslog": "SyslogNotifier"}


class OperatorRequest:
    """``<state_dir>/entries/<service>-<name>/restart-request.json``: an undelivered request."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / REQUEST

    def save(self, notification: Notification, channel: str) -> None:
        """Keep ``notification`` and its ``channel`` (0600, atomically) until :meth:`drop`: saved
        before sending, so a run killed in between still leaves it to send."""
        data = {"severity": notification.severity, "subject": notification.subject,
                "body": notification.body, "name": notification.name, "channel": channel}
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_atomically(str(self.path), json.dumps(data, indent=1).encode(), os.geteuid(),
                           os.getegid(), 0o600)

    def load(self) -> tuple[Notification, str] | None:
        """The pending request and its channel, or ``None``."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_bytes())
            channel = str(data.get("channel", "mail"))
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r}")
            return Notification(str(data["severity"]), str(data["subject"]), str(data["body"]),
                                data.get("name")), channel
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"{self.path} (a request to an operator not yet sent) is unreadable "
                               f"({exc}); read it and tell the operator yourself, then delete "
                               "it") from None

    def drop(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(str(self.workdir))


def deliver(registry: Registry, settings: dict[str, Any], notification: Notification,
            channel: str, *, channel_only: bool = False) -> str | None:
    """Send ``notification``; return why ``channel`` (``mail``, ``syslog``) did not deliver it,
    or ``None`` once it did. The other notifiers get it too, unless ``channel_only`` (a retry:
    they had it)."""
    from lecentral.builtin import notifiers

    wanted = getattr(notifiers, CHANNELS[channel])
    error: str | None = f"no {channel} notifier is configured (see [notify])"
    for notifier in registry.notifiers(settings):
        is_channel = isinstance(notifier, wanted)
        if channel_only and not is_channel:
            continue
        try:
            notifier.send(notification)
        except Exception as exc:  # noqa: BLE001 - one notifier failing must not stop the others
            log.warning("could not send %r through %s: %s", notification.subject,
                        type(notifier).__name__, exc)
            if is_channel:
                error = str(exc)
            continue
        if is_channel:
            error = None
    return error


class OperatorRequests:
    """One run's operator requests: sent and kept, or sent again from an earlier run."""

    def __init__(self, registry: Registry, settings: dict[str, Any], state_dir: Path,
                 report: Callable[[str, str, str], None]) -> None:
        self.registry = registry
        self.settings = settings
        self.state_dir = state_dir
        self.report = report  # the agent's optional central event log
        self.sent: set[str] = set()  # entries whose request this run already sent

    def pending(self, entry: CertEntry) -> OperatorRequest:
        return OperatorRequest(self.state_dir / "entries" / entry.id)

    def send(self, entry: CertEntry, note: Notification) -> str | None:
        """Keep the request, send it, drop it once its channel (the entry's action) delivered
        it; return the error if not."""
        self.sent.add(entry.id)
        request, kept = self.pending(entry), ""
        try:
            request.save(note, entry.action)  # first: a run killed while sending leaves it to send
        except OSError as exc:
            kept = f" (and it could not be kept for the next run: {exc.filename}: {exc.strerror})"
        error = deliver(self.registry, self.settings, note, entry.action)
        if error is None:
            request.drop()
            return None
        return error + kept

    def unsent(self, entry: CertEntry, installed: Result, error: str) -> Result:
        """Files in place, but nobody was told to restart the daemon: a failure until sent."""
        message = (f"{installed.message}; the new files are in place, but the request to restart "
                   f"{entry.service} by hand ({entry.action}) could NOT be sent: {error}; every "
                   "run sends it again "
                   f"until it is delivered ({self.pending(entry).path})")
        log.error("%s: %s", entry.label, message)
        self.report(entry.name, "request-unsent", message)
        installed.message = " ".join(message.split())
        return installed

    def resend(self, entry: CertEntry, result: Result, dry_run: bool) -> Result:
        """Send again a request an earlier run could not send; until it goes out, the entry fails."""
        if entry.id in self.sent:
            return result
        request = self.pending(entry)
        try:
            pending = request.load()
            if pending is None:
                return result
            note, channel = pending
            if dry_run:
                result.message += f"; would send again the unsent request in {request.path}"
                return result
            if result.status == "installed" and entry.action == "reload":
                request.drop()  # the daemon was reloaded with the newer files: nothing to ask
                return result
            resent = Notification(note.severity, note.subject, "(Sent again: an earlier run could "
                                  f"not send this request.)\n\n{note.body}", note.name)
            error = deliver(self.registry, self.settings, resent, channel, channel_only=True)
            if error is None:
                request.drop()
                result.message += "; the request to restart by hand that an earlier run could not " \
                                  "send was sent now"
                return result
        except (OSError, LecentralError) as exc:
            error = str(exc)
        message = (f"the request to restart {entry.service} by hand from an earlier run is still "
                   f"not sent: {error}; every run sends it again until it is delivered "
                   f"({request.path})")
        log.error("%s: %s", entry.label, message)
        status = result.status if result.failed else "failed"
        return Result(entry.name, entry.service, status, f"{result.message}; {message}",
                      result.fingerprint, result.expires, result.paths, result.plan)
