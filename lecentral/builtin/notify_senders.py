"""The built-in notifiers' senders: mail (smtplib) and syslog (logging.handlers).

Apart from :mod:`lecentral.builtin.notifiers` so that smtplib, ssl and email are imported only
when a notifier is built (a no-op agent run builds none).
"""

from __future__ import annotations

import logging
import logging.handlers
import smtplib
import socket
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from lecentral.interfaces import Notifier
from lecentral.records import Notification

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` or ``host`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        return value.strip("[]"), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (the port must be a number from 1 to 65535)")
    return host.strip("[]"), int(port)


class _DeadlineSMTP(smtplib.SMTP):
    """smtplib's ``timeout`` bounds each socket operation, so a relay answering every command
    slowly (one RCPT per recipient) could take it many times over; this bounds the whole
    conversation: before each command and each reply, the socket gets only what is left."""

    def __init__(self, host: str, port: int, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(host, port, timeout=self._left())

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Like socket.create_connection, but the addresses of a relay name that has several
        (IPv6 and IPv4, a round robin) share the deadline instead of getting ``timeout`` each."""
        error: OSError = OSError(f"{host} has no address")
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0,
                                                                    socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._left())
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error

    def _arm(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.settimeout(self._left())

    def send(self, s: ReadableBuffer | str) -> None:
        self._arm()
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        self._arm()
        return super().getreply()


class MailNotifier(Notifier):
    """Sends each notification as a plain-text mail through an SMTP relay.

    ``timeout`` (``smtp_timeout``) is the deadline for the whole delivery to every recipient,
    not for each step. A recipient the relay refuses is an error, even if others accepted it.
    """

    def __init__(self, mail_to: list[str], mail_from: str, smtp: str, timeout: float) -> None:
        self.mail_to = mail_to
        self.mail_from = mail_from
        try:
            self.host, self.port = split_host_port(smtp, 25)
        except ValueError as exc:
            raise ValueError(f"[notify] smtp: {exc}") from None
        if timeout <= 0:
            raise ValueError(f"[notify] smtp_timeout: {timeout:g} must be more than 0 seconds")
        self.timeout = timeout

    def send(self, notification: Notification) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"[lecentral] {notification.severity.upper()}: {notification.subject}"
        msg["From"] = self.mail_from
        msg["To"] = ", ".join(self.mail_to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=socket.getfqdn())
        msg.set_content(f"{notification.body}\n\n-- \nlecentral on {socket.getfqdn()}\n")
        deadline = time.monotonic() + self.timeout
        where = f"mail to {', '.join(self.mail_to)} through {self.host}:{self.port}"
        try:
            smtp = _DeadlineSMTP(self.host, self.port, deadline)
            try:
                refused = smtp.send_message(msg)
            finally:
                _quit(smtp)
        except (OSError, smtplib.SMTPException) as exc:
            if time.monotonic() >= deadline:
                raise OSError(f"{where} failed: not finished within smtp_timeout = "
                              f"{self.timeout:g}s ({exc})") from None
            raise OSError(f"{where} failed: {exc}") from None
        if refused:  # smtplib only raises when every recipient is refused
            said = "; ".join(f"{rcpt}: {code} {reply.decode(errors='replace')}"
                             for rcpt, (code, reply) in refused.items())
            raise OSError(f"{where}: the relay refused {', '.join(refused)} ({said}); the others "
                          "got it")


def _quit(smtp: smtplib.SMTP) -> None:
    """Say QUIT, but a mail accepted at the end of DATA stays sent if QUIT fails (or the deadline
    has just run out): reporting it unsent would send it again."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


_PRIORITY = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _RaisingSysLogHandler(logging.handlers.SysLogHandler):
    """logging swallows a failed emit (a traceback on stderr, then carries on); a notifier must
    raise, or an alert that never reached syslog counts as sent."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # noqa: PLE0704 - re-raise the exception emit() is handling


class SyslogNotifier(Notifier):
    """Logs each notification to syslog (a local socket path or ``host:port`` over UDP)."""

    def __init__(self, address: str, facility: str) -> None:
        try:
            where: str | tuple[str, int] = address if address.startswith("/") \
                else split_host_port(address, 514)
        except ValueError as exc:
            raise ValueError(f"[notify] syslog_address: {exc}") from None
        try:
            fac = logging.handlers.SysLogHandler.facility_names[facility]
        except KeyError:
            raise ValueError(f"[notify] syslog_facility {facility!r} is not a syslog facility") \
                from None
        self.where = where
        self.facility = fac

    def send(self, notification: Notification) -> None:
        where = self.where if isinstance(self.where, str) else f"{self.where[0]}:{self.where[1]}"
        try:
            handler = _RaisingSysLogHandler(address=self.where, facility=self.facility)
        except OSError as exc:
            raise OSError(f"syslog to {where} failed: {exc.strerror or exc}") from None
        handler.ident = "lecentral: "
        try:
            body = " ".join(notification.body.split())
            record = logging.LogRecord("lecentral", _PRIORITY.get(notification.severity, 20), "",
                                       0, "%s: %s", (notification.subject, body), None)
            handler.emit(record)
        except OSError as exc:
            raise OSError(f"syslog to {where} failed: {exc.strerror or exc}") from None
        finally:
            handler.close()
