"""The ``dovecot`` service: Debian's layout, ``doveconf -n`` before ``doveadm reload``.

Files: the leaf (``/etc/dovecot/private/{name}.crt``, what the agent compares with the database)
and leaf + chain (``/etc/dovecot/private/{name}.pem``), which ``ssl_cert = <`` names; ``ssl_key =
<`` names the key the agent only reads (``/etc/ssl/private/{name}.key``, shared with the other
services of the same name). ``/etc/dovecot/private`` is Debian's own directory for them (0700).

``check``, ``reload`` and ``verify`` have no fixed defaults: the service runs ``doveconf [-c
options.config_file] -n`` / ``doveadm [-c ...] reload`` and verifies every IMAP and POP3 listener
Dovecot has (see :mod:`lecentral_dovecot.service`); an entry that sets them wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lecentral.api import EntryError, ServiceType, hookimpl, lazy_service, option

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/dovecot/private/{name}.crt",  # the leaf alone
    "fullchain": "/etc/dovecot/private/{name}.pem",  # leaf + chain: ssl_cert = </etc/dovecot/private/{name}.pem
}


@dataclass(frozen=True)
class DovecotOptions:
    """``[cert.options]`` of the ``dovecot`` service."""

    config_file: str = option("/etc/dovecot/dovecot.conf", "Dovecot's configuration (default "
                              "/etc/dovecot/dovecot.conf); doveconf and doveadm get -c FILE for any other")
    check_files: bool = option(True, "before the reload, check that an ssl_cert names a file written "
                               "and that the global ssl_key is the entry's key (default true)")
    verify_host: str = option("", "address for the verify URLs read from Dovecot's listeners (default "
                              "127.0.0.1 when Dovecot listens on every address or on it, else the "
                              "listener's address)")

    def __post_init__(self) -> None:
        if not self.config_file.startswith("/"):
            raise EntryError("config_file", f"{self.config_file!r} must be an absolute path")
        if any(c in self.verify_host for c in "/?#@ "):
            raise EntryError("verify_host", f"{self.verify_host!r} must be a host name or address")


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``dovecot`` service."""
    return [ServiceType(
        name="dovecot",
        factory=lazy_service("lecentral_dovecot.service:DovecotService"),
        defaults=DEFAULTS,
        description="Dovecot: writes /etc/dovecot/private/{name}.crt and {name}.pem (ssl_cert), runs "
                    "doveconf -n, doveadm reload, verifies every IMAP and POP3 listener "
                    "(STARTTLS and implicit TLS)",
        options_model=DovecotOptions,
    )]
