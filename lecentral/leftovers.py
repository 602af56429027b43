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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lecentral.host import this_host

log = logging.getLogger(__name__)

DNS_TXT = "dns-txt"
HTTP01_FILE = "http01-file"
KINDS = (DNS_TXT, HTTP01_FILE)



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


def current_name() -> str:
    """The certificate being issued in this thread (``-`` outside a renew run's issuance)."""
    collector = _current.get()
    return collector.name if collector is not None else "-"


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
