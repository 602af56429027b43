"""The ``apache`` service: the entry's ``check`` and ``reload`` commands, plus a certificate/key check.

``apache2ctl configtest`` only parses the configuration; it never opens a certificate. A
certificate whose key does not match passes it, and ``apache2ctl graceful`` then returns 0 while
the Apache parent logs ``AH02565: Certificate and private key ... do not match`` and exits: every
site on the host goes down. So before the reload, after the configtest, this service asks Apache
which certificate files it pairs with which keys (:mod:`lecentral_apache.parsed`) and checks each
pair that names one of this entry's files against the new certificate now in place (:func:`lecentral.api.check_key_pairs`). A
mismatch is an :class:`InstallError`: the engine puts the previous files back and nothing is restarted.
"""

from __future__ import annotations

import logging
import os

from lecentral.api import (
    CertEntry,
    CommandService,
    DaemonTerms,
    KeyPair,
    check_key_pairs,
    pairs_using,
    run_command,
)
from lecentral_apache.parsed import CertPair, dump_command, parse_dump
from lecentral_apache.plugin import ApacheOptions

log = logging.getLogger(__name__)

APACHE = DaemonTerms("Apache", "SSLCertificateKeyFile", "Apache would stop at the graceful restart")


class ApacheService(CommandService):
    """``check`` (configtest), the certificate/key check, then ``reload`` (graceful restart)."""

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check`` (``apache2ctl configtest``), then the certificate/key pairs."""
        super().check_config(entry)
        if entry.options_as(ApacheOptions).key_check:
            check_pairs(entry)


def check_pairs(entry: CertEntry) -> list[CertPair]:
    """Check every pair Apache would load from this entry's files; return those pairs.

    Raise :class:`InstallError` when one pairs the new certificate with a key that does not
    match it (or with no key at all). Pairs naming other files are Apache's business.
    """
    options = entry.options_as(ApacheOptions)
    output = run_command(dump_command(options.apachectl, options.mod_info), timeout=entry.command_timeout,
                         what=f"{entry.label}: reading Apache's parsed configuration")
    used = pairs_using(entry, parse_dump(output).pairs())
    check_key_pairs(entry, [KeyPair(p.cert, p.key, f"Apache's {p.server}") for p in used], APACHE)
    for pair in used:
        _warn_without_chain(entry, pair)
    if not used:
        log.warning("%s: no SSLCertificateFile of an SSL-enabled server in Apache's configuration "
                    "names %s; Apache will not present the new certificate until one does",
                    entry.label, " or ".join(p for r, p in entry.files.items() if r != "chain"))
    return used


def _warn_without_chain(entry: CertEntry, pair: CertPair) -> None:
    if os.path.realpath(pair.cert) == os.path.realpath(entry.cert) and pair.chain is None:
        hint = (f"point SSLCertificateFile at {entry.fullchain}" if entry.fullchain
                else "set fullchain in [[cert]] and point SSLCertificateFile at it")
        log.warning("%s: Apache's %s sends %s without its CA chain (no SSLCertificateChainFile); "
                    "clients that lack the intermediate will fail: %s", entry.label, pair.server,
                    pair.cert, hint)
