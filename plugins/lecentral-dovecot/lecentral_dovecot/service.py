"""The ``dovecot`` service: ``doveconf -n``, the files check, ``doveadm reload``, IMAP/POP3 verification.

After the files are switched the engine calls :meth:`DovecotService.check_config`: ``doveconf
-n`` (the configuration parses; it does not open the ``<`` files), then a check that an
``ssl_cert = <`` names a file just written and that the global ``ssl_key`` is the entry's key
(doveconf would not notice either, and the reload would "succeed" serving the old certificate or
none). Then :meth:`~DovecotService.activate`: ``doveadm reload`` (the master re-reads its
configuration, new login processes present the new certificate), and the verifiers on
:meth:`~DovecotService.verify_urls`: every IMAP and POP3 listener Dovecot has. A failure before
the reload puts the previous files back and reloads nothing.
"""

from __future__ import annotations

import os
import shlex

from lecentral.api import (
    CertEntry,
    CommandService,
    DaemonTerms,
    InstallError,
    KeyPair,
    check_key_pairs,
    run_command,
)
from lecentral_dovecot.doveconf import (
    DOVEADM,
    DovecotConfig,
    doveconf,
    dovecot_argv,
    read_config,
    ssl_cert_files,
)
from lecentral_dovecot.plugin import DovecotOptions

DOVECOT = DaemonTerms("Dovecot", "ssl_key", "Dovecot would refuse the pair",
                       "nothing was reloaded")


def config_file(entry: CertEntry) -> str:
    return entry.options_as(DovecotOptions).config_file


class DovecotService(CommandService):
    """Dovecot's config test and reload, the files check, and verify URLs from its listeners."""

    def __init__(self) -> None:
        self._config: DovecotConfig | None = None

    def dovecot_config(self, entry: CertEntry) -> DovecotConfig:
        """What doveconf says about this entry's instance (read once per entry and run)."""
        if self._config is None:
            self._config = read_config(config_file(entry), entry.command_timeout)
        return self._config

    # -- the engine's calls, in order ---------------------------------------------------------

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check`` if any, ``doveconf -n``, the files check, the listeners."""
        if entry.check:
            run_command(entry.check, what=f"{entry.label}: config test", timeout=entry.command_timeout)
        text = doveconf(config_file(entry), "-n", what=f"{entry.label}: config test",
                        timeout=entry.command_timeout)
        if entry.options_as(DovecotOptions).check_files:
            self.check_files_used(entry, ssl_cert_files(text))
        self.verify_urls(entry)  # nothing to verify is an error now, before the reload

    def activate(self, entry: CertEntry) -> None:
        """``doveadm reload`` (or the entry's ``reload``)."""
        command = entry.reload or shlex.join(dovecot_argv(DOVEADM, config_file(entry), "reload"))
        run_command(command, what=f"{entry.label}: reload", timeout=entry.command_timeout)

    def verify_urls(self, entry: CertEntry) -> list[str]:
        """The entry's ``verify``, else one URL per IMAP/POP3 listener that presents a certificate.

        ``imaps://``/``pop3s://`` for ``ssl = yes`` listeners, ``imap+starttls://`` and
        ``pop3+starttls://`` for the others (unless ``ssl = no``), on the listener's address or
        loopback (``options.verify_host`` replaces a wildcard), with the entry's name as SNI.
        Disabled (port 0) and haproxy listeners are left out.
        """
        if entry.verify:
            return list(entry.verify)
        config = self.dovecot_config(entry)
        default = entry.options_as(DovecotOptions).verify_host or None
        urls = [listener.verify_url(config.host_for(listener, default), config.starttls_offered, entry.name)
                for listener in config.listeners]
        found = [url for url in urls if url]
        if not found:
            raise InstallError(
                f"{entry.label}: Dovecot ({config.config_file}) has no IMAP or POP3 listener that "
                f"presents a certificate (protocols = {' '.join(config.protocols) or 'none'}, "
                f"ssl = {config.settings.get('ssl', '?')}); enable TLS in Dovecot, or set verify "
                "in the entry")
        return found

    # -- checks -------------------------------------------------------------------------------

    def check_files_used(self, entry: CertEntry, ssl_certs: list[str]) -> None:
        """InstallError unless an ``ssl_cert`` names a file written and ``ssl_key`` fits it."""
        ours = {os.path.realpath(p) for p in entry.files.values()}
        used = [p for p in ssl_certs if os.path.realpath(p) in ours]
        if not used:
            raise InstallError(
                f"{entry.label}: Dovecot ({config_file(entry)}) reads ssl_cert from "
                f"{', '.join(ssl_certs) or 'nowhere'}, none of the files this entry writes "
                f"({', '.join(entry.files.values())}); set ssl_cert = <{entry.fullchain or entry.cert} "
                f"and ssl_key = <{entry.key} (10-ssl.conf on Debian), or point the entry's paths at "
                "the files Dovecot uses (options.check_files = false skips this check)")
        config = self.dovecot_config(entry)
        cert, key = config.file_setting("ssl_cert"), config.file_setting("ssl_key")
        if os.path.realpath(cert) in ours and key:
            pair = KeyPair(cert, key, f"Dovecot ({config.config_file})", f"ssl_cert <{cert}", f"ssl_key <{key}")
            check_key_pairs(entry, [pair], DOVECOT)
