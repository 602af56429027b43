"""RFC 2136 dynamic updates of one TXT record, signed with TSIG, with errors a sysadmin can act on.

Every failure becomes a :class:`DnsError` naming the key, the server and the zone, saying what
the server meant and what to change. The secret never appears: only the key's name.
"""

from __future__ import annotations

import logging
from typing import Any

from lecentral.dns.wire import QUERY_TIMEOUT
from lecentral.dns.zones import ChallengeTarget
from lecentral.errors import DnsError

log = logging.getLogger(__name__)

#: TTL of the challenge TXT: short, so a stale value is not cached for long anywhere
TXT_TTL = 60


def _txt(value: str) -> Any:
    """A TXT rdata holding ``value`` as one string, built directly (no zone-file quoting)."""
    import dns.rdataclass
    import dns.rdatatype
    from dns.rdtypes.ANY.TXT import TXT

    if not value or len(value) > 255 or not value.isascii():
        raise DnsError(f"TXT value {value!r} must be 1-255 ASCII characters")
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])


def add_txt(target: ChallengeTarget, value: str) -> None:
    """Add ``value`` to the TXT RRset at ``target.fqdn`` (other values there stay)."""
    message = _message(target)
    message.add(target.fqdn, TXT_TTL, _txt(value))
    _send(target, message, f"adding TXT {target.fqdn}")


def delete_txt(target: ChallengeTarget, value: str) -> None:
    """Delete exactly the TXT ``value`` at ``target.fqdn`` (deleting an absent value is no error)."""
    message = _message(target)
    message.delete(target.fqdn, _txt(value))
    _send(target, message, f"deleting TXT {target.fqdn}")


def probe_txt(target: ChallengeTarget, value: str) -> None:
    """Add and delete TXT ``value`` at ``target.fqdn`` in one UPDATE message: DnsError if the
    server refuses either (RFC 2136 §3.4: the key's permission is checked for each record before
    any is applied). The message is applied whole or not at all, so nothing can stay behind, and
    its net change is none: BIND neither bumps the zone's serial nor writes its journal nor sends
    NOTIFY for it. Half the round trips of an add and a delete."""
    message = _message(target)
    message.add(target.fqdn, TXT_TTL, _txt(value))
    message.delete(target.fqdn, _txt(value))
    _send(target, message, f"testing an update of TXT {target.fqdn}")


def _message(target: ChallengeTarget) -> Any:
    import dns.update

    return dns.update.UpdateMessage(target.zone + ".", keyring=target.key.dnspython_key(),
                                    keyname=None, keyalgorithm=target.key.algorithm)


def _send(target: ChallengeTarget, message: Any, action: str) -> None:
    """Send an update over TCP and turn every failure into a DnsError."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.tsig

    who = f"TSIG key {target.key.name} rejected by server {target.server} for zone {target.zone}"
    try:
        response = dns.query.tcp(message, target.server.host, port=target.server.port, timeout=QUERY_TIMEOUT)
    except dns.tsig.PeerBadKey:
        source = target.key.source or "the key file"
        # named looks keys up by name *and* algorithm: the commonest cause is a key file written
        # by hand (tsig-keygen's default is hmac-sha256) for a named.conf key of another algorithm
        raise DnsError(f"{who} (BADKEY: the server has no key of that name and algorithm {target.key.algorithm}). "
                       f"If named.conf defines key \"{target.key.name}\" with another algorithm, make the "
                       f"algorithm in {source} the same; otherwise define the key in named.conf with the same "
                       f"algorithm and secret as {source}, or configure the key named.conf has") from None
    except (dns.tsig.PeerBadSignature, dns.tsig.BadSignature):
        raise DnsError(f"{who} (BADSIG: the secret in {target.key.source or 'the key file'} differs from the "
                       f"server's). Copy the key clause from the server's named.conf into the key file") from None
    except (dns.tsig.PeerBadTime, dns.tsig.BadTime):
        raise DnsError(f"{who} (BADTIME: this host's clock and the server's differ by more than the TSIG fudge "
                       f"of 5 minutes). Synchronise both clocks (chrony/ntp) and retry") from None
    except dns.tsig.PeerError as exc:
        raise DnsError(f"{who} ({type(exc).__name__}: {exc})") from None
    except dns.exception.Timeout:
        raise DnsError(f"no answer from DNS server {target.server} within {QUERY_TIMEOUT:g}s while {action} in "
                       f"zone {target.zone}; is named running, and is TCP port {target.server.port} open?") from None
    except OSError as exc:
        raise DnsError(f"DNS server {target.server} unreachable while {action} in zone {target.zone}: "
                       f"{exc.strerror or exc}; is named running and listening on that address and port "
                       f"([dns] server)?") from None
    except dns.exception.DNSException as exc:
        raise DnsError(f"bad answer from DNS server {target.server} while {action} in zone {target.zone}: "
                       f"{exc}") from None
    rcode = response.rcode()
    if rcode == dns.rcode.NOERROR:
        log.debug("%s in zone %s on %s with key %s: done", action, target.zone, target.server, target.key.name)
        return
    raise DnsError(_explain(target, rcode, action))


def _explain(target: ChallengeTarget, rcode: int, action: str) -> str:
    """The message for a non-zero update rcode."""
    import dns.rcode

    name = dns.rcode.to_text(dns.rcode.Rcode(rcode))
    head = f"DNS server {target.server} refused {action} in zone {target.zone} with key {target.key.name} ({name})"
    if rcode == dns.rcode.REFUSED:
        if not _zone_accepts_updates(target):
            return (f"{head}: the zone takes no dynamic updates right now. It is frozen (run `rndc thaw "
                    f"{target.zone}` on the server) or named.conf gives it no update-policy for this key")
        return (f"{head}: the zone's update-policy does not grant key {target.key.name} TXT at "
                f"{target.fqdn.rstrip('.')}. Add to zone \"{target.zone}\" in named.conf: update-policy {{ grant "
                f"{target.key.name} name {target.fqdn} TXT; }}; (or use the key that zone grants)")
    if rcode == dns.rcode.NOTAUTH:
        return (f"{head}: the server is not authoritative for {target.zone} (a secondary, or the zone is not "
                f"loaded there). Send updates to the zone's primary: [dns] server or "
                f"[dns.zones.\"{target.zone}\"] server")
    if rcode == dns.rcode.NOTZONE:
        return f"{head}: {target.fqdn} is not inside zone {target.zone}"
    if rcode == dns.rcode.SERVFAIL:
        return (f"{head}: the server failed to apply it. If the zone is frozen, run `rndc thaw {target.zone}`; "
                f"otherwise see named's log (journal not writable? zone not loaded?)")
    return f"{head}; see named's log on {target.server}"


def _zone_accepts_updates(target: ChallengeTarget) -> bool:
    """Whether an update with only a prerequisite (the zone apex exists) is accepted.

    BIND answers REFUSED both when the policy does not grant the record and when the zone is
    frozen; a prerequisite-only update touches no record, so the policy cannot refuse it: REFUSED
    then means the zone itself takes no updates (frozen, or no update-policy for this key).
    """
    import dns.query
    import dns.rcode

    message = _message(target)
    message.present(target.zone + ".")
    try:
        response = dns.query.tcp(message, target.server.host, port=target.server.port, timeout=QUERY_TIMEOUT)
    except Exception:  # noqa: BLE001  the probe only refines a message; its own failure must not hide the first error
        return True
    return bool(response.rcode() != dns.rcode.REFUSED)
