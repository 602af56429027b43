"""Run a command whose system resolver is 127.0.0.1, so that a lookup meant to fail never leaves
the machine (tests send traffic to 127.0.0.1 only).

A mount namespace of its own (``unshare --mount``, util-linux; the tests run as root) gets its own
/etc/resolv.conf, bind-mounted over the real one inside that namespace only: nothing answers DNS
on 127.0.0.1:53, so the C library fails at once with "Temporary failure in name resolution".
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_with_loopback_resolver(argv: list[str], tmp_path: Path,
                               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, str(resolv), *argv],
                          capture_output=True, text=True, timeout=timeout, check=False)
