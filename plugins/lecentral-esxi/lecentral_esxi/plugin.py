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

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.api import EntryError, Service, ServiceType, hookimpl, option

if TYPE_CHECKING:
    from lecentral.api import CertEntry, Installer
    from lecentral_esxi.ssh import SshTarget

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$|^[0-9A-Fa-f:.]+$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9_./+@-]*$")
#: ssh splits these options' values on spaces and expands %-tokens in them
_LOCAL_PATH = re.compile(r"^/[^\s%]*$")
_LOCAL = "must be an absolute path without spaces or %"


@dataclass(frozen=True)
class EsxiOptions:
    """``[cert.options]``: SSH settings and the layout of the host; ``{name}`` is the entry's name."""

    host: str = option("{name}", "the ESXi host to connect to (default: the entry's name)")
    port: int = option(22, "its SSH port (default 22)")
    user: str = option("root", "the account to log in as (default root, whose keys are in "
                       "/etc/ssh/keys-root/authorized_keys)")
    identity_file: str = option("/etc/lecentral/esxi/id_ed25519", "the SSH private key on this host, "
                                "mode 0600 (default /etc/lecentral/esxi/id_ed25519)")
    known_hosts: str = option("/etc/lecentral/esxi/known_hosts", "the known_hosts file holding the "
                              "host's key (default /etc/lecentral/esxi/known_hosts); an unknown or "
                              "changed host key is refused")
    connect_timeout: float = option(10.0, "seconds to wait for the SSH connection (default 10)")
    ssh_config: str = option("none", "an ssh_config file for ProxyJump and the like (default none: no "
                             "config file is read)")
    remote_dir: str = option("/etc/vmware/ssl", "where rui.crt and rui.key are on the host (default "
                             "/etc/vmware/ssl)")
    persist: str = option("/sbin/auto-backup.sh", "command run on the host after the files changed so "
                          "they survive a reboot (default /sbin/auto-backup.sh; \"\" to skip)")
    crt_chain: bool = option(True, "true (default): rui.crt holds the leaf followed by the CA chain; "
                             "false: the leaf only")

    def __post_init__(self) -> None:
        for key, pattern, why in (("host", _HOST, "is not valid here"), ("user", _USER, "is not valid here"),
                                  ("identity_file", _LOCAL_PATH, _LOCAL), ("known_hosts", _LOCAL_PATH, _LOCAL),
                                  ("remote_dir", _REMOTE_PATH, "is not valid here")):
            if not pattern.fullmatch(getattr(self, key)):
                raise EntryError(key, f"{getattr(self, key)!r} {why}")
        if self.ssh_config != "none" and not _LOCAL_PATH.fullmatch(self.ssh_config):
            raise EntryError("ssh_config", f"{self.ssh_config!r} {_LOCAL}")
        if not 1 <= self.port <= 65535:
            raise EntryError("port", f"{self.port!r} must be a port number (1-65535)")
        if self.connect_timeout <= 0:
            raise EntryError("connect_timeout", f"{self.connect_timeout:g} must be a number of seconds above 0")
        if "\0" in self.persist:
            raise EntryError("persist", "must be a command line, or \"\" to skip")


#: ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/lecentral/esxi/{name}.key",  # on this management host, 0600; pushed as rui.key
    "cert": "/etc/lecentral/esxi/{name}.crt",  # here: a copy of what the host's rui.crt holds
    "reload": "/etc/init.d/hostd restart && /etc/init.d/rhttpproxy restart",  # run on the host
    "verify": ["tls://{name}:443"],
    "verify_timeout": 180.0,  # hostd takes a while to come back
    "command_timeout": 300.0,
}


def ssh_target(entry: CertEntry) -> SshTarget:
    """The SSH settings of ``entry``."""
    from lecentral_esxi.ssh import SshTarget

    return SshTarget.from_options(dataclasses.asdict(entry.options_as(EsxiOptions)))


class EsxiService(Service):
    """Pushes the pair over SSH (:meth:`installer`) and runs ``check``/``reload`` on the host."""

    def check_entry(self, entry: CertEntry) -> None:
        if entry.action == "reboot":
            raise EntryError("action", "\"reboot\" would reboot this management host, not the ESXi host; "
                             "use \"reload\" (restarts hostd and rhttpproxy) or \"mail\"")
        for key in ("chain", "fullchain", "combined", "owner", "group", "mode"):
            if getattr(entry, key):
                raise EntryError(key, "not used by the esxi service (it writes rui.crt and rui.key on "
                                 "the host, with their modes); remove it")

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer:
        from lecentral_esxi.remote import EsxiFiles

        opts = entry.options_as(EsxiOptions)
        return EsxiFiles(entry, workdir, keep, ssh_target(entry), remote_dir=opts.remote_dir,
                         persist=opts.persist, crt_chain=opts.crt_chain)

    def check_config(self, entry: CertEntry) -> None:
        if entry.check:
            ssh_target(entry).run(entry.check, what=f"{entry.label}: config test ({entry.check})",
                                  timeout=entry.command_timeout)

    def activate(self, entry: CertEntry) -> None:
        if entry.reload:
            ssh_target(entry).run(entry.reload, what=f"{entry.label}: restart ({entry.reload})",
                                  timeout=entry.command_timeout)


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``esxi`` service."""
    return [ServiceType(
        name="esxi",
        factory=EsxiService,  # defined here: this module is all the service is, and light
        defaults=DEFAULTS,
        options_model=EsxiOptions,
        description="VMware ESXi over SSH: pushes rui.crt/rui.key to /etc/vmware/ssl (backups on "
                    "the host), restarts hostd and rhttpproxy, verifies port 443, rolls back over SSH",
    )]
