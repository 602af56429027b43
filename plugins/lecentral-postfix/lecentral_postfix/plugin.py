"""The ``postfix`` service: Debian's layout, ``postfix check`` before ``postfix reload``, chroot copies.

Files: the leaf (``/etc/postfix/{name}.crt``, what the agent compares with the database) and one
key-bearing file for ``smtpd_tls_chain_files`` (``/etc/postfix/{name}.pem``: the key, then the
leaf, then the chain; 0600 unless the entry says otherwise, never wider than 0640). For the
older ``smtpd_tls_cert_file``/``smtpd_tls_key_file`` style, write a full chain instead::

    combined = ""
    fullchain = "/etc/postfix/mail.example.com.full"

``check``, ``reload`` and ``verify`` have no fixed defaults: the service runs ``postfix
[-c options.config_directory] check`` / ``reload`` and verifies every TLS smtpd listener of
master.cf (see :mod:`lecentral_postfix.service`); an entry that sets them wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lecentral.api import EntryError, ServiceType, hookimpl, lazy_service, option

#: Debian's layout; ``{name}`` is the entry's name. Every key can be overridden in ``[[cert]]``.
DEFAULTS: dict[str, Any] = {
    "key": "/etc/ssl/private/{name}.key",  # read to check the new certificate, never written
    "cert": "/etc/postfix/{name}.crt",  # the leaf alone
    "combined": "/etc/postfix/{name}.pem",  # key + leaf + chain: smtpd_tls_chain_files
    "combined_order": ["key", "cert", "chain"],
}


@dataclass(frozen=True)
class PostfixOptions:
    """``[cert.options]`` of the ``postfix`` service."""

    config_directory: str = option("/etc/postfix", "the Postfix instance (default /etc/postfix); "
                                   "postfix and postconf get -c DIR for any other")
    chroot: str | bool = option("auto", "copy the files into the chroot too: \"auto\" (default: when "
                                "an smtpd service in master.cf runs chrooted, as Debian's smtp does), "
                                "true or false")
    queue_directory: str = option("", "the chroot the copies go to (default: Postfix's "
                                  "queue_directory, /var/spool/postfix on Debian)")
    check_files: bool = option(True, "before the reload, check that main.cf or master.cf names one of "
                               "the files written (default true; false for certificates in "
                               "tls_server_sni_maps)")
    verify_host: str = option("", "address for the verify URLs read from master.cf (default 127.0.0.1 "
                              "when Postfix listens there, else the first address of inet_interfaces)")

    def __post_init__(self) -> None:
        for key in ("config_directory", "queue_directory"):
            value = getattr(self, key)
            if value and not value.startswith("/"):
                raise EntryError(key, f"{value!r} must be an absolute path")
        if self.chroot not in ("auto", True, False):
            raise EntryError("chroot", f"{self.chroot!r}: write \"auto\", true or false")
        if any(c in self.verify_host for c in "/?#@ "):
            raise EntryError("verify_host", f"{self.verify_host!r} must be a host name or address")


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    """The ``postfix`` service."""
    return [ServiceType(
        name="postfix",
        factory=lazy_service("lecentral_postfix.service:PostfixService"),
        defaults=DEFAULTS,
        description="Postfix: writes /etc/postfix/{name}.crt and {name}.pem (smtpd_tls_chain_files), "
                    "copies them into the chroot when smtpd runs chrooted, runs postfix check, "
                    "postfix reload, verifies every TLS smtpd listener of master.cf",
        options_model=PostfixOptions,
    )]
