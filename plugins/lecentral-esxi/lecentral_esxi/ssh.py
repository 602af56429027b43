"""Talking to an ESXi host through the system's OpenSSH client: key only, host key checked, no prompt.

Every remote step is one ``ssh`` run that feeds a shell script to ``/bin/sh -s`` on the host (the
ESXi Shell's busybox ``sh``). The script travels on ssh's standard input, never on a command line,
so the private key it may carry shows up neither in ``ps`` here or there nor in any log; and the
remote shell starts only once the whole script has arrived (see :func:`wrap`), so a dropped
connection runs none of it rather than half of it.

The client is locked down with options that no ``~/.ssh/config`` can loosen (command-line options
win, and by default no config file is read at all): ``BatchMode=yes`` (never a prompt, cron has no
terminal), ``StrictHostKeyChecking=yes`` with the entry's own ``known_hosts`` and no global one (an
unknown or changed host key is an error, never accepted), ``IdentitiesOnly=yes`` with the entry's
identity file, public-key authentication only, no agent or X11 forwarding, and a connect timeout.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from dataclasses import dataclass
from typing import Any

from lecentral.api import InstallError

log = logging.getLogger(__name__)

#: how much of a failing remote step's output goes into the error (and the alert)
OUTPUT_TAIL_LINES = 12
#: exit status of ssh itself failing (connection, host key, authentication)
SSH_FAILED = 255
#: where ESXi keeps root's authorized keys (not ~/.ssh: /.ssh does not survive a reboot)
ESXI_AUTHORIZED_KEYS = "/etc/ssh/keys-root/authorized_keys"


class SshConnectError(InstallError):
    """ssh itself failed (exit status 255): no connection, host key refused, login refused, or the
    connection dropped; whether a script ran, and how far, is unknown."""


class RemoteScriptError(InstallError):
    """The remote script ran and exited non-zero (``status``): it said what went wrong."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def wrap(body: str) -> bytes:
    """``body`` as a script for ``sh -s`` that runs only once it has been received whole.

    The shell parses a function definition completely before running anything, and calls it on
    the last line; SIGHUP and SIGPIPE are ignored so a client that goes away mid-run does not stop
    it between two renames. Standard input is /dev/null for the commands (an init script that
    reads stdin must not eat the rest of the script).
    """
    return (f"lecentral_main() {{\ntrap '' HUP PIPE\n{body}\n}}\nlecentral_main </dev/null\n").encode()


