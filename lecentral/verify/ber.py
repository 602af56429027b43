"""The two LDAP messages a StartTLS check needs, in BER, hand-coded (RFC 4511 4.12, 4.14).

A whole LDAP library (ldap3) for one request and one response would cost the agent its start-up
time; these are small and fixed. Only definite lengths exist in LDAP's BER, which keeps the reader
short. Responses are bounded in size, so a service that is not LDAP cannot make us read forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lecentral.verify.channel import printable

if TYPE_CHECKING:
    from lecentral.verify.channel import Channel

STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
MAX_MESSAGE = 65536

_SEQUENCE = 0x30
_INTEGER = 0x02
_ENUMERATED = 0x0A
_OCTET_STRING = 0x04
_EXTENDED_REQUEST = 0x77  # [APPLICATION 23] constructed
_EXTENDED_RESPONSE = 0x78  # [APPLICATION 24] constructed
_REQUEST_NAME = 0x80  # [0] primitive

#: UnbindRequest, message id 2: [APPLICATION 2] NULL.
UNBIND_REQUEST = bytes([_SEQUENCE, 5, _INTEGER, 1, 2, 0x42, 0])

RESULT_NAMES = {
    0: "success", 1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded",
    7: "authMethodNotSupported", 8: "strongerAuthRequired", 12: "unavailableCriticalExtension",
    13: "confidentialityRequired", 51: "busy", 52: "unavailable", 53: "unwillingToPerform",
    80: "other",
}


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def starttls_request(message_id: int = 1) -> bytes:
    """LDAPMessage { messageID, ExtendedRequest { requestName 1.3.6.1.4.1.1466.20037 } }."""
    mid = message_id.to_bytes(max(1, (message_id.bit_length() + 8) // 8), "big")
    op = _tlv(_EXTENDED_REQUEST, _tlv(_REQUEST_NAME, STARTTLS_OID))
    return _tlv(_SEQUENCE, _tlv(_INTEGER, mid) + op)


@dataclass(frozen=True)
class ExtendedResponse:
    """The parts of an LDAP ExtendedResponse a StartTLS check reads."""

    message_id: int
    result_code: int
    diagnostic: str


def _split(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) elements laid end to end in ``data``; ValueError if malformed."""
    items = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("truncated element")
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first & 0x80:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise ValueError("bad length")
            size = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        else:
            size = first
        if pos + size > len(data):
            raise ValueError("element longer than its message")
        items.append((tag, data[pos:pos + size]))
        pos += size
    return items


def _read_message(channel: Channel, stage: str) -> bytes:
    """One whole BER element from the channel (tag, length, value), as bytes."""
    head = channel.read_exact(2, stage)
    if head[0] != _SEQUENCE:
        raise channel.error(f"expected an LDAP message while {stage}, got {printable(head)!r}",
                            "is this port speaking LDAP? check the port and the verify URL's scheme")
    length_bytes = b""
    if head[1] & 0x80:
        count = head[1] & 0x7F
        if count == 0 or count > 4:
            raise channel.error(f"malformed LDAP message length while {stage}", "is this LDAP?")
        length_bytes = channel.read_exact(count, stage)
        size = int.from_bytes(length_bytes, "big")
    else:
        size = head[1]
    if size > MAX_MESSAGE:
        raise channel.error(f"LDAP message of {size} bytes while {stage}; refusing", "is this LDAP?")
    return head + length_bytes + channel.read_exact(size, stage)


def read_extended_response(channel: Channel) -> ExtendedResponse:
    """Read the reply to the StartTLS request; a malformed one is a VerifyError quoting it."""
    stage = "reading the LDAP StartTLS response"
    message = _read_message(channel, stage)
    try:
        ((_, body),) = _split(message)
        parts = _split(body)
        if len(parts) < 2 or parts[0][0] != _INTEGER or parts[1][0] != _EXTENDED_RESPONSE:
            raise ValueError("not an ExtendedResponse")
        message_id = int.from_bytes(parts[0][1], "big")
        fields = _split(parts[1][1])
        if len(fields) < 3 or fields[0][0] != _ENUMERATED or fields[2][0] != _OCTET_STRING:
            raise ValueError("ExtendedResponse without an LDAPResult")
        code = int.from_bytes(fields[0][1], "big")
        diagnostic = fields[2][1].decode("utf-8", "replace")
    except ValueError as exc:
        raise channel.error(f"malformed LDAP response ({exc}): {printable(message.hex(), 80)}",
                            "is this port speaking LDAP?") from None
    return ExtendedResponse(message_id, code, diagnostic)
