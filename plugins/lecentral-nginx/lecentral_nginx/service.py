"""The ``nginx`` service: ``nginx -t``, a certificate/key check, then ``nginx -s reload``.

``nginx -t`` loads every certificate and key of the configuration, so a new certificate whose key
does not match fails it — as long as the key is of the same type. OpenSSL keeps one certificate
and one key *per key type* in a context: when the entry's key became ECDSA while the server block
still names the old RSA key, ``nginx -t`` and the reload both succeed and the server block fails
every handshake. So after ``nginx -t`` this service asks nginx for its configuration
(``nginx -T``, :mod:`lecentral_nginx.parsed`), and for every server block whose
``ssl_certificate`` is one of this entry's files checks that its ``ssl_certificate_key`` matches
the new certificate (:func:`lecentral.api.check_key_pairs`). A mismatch is an
:class:`InstallError`: the engine puts the previous files back and nginx is never signalled.
"""

from __future__ import annotations

import logging

from lecentral.api import (
    CertEntry,
    CommandService,
    DaemonTerms,
    KeyPair,
    check_key_pairs,
    command_output,
    pairs_using,
)
from lecentral_nginx.parsed import dump_argv, pairs

log = logging.getLogger(__name__)

NGINX = DaemonTerms("nginx", "ssl_certificate_key", "that server block would fail every TLS handshake",
                    "nginx was not reloaded")


class NginxService(CommandService):
    """``check`` (``nginx -t``), the certificate/key check, then ``reload`` (``nginx -s reload``)."""

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check``, then the pairs of the server blocks using this entry's files."""
        super().check_config(entry)
        check_key_pairs(entry, check_pairs(entry), NGINX)


def check_pairs(entry: CertEntry) -> list[KeyPair]:
    """The pairs of the server blocks whose ``ssl_certificate`` is one of this entry's files.

    ``nginx -T`` is the entry's ``check`` command with ``-T`` (:func:`~lecentral_nginx.parsed.dump_argv`).
    None is a warning only (the first install comes before the admin points nginx at the files).
    """
    output = command_output(dump_argv(entry.check), timeout=entry.command_timeout,
                            what=f"{entry.label}: reading nginx's configuration (nginx -T)")
    used = pairs_using(entry, pairs(output))
    if not used:
        log.warning("%s: no server block in nginx's configuration has ssl_certificate %s; nginx "
                    "will not present the new certificate until one does", entry.label,
                    " or ".join(entry.files[r] for r in ("fullchain", "cert", "combined") if r in entry.files))
    return used
