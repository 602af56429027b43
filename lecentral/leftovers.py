"""Challenge records left behind: a TXT record or a webroot file an issuer could not remove.

An issuer removes what it published whatever happens; when that removal fails (named stopped,
the zone frozen, the webroot made read-only), the cleanup code calls :func:`report`. During a
renew run each certificate's issuance runs inside :func:`collecting`, so the renew job receives
the leftovers of that certificate, stores each in ``lecentral_leftovers``, writes a ``leftover``
event, mails it, shows it in the outcome table and exits non-zero. At the start of every later
run :func:`clean` is tried again on each stored leftover until it succeeds.

Outside a renew run (``lecentral dns check``) a leftover is only logged, with the manual fix.
Only two kinds exist, because a retry must know how to remove the thing:

* ``dns-txt``: ``data`` holds the :class:`~lecentral.dns.challenge.PublishedTxt` fields (the
  TSIG key's *name*; the secret is read from the configured key file at retry time);
* ``http01-file``: ``data`` holds ``path`` and ``dirs`` (the challenge directories lecentral
  created, removed again if empty); only the host that wrote the file can remove it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.errors import LecentralError
from lecentral.host import this_host

if TYPE_CHECKING:
    from lecentral.config import CentralConfig

log = logging.getLogger(__name__)

DNS_TXT = "dns-txt"
HTTP01_FILE = "http01-file"
KINDS = (DNS_TXT, HTTP01_FILE)

_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_TXT_VALUE = re.compile(r"^[!#-~]{1,255}$")  # printable ASCII without space or double quote


@dataclass(frozen=True)
class Leftover:
    """One challenge record that is still published although its challenge is over."""

    kind: str             # DNS_TXT or HTTP01_FILE
    name: str             # the certificate (``certs.name``) it was published for
    target: str           # the TXT's owner name, or the file's path
    data: dict[str, Any]  # what a retry needs (JSON-able, never a secret)
    error: str            # why the last removal failed
    host: str = field(default_factory=this_host)  # the central host that published it
    id: int | None = None  # its row in lecentral_leftovers, once stored
    ts: int = 0           # when it was left behind
    attempts: int = 1     # removals tried so far
    ts_last_try: int = 0

    def describe(self) -> str:
        """What is left where, in one line."""
        if self.kind == DNS_TXT:
            return (f'TXT {self.target} "{self.data.get("value", "?")}" in zone '
                    f'{self.data.get("zone", "?")} on {self.data.get("server", "?")}')
        if self.kind == HTTP01_FILE:
            return f"challenge file {self.target} on host {self.host}"
        return f"{self.kind} {self.target}"

    def manual_fix(self) -> str:
        """The command that removes it by hand."""
        if self.kind == DNS_TXT:
            return (f'nsupdate -k KEYFILE, then: server {_host_port(self.data.get("server", "?"))}; '
                    f'update delete {self.target} TXT "{self.data.get("value", "?")}"; send')
        return f"rm {self.target} (on {self.host})"


def _host_port(server: str) -> str:
    host, _, port = server.rpartition(":")
    return f"{host.strip('[]')} {port}" if host else server


# --- collecting during one certificate's issuance ---------------------------------------------


@dataclass
class _Collector:
    name: str
    found: list[Leftover] = field(default_factory=list)


_current: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar(
    "lecentral_leftovers", default=None)


@contextlib.contextmanager
def collecting(name: str) -> Iterator[list[Leftover]]:
    """Collect what :func:`report` is told while issuing certificate ``name`` (in this thread)."""
    collector = _Collector(name)
    token = _current.set(collector)
    try:
        yield collector.found
    finally:
        _current.reset(token)


def report(kind: str, target: str, data: dict[str, Any], error: str) -> Leftover:
    """A removal failed: log it with the manual fix and hand it to the renew job, if one runs."""
    collector = _current.get()
    leftover = Leftover(kind, collector.name if collector else "-", target, data, error)
    retried = ("lecentral renew retries removing it at the start of its next run, or remove it"
               if collector is not None else "remove it")  # outside a renew run nobody retries
    log.error("left behind: %s (%s); %s by hand: %s", leftover.describe(), error, retried,
              leftover.manual_fix())
    if collector is not None:
        collector.found.append(leftover)
    return leftover


# --- removing it again ------------------------------------------------------------------------


def clean(leftover: Leftover, config: CentralConfig) -> None:
    """Remove ``leftover`` now; LecentralError naming it (and what to do) if it is still there.

    ``data`` comes from the database: it is validated before anything is deleted, and only the
    exact record (one TXT value, one file named like a token in an ``acme-challenge`` directory)
    is ever removed.
    """
    if leftover.kind == DNS_TXT:
        _clean_txt(leftover, config)
    elif leftover.kind == HTTP01_FILE:
        _clean_file(leftover)
    else:
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


def _clean_txt(leftover: Leftover, config: CentralConfig) -> None:
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
    parse_server(record.server, f"leftover {leftover.id} server")
    DnsChallenges(config.dns).delete(record)


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
