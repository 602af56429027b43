"""The ``nginx`` service: ``nginx -t``, a certificate/key check, then ``nginx -s reload``.

``nginx -t`` loads every certificate and key of the configuration, so a new certificate whose key
does not match fails it — as long as the key is of the same type. OpenSSL keeps one certificate
and one key *per key type* in a context: when the entry's key became ECDSA while the server block
still names the old RSA key, ``nginx -t`` and the reload both succeed and the server block fails
every handshake. So after ``nginx -t`` this service asks nginx for its configuration
(``nginx -T``, :mod:`lecentral_nginx.parsed`), and for every server block whose
``ssl_certificate`` is one of this entry's files checks that its ``ssl_certificate_key`` matches
the new certificate. A mismatch is an :class:`InstallError`: the engine puts the previous files
back and nginx is never signalled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lecentral.api import (
    CertEntry,
    Certificate,
    CommandService,
    CsrError,
    InstallError,
    command_output,
    load_private_key_public,
    md5_modulus,
)
from lecentral_nginx.parsed import CertPair, dump_argv, pairs

log = logging.getLogger(__name__)

#: the roles of the files a server block may name in ssl_certificate
CERT_ROLES = ("fullchain", "cert", "combined")


class NginxService(CommandService):
    """``check`` (``nginx -t``), the certificate/key check, then ``reload`` (``nginx -s reload``)."""

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check``, then the pairs of the server blocks using this entry's files."""
        super().check_config(entry)
        check_pairs(entry)


def check_pairs(entry: CertEntry) -> list[CertPair]:
    """Check every pair nginx loads from this entry's files; return those pairs.

    ``nginx -T`` is the entry's ``check`` command with ``-T`` (:func:`~lecentral_nginx.parsed.dump_argv`).
    Raise :class:`InstallError` when a server block pairs the new certificate with a key that
    does not match it. Server blocks naming other files are left alone; none naming this entry's
    files is a warning only (the first install comes before the admin points nginx at them).
    """
    argv = dump_argv(entry.check)
    output = command_output(argv, what=f"{entry.label}: reading nginx's configuration (nginx -T)",
                            timeout=entry.command_timeout)
    ours = {os.path.realpath(path) for role, path in entry.files.items() if role in CERT_ROLES}
    used = [pair for pair in pairs(output) if os.path.realpath(pair.cert) in ours]
    if not used:
        log.warning("%s: no server block in nginx's configuration has ssl_certificate %s; nginx "
                    "will not present the new certificate until one does", entry.label,
                    " or ".join(entry.files[r] for r in CERT_ROLES if r in entry.files))
        return used
    try:
        leaf = Certificate.load(Path(entry.cert).read_bytes(), entry.cert)
    except (OSError, CsrError) as exc:
        raise InstallError(f"{entry.label}: cannot read the new certificate {entry.cert}: {exc}") from None
    for pair in used:
        try:
            public = load_private_key_public(Path(pair.key))
        except CsrError as exc:
            # A passphrase-protected key (ssl_password_file) cannot be read here: say so, go on.
            log.warning("%s: cannot check the key %s that %s pairs with %s: %s", entry.label,
                        pair.key, pair.server.label, pair.cert, exc)
            continue
        if md5_modulus(public) != leaf.md5_modulus:
            raise InstallError(
                f"{entry.label}: nginx's {pair.server.label} pairs ssl_certificate {pair.cert} "
                f"with ssl_certificate_key {pair.key}, which does not match the new certificate "
                f"({leaf.key_type}, the key {entry.key}); that server block would fail every TLS "
                f"handshake. Point ssl_certificate_key at {entry.key}, or set key in [[cert]] to "
                f"the file nginx uses (nginx was not reloaded)")
    return used