@dataclass(frozen=True)
class SshTarget:
    """How to reach one ESXi host: the ``[cert.options]`` of its entry, validated."""

    host: str
    port: int = 22
    user: str = "root"
    identity_file: str = "/etc/lecentral/esxi/id_ed25519"
    known_hosts: str = "/etc/lecentral/esxi/known_hosts"
    connect_timeout: float = 10.0
    ssh_config: str = "none"
    ssh: str = "ssh"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SshTarget:
        """The target described by an entry's (already validated) options."""
        fields = ("host", "port", "user", "identity_file", "known_hosts", "connect_timeout",
                  "ssh_config")
        return cls(**{k: options[k] for k in fields if k in options})

    @property
    def where(self) -> str:
        """``root@esx1.example.com:22``, as every message names the host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The host as it appears in known_hosts (``[host]:port`` unless the port is 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def argv(self, remote: str) -> list[str]:
        """The ``ssh`` command line that runs ``remote`` on the host."""
        return [self.ssh, "-F", self.ssh_config, "-T", "-p", str(self.port), "-i", self.identity_file,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
                "-o", "CheckHostIP=no", "-o", f"ConnectTimeout={self.connect_timeout:g}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-o", "PreferredAuthentications=publickey", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", "ForwardAgent=no",
                "-o", "ForwardX11=no", "-o", "ClearAllForwardings=yes", "-o", "ControlMaster=no",
                "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
                "-l", self.user, "--", self.host, remote]

    def preflight(self) -> None:
        """The local files ssh needs are there and safe; raise InstallError naming the fix."""
        try:
            st = os.stat(self.identity_file)
        except OSError as exc:
            raise InstallError(f"SSH identity file {self.identity_file} for {self.where}: "
                               f"{exc.strerror}; make one (ssh-keygen -t ed25519 -N '' -f "
                               f"{self.identity_file}), add its .pub to {ESXI_AUTHORIZED_KEYS} "
                               "on the host, or set options.identity_file") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise InstallError(f"SSH identity file {self.identity_file} is readable by others "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); ssh refuses it: chmod 600 "
                               f"{self.identity_file}")
        if not os.path.isfile(self.known_hosts):
            raise InstallError(f"known_hosts file {self.known_hosts} (for {self.where}) does not "
                               f"exist; {self._add_host_key_hint()}")

    def _add_host_key_hint(self) -> str:
        return (f"add the host's key after checking its fingerprint on the host's console "
                f"(ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}, then compare "
                "with `for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done` on the host)")

    def run(self, body: str, *, what: str, timeout: float) -> str:
        """Run shell ``body`` (see :func:`wrap`) on the host and return its standard output.

        Raise :class:`InstallError` naming ``what`` and the host: for ssh's own failures (host key
        unknown or changed, login refused, host unreachable) with the fix, for a failing script
        with its exit status and the tail of its output. ``body`` itself (which may hold a private
        key) never appears in an error or a log line.
        """
        self.preflight()
        log.debug("%s: ssh %s", what, self.where)
        try:
            result = subprocess.run(self.argv("/bin/sh -s"), input=wrap(body), capture_output=True,
                                    timeout=timeout, check=False)
        except FileNotFoundError:
            raise InstallError(f"{what}: the ssh client {self.ssh!r} is not installed here "
                               "(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise SshConnectError(f"{what}: {self.where} did not finish within {timeout:.0f}s; "
                               "check the host, or raise command_timeout if it is just slow") from None
        stdout = result.stdout.decode(errors="replace")
        stderr = result.stderr.decode(errors="replace")
        if result.returncode == SSH_FAILED:
            raise SshConnectError(f"{what}: {self._ssh_failure(stderr)}")
        if result.returncode != 0:
            raise RemoteScriptError(f"{what}: on {self.where}, exited with status {result.returncode}"
                                    + _tail(stderr, stdout), result.returncode)
        return stdout

    def _ssh_failure(self, stderr: str) -> str:
        """What went wrong when ssh itself failed, and what to do about it."""
        text = stderr.lower()
        nothing = "nothing was sent to the host"
        if "has changed" in text:
            return (f"the host key of {self.where} has CHANGED: it is not the one in "
                    f"{self.known_hosts} (a reinstalled host, or someone in the middle); "
                    f"{nothing}. Check the new key's fingerprint on the host's console, then "
                    f"replace its line (ssh-keygen -f {self.known_hosts} -R "
                    f"'{self.known_hosts_name}') and add the new one")
        if "host key verification failed" in text or "host key is known" in text:
            return (f"the host key of {self.where} is not in {self.known_hosts}, so the host "
                    f"cannot be trusted; {nothing}. To trust it, {self._add_host_key_hint()}")
        if "permission denied" in text or "too many authentication failures" in text:
            return (f"SSH login as {self.user} on {self.where} refused with the key "
                    f"{self.identity_file}; {nothing}. Add {self.identity_file}.pub to "
                    f"{ESXI_AUTHORIZED_KEYS} on the host (or fix options.user / identity_file)")
        if "bad permissions" in text or "unprotected private key" in text:
            return f"ssh refuses the identity file {self.identity_file}: chmod 600 it; {nothing}"
        if any(m in text for m in ("connection refused", "timed out", "no route to host",
                                   "could not resolve", "network is unreachable")):
            return (f"cannot connect to {self.where}: {_first_line(stderr)}; {nothing}. "
                    "Is the host up and its SSH service (TSM-SSH) running?")
        return f"ssh to {self.where} failed: {_first_line(stderr) or 'no message'}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _tail(stderr: str, stdout: str) -> str:
    """The tail of what the script said on stderr (its own ``lecentral:`` messages and those of the
    commands it ran), else of its standard output."""
    lines = [line.removeprefix("lecentral: ") for line in stderr.splitlines() if line.strip()]
    lines = (lines or stdout.strip().splitlines())[-OUTPUT_TAIL_LINES:]
    return (":\n" + "\n".join(lines)) if lines else ""
