"""The plaintext dialogues that come before the TLS handshake: SMTP, IMAP and POP3 STARTTLS.

Each function takes a connected :class:`Channel`, speaks just enough of the protocol to have the
service switch to TLS, and returns the bytes to send as a polite goodbye once the certificate is
read. A reply that does not belong to the protocol is reported with the text the service sent, so
"wrong port" or "wrong scheme" is obvious from the message.
"""

from __future__ import annotations

from collections.abc import Callable

from lecentral.verify.channel import Channel, printable

_WRONG_PROTOCOL = "is this port speaking {proto}? check the port and the scheme of the verify URL"


def _hint(proto: str) -> str:
    return _WRONG_PROTOCOL.format(proto=proto)


# ------------------------------------------------------------------------------------------- SMTP


def _smtp_reply(channel: Channel, stage: str) -> tuple[int, list[str]]:
    """A (possibly multi-line) SMTP reply: its code and the text of each line."""
    lines: list[str] = []
    while True:
        line = channel.readline(stage)
        code = line[:3]
        if len(line) < 3 or not code.isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise channel.error(f"expected an SMTP reply while {stage}, got {printable(line)!r}",
                                _hint("SMTP"))
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(code), lines


def smtp_starttls(channel: Channel) -> bytes:
    """Greeting 220, EHLO, STARTTLS in the extensions, STARTTLS answered 220 (RFC 3207)."""
    code, text = _smtp_reply(channel, "reading the SMTP greeting")
    if code != 220:
        raise channel.error(f"the SMTP server refused the session: {code} {printable(text[0])}",
                            "check the server's log and client restrictions")
    channel.send(f"EHLO {channel.target.ehlo}\r\n".encode("ascii"), "sending EHLO")
    code, text = _smtp_reply(channel, "reading the EHLO reply")
    if code != 250:
        raise channel.error(f"EHLO {channel.target.ehlo} was refused: {code} {printable(text[0])}",
                            "set another name with ?ehlo=NAME in the verify URL")
    extensions = [line.split(" ", 1)[0].upper() for line in text[1:]]
    if "STARTTLS" not in extensions:
        raise channel.error(f"STARTTLS not offered (EHLO lists: {', '.join(extensions) or 'nothing'})",
                            "enable TLS in the mail server (Postfix: smtpd_tls_security_level = may)")
    channel.send(b"STARTTLS\r\n", "sending STARTTLS")
    code, text = _smtp_reply(channel, "reading the STARTTLS reply")
    if code != 220:
        raise channel.error(f"STARTTLS refused: {code} {printable(text[0])}",
                            "check the server's TLS certificate settings and its log")
    return b"QUIT\r\n"


# ------------------------------------------------------------------------------------------- IMAP


def _imap_tagged(channel: Channel, tag: str, stage: str) -> tuple[str, list[str]]:
    """Lines up to the tagged completion: (its status and text, the untagged lines before it)."""
    untagged: list[str] = []
    while True:
        line = channel.readline(stage)
        if line.startswith(f"{tag} "):
            return line[len(tag) + 1:], untagged
        if not line.startswith(("* ", "+ ")):
            raise channel.error(f"expected an IMAP response while {stage}, got {printable(line)!r}",
                                _hint("IMAP"))
        untagged.append(line[2:])


def imap_starttls(channel: Channel) -> bytes:
    """Greeting ``* OK``, CAPABILITY listing STARTTLS, ``STARTTLS`` answered OK (RFC 3501)."""
    greeting = channel.readline("reading the IMAP greeting")
    if greeting.upper().startswith("* BYE"):
        raise channel.error(f"the IMAP server refused the session: {printable(greeting)}",
                            "check the server's log")
    if not greeting.upper().startswith(("* OK", "* PREAUTH")):
        raise channel.error(f"expected an IMAP greeting (* OK), got {printable(greeting)!r}",
                            _hint("IMAP"))
    channel.send(b"lc1 CAPABILITY\r\n", "sending CAPABILITY")
    status, untagged = _imap_tagged(channel, "lc1", "reading the CAPABILITY reply")
    capabilities = {word.upper() for line in untagged if line.upper().startswith("CAPABILITY ")
                    for word in line.split()[1:]}
    if "STARTTLS" not in capabilities:
        raise channel.error("STARTTLS not offered by the IMAP server",
                            "enable TLS in the IMAP server (Dovecot: ssl = yes)")
    channel.send(b"lc2 STARTTLS\r\n", "sending STARTTLS")
    status, _ = _imap_tagged(channel, "lc2", "reading the STARTTLS reply")
    if not status.upper().startswith("OK"):
        raise channel.error(f"STARTTLS refused: {printable(status)}",
                            "check the server's TLS certificate settings and its log")
    return b"lc3 LOGOUT\r\n"


# ------------------------------------------------------------------------------------------- POP3


def pop3_starttls(channel: Channel) -> bytes:
    """Greeting ``+OK``, CAPA listing STLS (when CAPA is known), ``STLS`` answered +OK (RFC 2595)."""
    greeting = channel.readline("reading the POP3 greeting")
    if not greeting.startswith("+OK"):
        if greeting.startswith("-ERR"):
            raise channel.error(f"the POP3 server refused the session: {printable(greeting)}",
                                "check the server's log")
        raise channel.error(f"expected a POP3 greeting (+OK), got {printable(greeting)!r}",
                            _hint("POP3"))
    channel.send(b"CAPA\r\n", "sending CAPA")
    reply = channel.readline("reading the CAPA reply")
    if reply.startswith("+OK"):
        capabilities = []
        while (line := channel.readline("reading the CAPA list")) != ".":
            capabilities.append(line.split(" ", 1)[0].upper())
        if "STLS" not in capabilities:
            raise channel.error(f"STLS not offered (CAPA lists: {', '.join(capabilities) or 'nothing'})",
                                "enable TLS in the POP3 server (Dovecot: ssl = yes)")
    elif not reply.startswith("-ERR"):  # -ERR: a server without CAPA; STLS may still work
        raise channel.error(f"expected a POP3 reply to CAPA, got {printable(reply)!r}", _hint("POP3"))
    channel.send(b"STLS\r\n", "sending STLS")
    reply = channel.readline("reading the STLS reply")
    if not reply.startswith("+OK"):
        raise channel.error(f"STLS refused: {printable(reply)}",
                            "check the server's TLS certificate settings and its log")
    return b"QUIT\r\n"


#: protocol -> dialogue; ``tls`` has none.
DIALOGUES: dict[str, Callable[[Channel], bytes]] = {
    "smtp": smtp_starttls,
    "imap": imap_starttls,
    "pop3": pop3_starttls,
}
