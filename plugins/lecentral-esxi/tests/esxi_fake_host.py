"""A directory laid out like an ESXi host, reached through the real sshd, serving TLS for real.

No ESXi can run here, so the *host* is a temp dir used as the remote root: the plugin's
``remote_dir`` points at ``<root>/etc/vmware/ssl`` and its commands at ``<root>/etc/init.d/...``;
everything else is real. ``rhttpproxy``'s init script (re)starts ``openssl s_server`` on a
dynamic 127.0.0.1 port with ``rui.crt``/``rui.key`` -- a real TLS listener that presents whatever
pair it was started with, like ESXi's reverse proxy on 443 -- and, like ESXi before 8.0, refuses
to start with a key that is not RSA. ``hostd`` only logs its restarts (with the certificate it
saw). ``/sbin/auto-backup.sh`` copies the pair into ``<root>/bootbank/state`` the way ESXi saves
its configuration for the next boot. ``bin/check-ssl`` is a config test: the certificate parses
and matches the key. Markers make the scripts fail on demand.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from lecentral_testing.ports import free_port
from sshd_launcher import SshServer

RHTTPPROXY = """\
#!/bin/sh
# rhttpproxy of a fake ESXi host: openssl s_server presenting rui.crt on 127.0.0.1:{port}
R={root}
SSL="$R/etc/vmware/ssl"; PID="$R/var/run/rhttpproxy.pid"; LOG="$R/var/log/rhttpproxy.log"
alive() {{  # a killed daemon stays a zombie until init reaps it: that is gone too
  kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}}
