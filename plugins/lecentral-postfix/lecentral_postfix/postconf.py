"""What Postfix's own configuration says, read through ``postconf`` (never by parsing main.cf).

``postconf -M`` lists master.cf's services one per line, ``postconf -P`` their ``-o`` overrides
and ``postconf -h`` the main.cf values (with ``-x``: ``$name`` expanded), so continuation lines,
comments, ``$name`` references and built-in defaults are Postfix's business, as they should be.
From them: which ``smtpd`` listeners offer TLS and how (the verify URLs), whether any of them
runs chrooted, where the chroot is, and which certificate files Postfix is told to load.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from lecentral.api import command_output

POSTCONF = "/usr/sbin/postconf"
DEFAULT_CONFIG_DIRECTORY = "/etc/postfix"
#: master.cf service names of the usual listeners, should /etc/services lack one
WELL_KNOWN_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465}
#: main.cf (or ``-o``) parameters naming the certificate files smtpd loads
TLS_FILE_PARAMETERS = ("smtpd_tls_chain_files", "smtpd_tls_cert_file", "smtpd_tls_eccert_file",
                       "smtpd_tls_dcert_file")
_GLOBALS = ("queue_directory", "compatibility_level", "inet_interfaces", "smtpd_tls_security_level",
            "smtpd_use_tls", "smtpd_enforce_tls", "smtpd_tls_wrappermode",
            "smtpd_upstream_proxy_protocol", "maillog_file", *TLS_FILE_PARAMETERS)


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "y", "1")


@dataclass(frozen=True)
class SmtpdListener:
    """One ``inet`` service of master.cf whose command is ``smtpd``."""

    service: str  # "smtp", "submission", "127.0.0.1:2525", "[::1]:465"
    chroot: bool
    settings: dict[str, str]  # main.cf values with this service's -o overrides applied

    @property
    def wrappermode(self) -> bool:
        """TLS from the first byte (port 465 style)."""
        return _yes(self.settings.get("smtpd_tls_wrappermode", "no"))

    @property
    def offers_tls(self) -> bool:
        """True when a client can get a certificate from it (implicit TLS or STARTTLS offered)."""
        if self.wrappermode:
            return True
        level = self.settings.get("smtpd_tls_security_level", "").strip().lower()
        if not level:  # the pre-2.3 parameters still decide when the level is empty
            return (_yes(self.settings.get("smtpd_use_tls", "no"))
                    or _yes(self.settings.get("smtpd_enforce_tls", "no")))
        return level in ("may", "encrypt")

    @property
    def behind_proxy(self) -> bool:
        """A haproxy/PROXY-protocol listener: a direct connection would not be understood."""
        return bool(self.settings.get("smtpd_upstream_proxy_protocol", "").strip())

    def host_port(self) -> tuple[str, int]:
        """The address (``""`` for every interface) and TCP port it listens on."""
        host, sep, port = self.service.rpartition(":")
        if not sep:
            host, port = "", self.service
        host = host.strip("[]")
        if port.isdigit():
            return host, int(port)
        if port in WELL_KNOWN_PORTS:
            return host, WELL_KNOWN_PORTS[port]
        try:
            return host, socket.getservbyname(port, "tcp")
        except OSError:
            raise ValueError(f"master.cf service {self.service!r}: unknown port name {port!r}") from None

    def verify_url(self, default_host: str, sni: str) -> str:
        """``smtps://`` or ``smtp+starttls://`` URL reaching this listener, sending ``sni``."""
        host, port = self.host_port()
        if not host or host in ("0.0.0.0", "::", "*"):
            host = default_host
        if ":" in host:
            host = f"[{host}]"
        scheme = "smtps" if self.wrappermode else "smtp+starttls"
        return f"{scheme}://{host}:{port}?sni={sni}"


@dataclass(frozen=True)
class PostfixConfig:
    """One Postfix instance's configuration, as ``postconf`` reports it."""

    config_directory: str
    settings: dict[str, str]
    listeners: list[SmtpdListener] = field(default_factory=list)

    @property
    def queue_directory(self) -> str:
        """The chroot of chrooted services."""
        return self.settings.get("queue_directory", "")

    @property
    def chrooted(self) -> bool:
        """True when an smtpd listener runs chrooted (Debian's master.cf: ``y`` for smtp)."""
        return any(listener.chroot for listener in self.listeners)

    def loopback_host(self) -> str:
        """The address to verify on: 127.0.0.1 when Postfix listens there, else its first address."""
        interfaces = self.settings.get("inet_interfaces", "all").replace(",", " ").split()
        if not interfaces or {"all", "loopback-only", "localhost", "127.0.0.1"} & set(interfaces):
            return "127.0.0.1"
        for value in interfaces:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                continue
        return interfaces[0]

    def tls_files(self) -> set[str]:
        """Every file named by smtpd's certificate parameters, in main.cf or a listener's -o."""
        files: set[str] = set()
        for values in (self.settings, *(listener.settings for listener in self.listeners)):
            for parameter in TLS_FILE_PARAMETERS:
                files.update(p for p in values.get(parameter, "").replace(",", " ").split() if p)
        return files


def postconf(config_directory: str, *args: str, timeout: float) -> str:
    """``postconf -c DIR ARGS``'s output (its warnings stay apart; InstallError on failure)."""
    return command_output([POSTCONF, "-c", config_directory, *args], timeout=timeout,
                          what=f"reading the Postfix configuration in {config_directory}")


def parse_master(text: str) -> list[tuple[str, str, str, str]]:
    """``postconf -M`` output -> (service, type, chroot, command) per master.cf entry."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line[:1].isspace():
            entries.append((fields[0], fields[1], fields[4], fields[7]))
    return entries


def parse_overrides(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """``postconf -P`` output (``service/type/name = value``) -> {(service, type): {name: value}}."""
    overrides: dict[tuple[str, str], dict[str, str]] = {}
    for line in text.splitlines():
        left, sep, value = line.partition(" = ")
        if not sep:
            left, value = line.rstrip(" ="), ""
        parts = left.rsplit("/", 2)
        if len(parts) == 3:
            overrides.setdefault((parts[0], parts[1]), {})[parts[2]] = value.strip()
    return overrides


def chroot_default(compatibility_level: str) -> bool:
    """What ``-`` in master.cf's chroot column means: ``y`` only before compatibility_level 1."""
    major = compatibility_level.strip().split(".")[0]
    return not major.isdigit() or int(major) < 1


def read_config(config_directory: str, timeout: float) -> PostfixConfig:
    """Ask ``postconf`` about the instance in ``config_directory`` (three quick runs)."""
    values = postconf(config_directory, "-x", "-h", *_GLOBALS, timeout=timeout).split("\n")
    settings = dict(zip(_GLOBALS, (v.strip() for v in values), strict=False))
    master = parse_master(postconf(config_directory, "-M", timeout=timeout))
    overrides = parse_overrides(postconf(config_directory, "-x", "-P", timeout=timeout))
    dash_means_chroot = chroot_default(settings.get("compatibility_level", ""))
    listeners = [
        SmtpdListener(service, chroot == "y" or (chroot == "-" and dash_means_chroot),
                      {**settings, **overrides.get((service, kind), {})})
        for service, kind, chroot, command in master if kind == "inet" and command == "smtpd"
    ]
    return PostfixConfig(config_directory, settings, listeners)
