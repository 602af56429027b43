"""The request to an operator (``action = "mail"``) that kept until a mail relay took it.

With ``action = "mail"`` nobody restarts the daemon but the operator the mail asks to: a request
lost because the relay was down means the new certificate is never used, and the old one expires
in service. So the request is saved in the entry's state directory before it is sent, dropped
once the mail notifier has delivered it, and sent again by every run until then.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.errors import InstallError
from lecentral.install.fileset import fsync_dir, replace_atomically
from lecentral.types import Notification

if TYPE_CHECKING:
    from lecentral.registry import Registry

log = logging.getLogger(__name__)

REQUEST = "restart-request.json"


class OperatorRequest:
    """``<state_dir>/entries/<service>-<name>/restart-request.json``: an undelivered request."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / REQUEST

    def save(self, notification: Notification) -> None:
        """Keep ``notification`` (0600, atomically) until :meth:`drop`: saved before sending, so
        a run killed in between still leaves it to send."""
        data = {"severity": notification.severity, "subject": notification.subject,
                "body": notification.body, "name": notification.name}
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_atomically(str(self.path), json.dumps(data, indent=1).encode(), os.geteuid(),
                           os.getegid(), 0o600)

    def load(self) -> Notification | None:
        """The pending request, or ``None``."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_bytes())
            return Notification(str(data["severity"]), str(data["subject"]), str(data["body"]),
                                data.get("name"))
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


def deliver(registry: Registry, settings: dict[str, Any], notification: Notification, *,
            mail_only: bool = False) -> str | None:
    """Send ``notification``; return why the *mail* did not go out, or ``None`` once it did.

    The other notifiers (syslog...) get it too, unless ``mail_only`` (a retry: they had it).
    """
    from lecentral.builtin.notifiers import MailNotifier

    error: str | None = "no mail notifier is configured ([notify] mail_to is empty)"
    for notifier in registry.notifiers(settings):
        is_mail = isinstance(notifier, MailNotifier)
        if mail_only and not is_mail:
            continue
        try:
            notifier.send(notification)
        except Exception as exc:  # noqa: BLE001 - one notifier failing must not stop the others
            log.warning("could not send %r through %s: %s", notification.subject,
                        type(notifier).__name__, exc)
            if is_mail:
                error = str(exc)
            continue
        if is_mail:
            error = None
    return error
