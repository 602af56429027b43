"""Built-in notifiers: ``mail`` (smtplib) and ``syslog``, configured by the ``[notify]`` table.

The senders live in :mod:`lecentral.builtin.notify_senders`, imported when one is built.

Both are used by the central host (renewal failures) and by the agents (installs, rollbacks).
Messages are built by the engine from names and error texts, never from secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lecentral.hookspecs import hookimpl
from lecentral.interfaces import Notifier
from lecentral.types import NotifierType


def __getattr__(name: str) -> Any:
    """``MailNotifier`` and ``SyslogNotifier``, from their module on first use (PEP 562)."""
    if name in ("MailNotifier", "SyslogNotifier"):
        from lecentral.builtin import notify_senders

        return getattr(notify_senders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _mail(settings: Mapping[str, Any]) -> Notifier | None:
    mail_to = settings.get("mail_to") or []
    if isinstance(mail_to, str):
        mail_to = [mail_to]
    if not mail_to:
        return None
    from lecentral.builtin.notify_senders import MailNotifier

    return MailNotifier(list(mail_to), settings.get("mail_from", "lecentral@localhost"),
                        settings.get("smtp", "localhost:25"), settings.get("smtp_timeout", 30.0))


def _syslog(settings: Mapping[str, Any]) -> Notifier | None:
    if not settings.get("syslog"):
        return None
    from lecentral.builtin.notify_senders import SyslogNotifier

    return SyslogNotifier(settings.get("syslog_address", "/dev/log"),
                          settings.get("syslog_facility", "daemon"))


@hookimpl
def lecentral_register_notifiers() -> list[NotifierType]:
    return [
        NotifierType("mail", _mail, "mail through an SMTP relay ([notify] mail_to, mail_from, smtp)"),
        NotifierType("syslog", _syslog, "syslog ([notify] syslog = true, syslog_address)"),
    ]
