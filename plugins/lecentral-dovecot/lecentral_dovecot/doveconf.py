"""What Dovecot's own configuration says, read through ``doveconf`` (never by parsing dovecot.conf).

``doveconf -h`` gives single settings with defaults and includes resolved, ``doveconf
service/imap-login service/pop3-login`` the login services with every ``inet_listener`` (default
ports included), and ``doveconf -n`` every ``ssl_cert`` (global, ``local_name`` and ``local``
blocks). From them: the IMAP and POP3 listeners to verify and the files Dovecot loads.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from lecentral.api import command_output

DOVECONF = "/usr/bin/doveconf"
DOVEADM = "/usr/bin/doveadm"
DEFAULT_CONFIG_FILE = "/etc/dovecot/dovecot.conf"
#: protocol -> (login service, STARTTLS scheme, implicit TLS scheme)
PROTOCOLS = {"imap": ("imap-login", "imap+starttls", "imaps"),
             "pop3": ("pop3-login", "pop3+starttls", "pop3s")}
_SETTINGS = ("protocols", "listen", "ssl", "ssl_cert", "ssl_key")  # ssl_key last: an inline key spans lines
_SSL_CERT = re.compile(r"^\s*ssl_cert\s*=\s*<(.+?)\s*$", re.MULTILINE)
_ANY_V4 = {"*", "0.0.0.0", "127.0.0.1", "localhost"}
_ANY_V6 = {"::", "[::]", "::1", "[::1]"}


def dovecot_argv(tool: str, config_file: str, *args: str) -> list[str]:
    """``doveconf ARGS`` / ``doveadm ARGS``, with ``-c FILE`` for a configuration other than the default."""
    config = [] if config_file == DEFAULT_CONFIG_FILE else ["-c", config_file]
    return [tool, *config, *args]


def doveconf(config_file: str, *args: str, what: str, timeout: float) -> str:
    """``doveconf [-c FILE] ARGS``'s output (warnings apart; InstallError quoting them on failure)."""
    return command_output(dovecot_argv(DOVECONF, config_file, *args), what=what, timeout=timeout)


@dataclass(frozen=True)
class Listener:
    """One ``inet_listener`` of an IMAP or POP3 login service."""

    protocol: str  # imap, pop3
    name: str
    address: str
    port: int
    ssl: bool
    haproxy: bool

    def verify_url(self, host: str, starttls_offered: bool, sni: str) -> str | None:
        """The URL reaching it (``imaps://``, ``pop3+starttls://``...), or None if it shows no certificate."""
        _, starttls, implicit = PROTOCOLS[self.protocol]
        if self.port == 0 or self.haproxy or not (self.ssl or starttls_offered):
            return None
        host = f"[{host}]" if ":" in host else host
        return f"{implicit if self.ssl else starttls}://{host}:{self.port}?sni={sni}"


@dataclass(frozen=True)
class DovecotConfig:
    """One Dovecot instance's configuration, as ``doveconf`` reports it."""

    config_file: str
    settings: dict[str, str]
    listeners: list[Listener] = field(default_factory=list)

    @property
    def protocols(self) -> list[str]:
        return self.settings.get("protocols", "").strip().strip('"').split()

    @property
    def starttls_offered(self) -> bool:
        """``ssl = yes`` or ``required``: the plaintext listeners offer STARTTLS/STLS."""
        return self.settings.get("ssl", "yes").strip() != "no"

    def file_setting(self, name: str) -> str:
        """The file of a global ``ssl_cert``/``ssl_key`` (``""`` when it is not a ``<file``)."""
        value = self.settings.get(name, "").strip()
        return value[1:].strip() if value.startswith("<") else ""

    def host_for(self, listener: Listener, default: str | None) -> str:
        """Where to connect: the listener's (or ``listen``'s) address; a wildcard gives ``default``
        or loopback."""
        addresses = (listener.address or self.settings.get("listen", "*")).replace(",", " ").split()
        if not addresses or _ANY_V4 & set(addresses):
            return default or "127.0.0.1"
        if _ANY_V6 & set(addresses):
            return default or "::1"
        for value in addresses:
            try:
                return str(ipaddress.ip_address(value.strip("[]")))
            except ValueError:
                continue
        return addresses[0]


def parse_listeners(text: str) -> list[Listener]:
    """``doveconf service/imap-login service/pop3-login`` output -> the inet listeners."""
    listeners: list[Listener] = []
    protocol = ""
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("service ") and line.endswith("{"):
            service = line.split()[1]
            protocol = next((p for p, (login, _, _) in PROTOCOLS.items() if login == service), "")
        elif line.startswith("inet_listener ") and line.endswith("{"):
            current = {"name": line.split()[1]}
        elif line == "}" and current is not None:
            if protocol:
                listeners.append(Listener(protocol, current["name"], current.get("address", ""),
                                          int(current.get("port", "0") or 0),
                                          current.get("ssl", "no") == "yes",
                                          current.get("haproxy", "no") == "yes"))
            current = None
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return listeners


def ssl_cert_files(text: str) -> list[str]:
    """Every ``ssl_cert = <FILE`` in ``doveconf -n`` output (global and per-name blocks)."""
    return _SSL_CERT.findall(text)


def read_config(config_file: str, timeout: float) -> DovecotConfig:
    """Ask ``doveconf`` about the instance of ``config_file`` (two quick runs)."""
    what = f"reading the Dovecot configuration {config_file}"
    values = doveconf(config_file, "-h", *_SETTINGS, what=what, timeout=timeout).split("\n")
    settings = dict(zip(_SETTINGS, (v.strip() for v in values), strict=False))
    config = DovecotConfig(config_file, settings)
    services = [f"service/{PROTOCOLS[p][0]}" for p in config.protocols if p in PROTOCOLS]
    if services:
        text = doveconf(config_file, *services, what=what, timeout=timeout)
        config = DovecotConfig(config_file, settings, parse_listeners(text))
    return config
