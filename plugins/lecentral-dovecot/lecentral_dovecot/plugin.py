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

from typing import TYPE_CHECKING, Any

from lecentral.api import ServiceType, hookimpl

if TYPE_CHECKING:
    from lecentral_dovecot.service import DovecotService

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/dovecot/private/{name}.crt",  # the leaf alone
    "fullchain": "/etc/dovecot/private/{name}.pem",  # leaf + chain: ssl_cert = </etc/dovecot/private/{name}.pem
    "options": {
        "config_file": "/etc/dovecot/dovecot.conf",
        "check_files": True,
    },
}

OPTIONS: dict[str, str] = {
    "config_file": "Dovecot's configuration (default /etc/dovecot/dovecot.conf); doveconf and "
                   "doveadm get -c FILE for any other",
    "check_files": "before the reload, check that an ssl_cert names a file written and that the "
                   "global ssl_key is the entry's key (default true)",
    "verify_host": "address for the verify URLs read from Dovecot's listeners (default 127.0.0.1 "
                   "when Dovecot listens on every address or on it, else the listener's address)",
}


def _factory() -> DovecotService:
    from lecentral_dovecot.service import DovecotService

    return DovecotService()


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``dovecot`` service."""
    return [ServiceType(
        name="dovecot",
        factory=_factory,
        defaults=DEFAULTS,
        description="Dovecot: writes /etc/dovecot/private/{name}.crt and {name}.pem (ssl_cert), runs "
                    "doveconf -n, doveadm reload, verifies every IMAP and POP3 listener "
                    "(STARTTLS and implicit TLS)",
        options=OPTIONS,
    )]
