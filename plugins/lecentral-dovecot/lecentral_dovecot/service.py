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
from pathlib import Path

from lecentral.api import (
    CertEntry,
    CommandService,
    ConfigError,
    CsrError,
    InstallError,
    load_private_key_public,
    md5_modulus,
    run_command,
)
from lecentral_dovecot.doveconf import (
    DEFAULT_CONFIG_FILE,
    DOVEADM,
    DovecotConfig,
    doveconf,
    dovecot_argv,
    read_config,
    ssl_cert_files,
)


def config_file(entry: CertEntry) -> str:
    return str(entry.options.get("config_file", DEFAULT_CONFIG_FILE))


class DovecotService(CommandService):
    """Dovecot's config test and reload, the files check, and verify URLs from its listeners."""

    def __init__(self) -> None:
        self._config: DovecotConfig | None = None

    def check_entry(self, entry: CertEntry) -> None:
        """Check ``[cert.options]`` types."""
        options = entry.options
        where = f"[[cert]] {entry.name} (service dovecot): options"
        value = options.get("config_file", "/")
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError(f"{where}.config_file must be an absolute path, not {value!r}")
        if not isinstance(options.get("check_files", True), bool):
            raise ConfigError(f"{where}.check_files must be true or false")
        host = options.get("verify_host", "127.0.0.1")
        if not isinstance(host, str) or not host or any(c in host for c in "/?#@ "):
            raise ConfigError(f"{where}.verify_host must be a host name or address, not {host!r}")

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
        if entry.options.get("check_files", True):
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
        default = entry.options.get("verify_host")
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
        global_cert, key = config.file_setting("ssl_cert"), config.file_setting("ssl_key")
        if os.path.realpath(global_cert) in ours and key and not same_key(key, entry.key):
            raise InstallError(
                f"{entry.label}: Dovecot's ssl_cert is <{global_cert} but its ssl_key <{key} is not "
                f"the key of the new certificate ({entry.key}); Dovecot would refuse the pair. Set "
                f"ssl_key = <{entry.key}, or key = \"{key}\" in the entry if that is the key the "
                "certificate was made for")


def same_key(path: str, other: str) -> bool:
    """True when the private keys at the two paths are the same key (not just the same path)."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return md5_modulus(load_private_key_public(Path(path))) == md5_modulus(
            load_private_key_public(Path(other)))
    except CsrError:
        return False
