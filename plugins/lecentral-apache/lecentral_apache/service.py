"""The ``apache`` service: the entry's ``check`` and ``reload`` commands, plus a certificate/key check.

``apache2ctl configtest`` only parses the configuration; it never opens a certificate. A
certificate whose key does not match passes it, and ``apache2ctl graceful`` then returns 0 while
the Apache parent logs ``AH02565: Certificate and private key ... do not match`` and exits: every
site on the host goes down. So before the reload, after the configtest, this service asks Apache
which certificate files it pairs with which keys (:mod:`lecentral_apache.parsed`) and checks each
pair that names one of this entry's files against the new certificate now in place. A mismatch is
an :class:`InstallError`: the engine puts the previous files back and nothing is restarted.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from lecentral.api import (
    CertEntry,
    Certificate,
    CommandService,
    ConfigError,
    CsrError,
    InstallError,
    load_private_key_public,
    md5_modulus,
    run_command,
)
from lecentral_apache.parsed import CertPair, dump_command, parse_dump

log = logging.getLogger(__name__)

#: the roles of the files Apache may name in SSLCertificateFile
CERT_ROLES = ("cert", "fullchain", "combined")


class ApacheService(CommandService):
    """``check`` (configtest), the certificate/key check, then ``reload`` (graceful restart)."""

    def check_entry(self, entry: CertEntry) -> None:
        """Check the types of ``[cert.options]`` and that mod_info is where the check loads it from."""
        options = entry.options
        where = f"[[cert]] {entry.name} (service apache): options"
        if not isinstance(options.get("key_check", True), bool):
            raise ConfigError(f"{where}.key_check must be true or false")
        for key in ("apachectl", "mod_info"):
            value = options.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.{key} must be a non-empty string")
        try:
            shlex.split(options["apachectl"])
        except ValueError as exc:
            raise ConfigError(f"{where}.apachectl: cannot parse {options['apachectl']!r}: {exc}") from None
        if options.get("key_check", True) and not os.path.isfile(options["mod_info"]):
            raise ConfigError(f"{where}.mod_info: {options['mod_info']} does not exist; set it to "
                              "the path of mod_info.so, or key_check = false to skip the "
                              "certificate/key check before the graceful restart")

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check`` (``apache2ctl configtest``), then the certificate/key pairs."""
        super().check_config(entry)
        if entry.options.get("key_check", True):
            check_pairs(entry)


def check_pairs(entry: CertEntry) -> list[CertPair]:
    """Check every pair Apache would load from this entry's files; return those pairs.

    Raise :class:`InstallError` when one pairs the new certificate with a key that does not
    match it (or with no key at all). Pairs naming other files are Apache's business.
    """
    command = dump_command(entry.options["apachectl"], entry.options["mod_info"])
    output = run_command(command, what=f"{entry.label}: reading Apache's parsed configuration",
                         timeout=entry.command_timeout)
    parsed = parse_dump(output)
    ours = {os.path.realpath(path): role for role, path in entry.files.items() if role in CERT_ROLES}
    leaf = _new_leaf(entry)
    used = [pair for pair in parsed.pairs() if os.path.realpath(pair.cert) in ours]
    for pair in used:
        _check_key(entry, pair, leaf)
        _warn_without_chain(entry, pair, ours[os.path.realpath(pair.cert)])
    if not used:
        log.warning("%s: no SSLCertificateFile of an SSL-enabled server in Apache's configuration "
                    "names %s; Apache will not present the new certificate until one does",
                    entry.label, " or ".join(entry.files[r] for r in CERT_ROLES if r in entry.files))
    return used


def _new_leaf(entry: CertEntry) -> Certificate:
    try:
        return Certificate.load(Path(entry.cert).read_bytes(), entry.cert)
    except (OSError, CsrError) as exc:
        raise InstallError(f"{entry.label}: cannot read the new certificate {entry.cert}: {exc}") from None


def _check_key(entry: CertEntry, pair: CertPair, leaf: Certificate) -> None:
    key = pair.key or pair.cert
    try:
        public = load_private_key_public(Path(key))
    except CsrError as exc:
        if pair.key is None:
            raise InstallError(
                f"{entry.label}: Apache's {pair.server} loads {pair.cert} with no "
                f"SSLCertificateKeyFile, so it would look for the key in that file, which holds "
                f"none; Apache would not start at the graceful restart. Add SSLCertificateKeyFile "
                f"{entry.key} to that server (nothing was restarted)") from None
        # A passphrase-protected key is Apache's SSLPassPhraseDialog's business: say so, go on.
        log.warning("%s: cannot check the key %s that Apache pairs with %s: %s", entry.label,
                    key, pair.cert, exc)
        return
    if md5_modulus(public) != leaf.md5_modulus:
        raise InstallError(
            f"{entry.label}: Apache's {pair.server} pairs {pair.cert} with the key {key}, which "
            f"does not match the new certificate ({leaf.key_type}, the key {entry.key}); Apache "
            f"would stop at the graceful restart. Point SSLCertificateKeyFile at {entry.key}, or "
            f"set key in [[cert]] to the file Apache uses (nothing was restarted)")


def _warn_without_chain(entry: CertEntry, pair: CertPair, role: str) -> None:
    if role == "cert" and pair.chain is None:
        hint = (f"point SSLCertificateFile at {entry.fullchain}" if entry.fullchain
                else "set fullchain in [[cert]] and point SSLCertificateFile at it")
        log.warning("%s: Apache's %s sends %s without its CA chain (no SSLCertificateChainFile); "
                    "clients that lack the intermediate will fail: %s", entry.label, pair.server,
                    pair.cert, hint)
