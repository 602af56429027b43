"""The ``esxi`` service: rui.crt and rui.key pushed to a VMware ESXi host over SSH, then hostd and
rhttpproxy restarted, port 443 verified, and everything rolled back over SSH if it fails.

An ESXi host cannot run the agent, so a management host runs ``lecentral-install`` with one
``[[cert]]`` per ESXi host. The host's private key lives on the management host (``key``, mode
0600) and is pushed with the certificate; :class:`~lecentral_esxi.remote.EsxiFiles` does the
pushing (the engine's :class:`~lecentral.interfaces.Installer` hook), this service runs the
entry's ``check`` and ``reload`` *on the host* through the same SSH settings. The engine keeps
the compare with the database, the checks against the key, the verification and the rollback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.api import ConfigError, Service, ServiceType, hookimpl

if TYPE_CHECKING:
    from lecentral.api import CertEntry, Installer
    from lecentral_esxi.ssh import SshTarget

#: ``[cert.options]``: SSH settings and the layout of the host; ``{name}`` is the entry's name
OPTION_DEFAULTS: dict[str, Any] = {
    "host": "{name}",
    "port": 22,
    "user": "root",
    "identity_file": "/etc/lecentral/esxi/id_ed25519",
    "known_hosts": "/etc/lecentral/esxi/known_hosts",
    "connect_timeout": 10,
    "ssh_config": "none",
    "remote_dir": "/etc/vmware/ssl",
    "persist": "/sbin/auto-backup.sh",
    "crt_chain": True,
}

OPTIONS: dict[str, str] = {
    "host": "the ESXi host to connect to (default: the entry's name)",
    "port": "its SSH port (default 22)",
    "user": "the account to log in as (default root, whose keys are in /etc/ssh/keys-root/authorized_keys)",
    "identity_file": "the SSH private key on this host, mode 0600 (default /etc/lecentral/esxi/id_ed25519)",
    "known_hosts": "the known_hosts file holding the host's key (default /etc/lecentral/esxi/known_hosts); "
                   "an unknown or changed host key is refused",
    "connect_timeout": "seconds to wait for the SSH connection (default 10)",
    "ssh_config": "an ssh_config file for ProxyJump and the like (default none: no config file is read)",
    "remote_dir": "where rui.crt and rui.key are on the host (default /etc/vmware/ssl)",
    "persist": "command run on the host after the files changed so they survive a reboot "
               "(default /sbin/auto-backup.sh; \"\" to skip)",
    "crt_chain": "true (default): rui.crt holds the leaf followed by the CA chain; false: the leaf only",
}

#: ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/lecentral/esxi/{name}.key",  # on this management host, 0600; pushed as rui.key
    "cert": "/etc/lecentral/esxi/{name}.crt",  # here: a copy of what the host's rui.crt holds
    "reload": "/etc/init.d/hostd restart && /etc/init.d/rhttpproxy restart",  # run on the host
    "verify": ["tls://{name}:443"],
    "verify_timeout": 180.0,  # hostd takes a while to come back
    "command_timeout": 300.0,
    "options": OPTION_DEFAULTS,
}

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$|^[0-9A-Fa-f:.]+$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9_./+@-]*$")
#: ssh splits these options' values on spaces and expands %-tokens in them
_LOCAL_PATH = re.compile(r"^/[^\s%]*$")


def _option_error(entry: CertEntry, key: str, why: str) -> ConfigError:
    return ConfigError(f"cert[{entry.index}] ({entry.name}): options.{key}: {why}")


def check_options(entry: CertEntry) -> dict[str, Any]:
    """The entry's options over :data:`OPTION_DEFAULTS`, validated; ConfigError names the key."""
    opts = {**OPTION_DEFAULTS, **entry.options}
    if opts["host"] == "{name}":
        opts["host"] = entry.name

    def text(key: str, pattern: re.Pattern[str], why: str = "is not valid here") -> None:
        value = opts[key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _option_error(entry, key, f"{value!r} {why}")

    text("host", _HOST)
    text("user", _USER)
    local = "must be an absolute path without spaces or %"
    text("identity_file", _LOCAL_PATH, local)
    text("known_hosts", _LOCAL_PATH, local)
    text("remote_dir", _REMOTE_PATH)
    if opts["ssh_config"] != "none":
        text("ssh_config", _LOCAL_PATH, local)
    port = opts["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _option_error(entry, "port", f"{port!r} must be a port number (1-65535)")
    timeout = opts["connect_timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise _option_error(entry, "connect_timeout", f"{timeout!r} must be a number of seconds above 0")
    if not isinstance(opts["persist"], str) or "\0" in opts["persist"]:
        raise _option_error(entry, "persist", "must be a command line, or \"\" to skip")
    if not isinstance(opts["crt_chain"], bool):
        raise _option_error(entry, "crt_chain", "must be true or false")
    return opts


def ssh_target(entry: CertEntry) -> SshTarget:
    """The SSH settings of ``entry``."""
    from lecentral_esxi.ssh import SshTarget

    return SshTarget.from_options(check_options(entry))


class EsxiService(Service):
    """Pushes the pair over SSH (:meth:`installer`) and runs ``check``/``reload`` on the host."""

    def check_entry(self, entry: CertEntry) -> None:
        where = f"cert[{entry.index}] ({entry.name})"
        if entry.action == "reboot":
            raise ConfigError(f"{where}: action \"reboot\" would reboot this management host, not the "
                              "ESXi host; use \"reload\" (restarts hostd and rhttpproxy) or \"mail\"")
        for key in ("chain", "fullchain", "combined", "owner", "group", "mode"):
            if getattr(entry, key):
                raise ConfigError(f"{where}: {key} is not used by the esxi service (it writes rui.crt "
                                  "and rui.key on the host, with their modes); remove it")
        check_options(entry)

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer:
        from lecentral_esxi.remote import EsxiFiles

        opts = check_options(entry)
        return EsxiFiles(entry, workdir, keep, ssh_target(entry), remote_dir=opts["remote_dir"],
                         persist=opts["persist"], crt_chain=opts["crt_chain"])

    def check_config(self, entry: CertEntry) -> None:
        if entry.check:
            ssh_target(entry).run(entry.check, what=f"{entry.label}: config test ({entry.check})",
                                  timeout=entry.command_timeout)

    def activate(self, entry: CertEntry) -> None:
        if entry.reload:
            ssh_target(entry).run(entry.reload, what=f"{entry.label}: restart ({entry.reload})",
                                  timeout=entry.command_timeout)


def _factory() -> EsxiService:
    return EsxiService()


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``esxi`` service."""
    return [ServiceType(
        name="esxi",
        factory=_factory,
        defaults=DEFAULTS,
        options=OPTIONS,
        description="VMware ESXi over SSH: pushes rui.crt/rui.key to /etc/vmware/ssl (backups on "
                    "the host), restarts hostd and rhttpproxy, verifies port 443, rolls back over SSH",
    )]
