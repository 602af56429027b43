"""Removing a challenge record an earlier run left behind (a row of ``lecentral_leftovers``).

What the table holds is database input: it is validated before anything is deleted, and only the
exact record (one TXT value in its own zone, one file named like a token in an
``.well-known/acme-challenge`` directory, reached without symbolic links) is ever removed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.errors import DnsError, LecentralError
from lecentral.host import this_host
from lecentral.leftovers import DNS_TXT, HTTP01_FILE, Leftover

if TYPE_CHECKING:
    from lecentral.config import CentralConfig
    from lecentral.dns.wire import Server

_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_TXT_VALUE = re.compile(r"^[!#-~]{1,255}$")  # printable ASCII without space or double quote


def clean(leftover: Leftover, config: CentralConfig,
          on_secret: Callable[[str], None] | None = None) -> list[str] | None:
    """Remove ``leftover`` now; LecentralError naming it (and what to do) if it is still there.

    ``data`` comes from the database: it is validated before anything is deleted, and only the
    exact record (one TXT value, one file named like a token in an ``acme-challenge`` directory)
    is ever removed.

    Returns None when it was removed, or, for a TXT record its server did not serve (an
    RFC 2136 delete of a value that is not there succeeds all the same: a removal must not be
    claimed then), the other TXT values the server serves at that name (sorted, maybe none).
    """
    if leftover.kind == DNS_TXT:
        return _clean_txt(leftover, config, on_secret)
    if leftover.kind == HTTP01_FILE:
        _clean_file(leftover)
        return None
    raise LecentralError(f"leftover {leftover.id} of {leftover.name} has kind "
                         f"{leftover.kind!r}, which this lecentral cannot remove; remove "
                         f"{leftover.target} by hand, then its row from lecentral_leftovers")


def _text(data: dict[str, Any], key: str, leftover: Leftover) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise LecentralError(f"leftover {leftover.id} of {leftover.name}: its record has no valid "
                             f"{key!r}; remove {leftover.target} by hand, then its row from "
                             "lecentral_leftovers")
    return value


def _dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 254 and all(_DNS_LABEL.match(label) for label in labels)


def _clean_txt(leftover: Leftover, config: CentralConfig,
               on_secret: Callable[[str], None] | None) -> list[str] | None:
    from lecentral.dns.challenge import DnsChallenges, PublishedTxt
    from lecentral.dns.wire import parse_server

    data = leftover.data
    record = PublishedTxt(**{k: _text(data, k, leftover)
                             for k in ("name", "fqdn", "zone", "server", "key_name", "value")})
    fqdn, zone = record.fqdn.rstrip(".").lower(), record.zone.rstrip(".").lower()
    if not (_dns_name(fqdn) and _dns_name(zone) and (fqdn == zone or fqdn.endswith("." + zone))
            and _TXT_VALUE.match(record.value)):
        raise LecentralError(f"leftover {leftover.id} of {leftover.name}: {leftover.describe()} "
                             "is not a TXT record lecentral could have written (database edited?); "
                             "check and remove it by hand, then its row from lecentral_leftovers")
    served = _served_txt(parse_server(record.server, f"leftover {leftover.id} server"), fqdn)
    if served is not None and record.value not in served:
        return sorted(served)
    DnsChallenges(config.dns, on_secret).delete(record)
    return None


def _served_txt(server: Server, fqdn: str) -> set[str] | None:
    """The TXT values ``server`` serves with authority at ``fqdn``; None if it cannot tell (no
    answer, not authoritative: the delete is then sent all the same, as before)."""
    import dns.flags
    import dns.name
    import dns.rcode

    from lecentral.dns.wire import ask, rrset_at, txt_strings

    qname = dns.name.from_text(fqdn)
    try:
        response = ask(server, qname, "TXT")
    except DnsError:
        return None
    if not response.flags & dns.flags.AA or response.rcode() not in (dns.rcode.NOERROR,
                                                                      dns.rcode.NXDOMAIN):
        return None
    return txt_strings(rrset_at(response.answer, qname, "TXT"))


def _clean_file(leftover: Leftover) -> None:
    if leftover.host != this_host():
        raise LecentralError(f"{leftover.describe()} was written on {leftover.host}, not here "
                             f"({this_host()}): the next lecentral renew there removes it")
    path = Path(_text(leftover.data, "path", leftover))
    if not (path.is_absolute() and os.path.normpath(path) == str(path)
            and path.parent.name == "acme-challenge" and path.parent.parent.name == ".well-known"
            and _TOKEN.match(path.name)):
        raise LecentralError(f"leftover {leftover.id} of {leftover.name}: {path} is not a "
                             "challenge file lecentral could have written (database edited?); "
                             "check and remove it by hand, then its row from lecentral_leftovers")
    if os.path.realpath(path.parent) != str(path.parent):
        raise LecentralError(f"{path.parent} is now reached through a symbolic link: not following "
                             f"it; remove {path} by hand, then its row from lecentral_leftovers")
    try:
        path.unlink()
    except FileNotFoundError:
        pass  # removed by hand meanwhile: that is a success too
    except OSError as exc:
        raise LecentralError(f"cannot remove the challenge file {path} ({exc.strerror}); fix the "
                             "directory's permissions or attributes (lsattr), or remove it by "
                             "hand") from None
    dirs = leftover.data.get("dirs")
    for directory in reversed(dirs if isinstance(dirs, list) else []):
        if isinstance(directory, str) and Path(directory) in (path.parent, path.parent.parent):
            with contextlib.suppress(OSError):  # not empty (a site's own file): it stays
                os.rmdir(directory)
