"""This host's name, as the event log, the renew lock and the alerts record it."""

from __future__ import annotations

import functools
import socket


@functools.cache
def this_host() -> str:
    """The fully qualified name of this host, looked up once and only when first needed (the
    look-up can take seconds on a broken resolver: never at import time)."""
    return socket.getfqdn()