stop() {{
  [ -f "$PID" ] || return 0
  p=$(cat "$PID"); kill "$p" 2>/dev/null; i=0
  while alive "$p"; do
    i=$((i + 1)); [ "$i" -gt 200 ] && kill -9 "$p" 2>/dev/null; sleep 0.05
  done
  rm -f "$PID"
}}
start() {{
  if ! openssl pkey -in "$SSL/rui.key" -noout -text 2>/dev/null | grep -q '^modulus:'; then
    echo "rhttpproxy: $SSL/rui.key is not an RSA key; not starting" | tee -a "$LOG" >&2
    exit 1
  fi
  openssl s_server -quiet -www -accept 127.0.0.1:{port} -cert "$SSL/rui.crt" -key "$SSL/rui.key" \\
    </dev/null >>"$LOG" 2>&1 &
  p=$!; echo "$p" > "$PID"; i=0
  until {python} -c 'import socket; socket.create_connection(("127.0.0.1", {port}), 1).close()' 2>/dev/null; do
    if ! alive "$p" || [ "$i" -gt 200 ]; then
      echo "rhttpproxy: failed to start (see $LOG)" >&2; rm -f "$PID"; exit 1
    fi
    i=$((i + 1)); sleep 0.05
  done
  echo "started $(sha256sum < "$SSL/rui.crt" | cut -c1-16)" >> "$LOG"
}}
case "$1" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
"""

HOSTD = """\
#!/bin/sh
# hostd of a fake ESXi host: logs each restart and the certificate it would load
R={root}
if [ -f "$R/etc/init.d/.hostd-broken" ]; then echo "hostd: watchdog: failed to start" >&2; exit 1; fi
echo "$1 $(sha256sum < "$R/etc/vmware/ssl/rui.crt" | cut -c1-16)" >> "$R/var/log/hostd.log"
"""

AUTO_BACKUP = """\
#!/bin/sh
# ESXi saves its configuration for the next boot; here: a copy of the pair in bootbank/state
R={root}
if [ -f "$R/sbin/.auto-backup-broken" ]; then echo "auto-backup: bootbank is read-only" >&2; exit 1; fi
mkdir -p "$R/bootbank/state" && cp -p "$R/etc/vmware/ssl/rui.crt" "$R/etc/vmware/ssl/rui.key" "$R/bootbank/state/"
"""

CHECK_SSL = """\
#!/bin/sh
# config test: rui.crt parses and belongs to rui.key
R={root}; SSL="$R/etc/vmware/ssl"
if [ -f "$R/bin/.config-broken" ]; then echo "check-ssl: /etc/vmware/config: syntax error" >&2; exit 1; fi
a=$(openssl x509 -in "$SSL/rui.crt" -noout -pubkey) || exit 1
b=$(openssl pkey -in "$SSL/rui.key" -pubout) || exit 1
[ "$a" = "$b" ] || {{ echo "check-ssl: rui.crt does not match rui.key" >&2; exit 1; }}
"""


class FakeEsxiHost:
    """The fake host under ``root`` (see the module doc); :meth:`start` starts its rhttpproxy."""

    def __init__(self, root: Path, *, crt: bytes, key: bytes) -> None:
        self.root = root
        self.port = free_port()
        self.ssl_dir = root / "etc" / "vmware" / "ssl"
        for directory in (self.ssl_dir, root / "etc" / "init.d", root / "sbin", root / "bin",
                          root / "var" / "log", root / "var" / "run"):
            directory.mkdir(parents=True, exist_ok=True)
        self.crt, self.key = self.ssl_dir / "rui.crt", self.ssl_dir / "rui.key"
        self.crt.write_bytes(crt)
        self.crt.chmod(0o644)
        self.key.touch(mode=0o600)
        self.key.write_bytes(key)
        values = {"root": shlex.quote(str(root)), "port": self.port, "python": shlex.quote(sys.executable)}
        for path, text in ((self.init_script("rhttpproxy"), RHTTPPROXY), (self.init_script("hostd"), HOSTD),
                           (root / "sbin" / "auto-backup.sh", AUTO_BACKUP),
                           (root / "bin" / "check-ssl", CHECK_SSL)):
            path.write_text(text.format(**values))
            path.chmod(0o755)

    def init_script(self, name: str) -> Path:
        return self.root / "etc" / "init.d" / name

    @property
    def reload_command(self) -> str:
        """The ESXi default ``/etc/init.d/hostd restart && /etc/init.d/rhttpproxy restart``, here."""
        return (f"{shlex.quote(str(self.init_script('hostd')))} restart && "
                f"{shlex.quote(str(self.init_script('rhttpproxy')))} restart")

    @property
    def check_command(self) -> str:
        return shlex.quote(str(self.root / "bin" / "check-ssl"))

    @property
    def persist_command(self) -> str:
        return shlex.quote(str(self.root / "sbin" / "auto-backup.sh"))

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def start(self) -> FakeEsxiHost:
        subprocess.run([str(self.init_script("rhttpproxy")), "start"], check=True, timeout=60,
                       stdin=subprocess.DEVNULL)
        return self

    def restart(self) -> None:
        """What an admin at the host's console does after changing the pair by hand."""
        subprocess.run([str(self.init_script("rhttpproxy")), "restart"], check=True, timeout=60,
                       stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run([str(self.init_script("rhttpproxy")), "stop"], check=False, timeout=60,
                       stdin=subprocess.DEVNULL)

    def options(self, sshd: SshServer, **overrides: Any) -> dict[str, Any]:
        """``[cert.options]`` reaching this host through ``sshd``."""
        return {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                "identity_file": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
                "remote_dir": str(self.ssl_dir), "persist": self.persist_command, **overrides}

    # -- breaking it --------------------------------------------------------------------------

    def break_hostd(self) -> None:
        (self.root / "etc" / "init.d" / ".hostd-broken").touch()

    def break_config(self) -> None:
        (self.root / "bin" / ".config-broken").touch()

    def break_persist(self) -> None:
        (self.root / "sbin" / ".auto-backup-broken").touch()

    # -- looking at it ------------------------------------------------------------------------

    def pair(self) -> tuple[bytes, bytes]:
        return self.crt.read_bytes(), self.key.read_bytes()

    def ssl_files(self) -> dict[str, bytes]:
        """Every file in /etc/vmware/ssl (backups and temp files included), by name."""
        return {p.name: p.read_bytes() for p in sorted(self.ssl_dir.iterdir())}

    def backups(self, name: str = "rui.crt") -> list[str]:
        return sorted(p for p in self.ssl_files() if p.startswith(f"{name}.lecentral-"))

    def persisted(self) -> tuple[bytes, bytes] | None:
        state = self.root / "bootbank" / "state"
        if not (state / "rui.crt").exists():
            return None
        return (state / "rui.crt").read_bytes(), (state / "rui.key").read_bytes()

    def log(self, name: str) -> str:
        path = self.root / "var" / "log" / f"{name}.log"
        return path.read_text() if path.exists() else ""
