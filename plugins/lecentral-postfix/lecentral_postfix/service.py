"""The ``postfix`` service: chroot copies, ``postfix check``, ``postfix reload``, SMTP verification.

For each certificate the engine calls, in order: :meth:`PostfixService.installer` (the entry's
files, plus copies in the chroot when an smtpd runs chrooted), then after the files are switched
:meth:`~PostfixService.check_config` (``postfix check``, then: does Postfix load one of the files
just written? is there a listener to verify?), :meth:`~PostfixService.activate` (``postfix
reload``: the master re-reads its configuration and new smtpd processes load the new files),
and the verifiers on :meth:`~PostfixService.verify_urls` (every TLS smtpd listener of master.cf).
A failure before the reload puts the previous files back and restarts nothing.

Postfix is read through ``postconf`` once per entry and run (:mod:`lecentral_postfix.postconf`).
"""

from __future__ import annotations

import logging
import os
import pty
import select
import shlex
import subprocess
import time
from pathlib import Path

from lecentral.api import (
    OUTPUT_TAIL_LINES,
    CertEntry,
    CommandService,
    Installer,
    InstallError,
    run_command,
)
from lecentral_postfix.chroot import ChrootFiles
from lecentral_postfix.plugin import PostfixOptions
from lecentral_postfix.postconf import (
    DEFAULT_CONFIG_DIRECTORY,
    PostfixConfig,
    read_config,
)

log = logging.getLogger(__name__)

POSTFIX = "/usr/sbin/postfix"


def postfix_argv(entry: CertEntry, action: str) -> list[str]:
    """``postfix check`` / ``postfix reload``, with ``-c DIR`` for an instance other than /etc/postfix."""
    directory = config_directory(entry)
    return [POSTFIX, action] if directory == DEFAULT_CONFIG_DIRECTORY else [POSTFIX, "-c", directory, action]


def run_on_terminal(argv: list[str], *, what: str, timeout: float) -> str:
    """Run ``argv`` with its output on a pseudo-terminal and return that output.

    Postfix commands print why they fail (``fatal: ... unknown user name value``) only when
    stderr is a terminal; otherwise the reason goes to syslog alone and the alert would say
    nothing but "exited with status 1". InstallError quotes the last lines on failure.
    """
    command = shlex.join(argv)
    log.info("%s: running %s", what, command)
    main, sub = pty.openpty()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sub, stderr=sub,
                                   start_new_session=True)
    except OSError as exc:
        os.close(main)
        raise InstallError(f"{what}: cannot run {argv[0]}: {exc.strerror}; is Postfix installed?") from None
    finally:
        os.close(sub)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([main], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                process.kill()
                process.wait()
                raise InstallError(f"{what}: {command!r} did not finish within {timeout:.0f}s; raise "
                                   "command_timeout if it is just slow")
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the command and its children closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(main)
    status = process.wait()
    text = output.decode(errors="replace").replace("\r\n", "\n")
    if status != 0:
        tail = "\n".join(text.strip().splitlines()[-OUTPUT_TAIL_LINES:])
        raise InstallError(f"{what}: {command!r} exited with status {status}" + (f":\n{tail}" if tail else ""))
    return text


def config_directory(entry: CertEntry) -> str:
    return entry.options_as(PostfixOptions).config_directory


class PostfixService(CommandService):
    """Postfix's config test and reload, chroot copies, and verify URLs from master.cf."""

    def __init__(self) -> None:
        self._config: PostfixConfig | None = None

    def postfix_config(self, entry: CertEntry) -> PostfixConfig:
        """What postconf says about this entry's instance (read once per entry and run)."""
        if self._config is None:
            self._config = read_config(config_directory(entry), entry.command_timeout)
        return self._config

    # -- the engine's calls, in order ---------------------------------------------------------

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer | None:
        """The files plus their chroot copies when smtpd runs chrooted, else the plain files."""
        queue = self.chroot(entry)
        return ChrootFiles(entry, workdir, keep, queue) if queue else None

    def chroot(self, entry: CertEntry) -> str | None:
        """The chroot to copy the files into, or ``None`` (``options.chroot``, default auto)."""
        options = entry.options_as(PostfixOptions)
        choice, queue = options.chroot, options.queue_directory
        if choice is False:
            return None
        if choice == "auto":
            config = self.postfix_config(entry)
            if not config.chrooted:
                return None
            queue = queue or config.queue_directory
        elif not queue:
            queue = self.postfix_config(entry).queue_directory
        return str(queue)

    def check_config(self, entry: CertEntry) -> None:
        """``postfix check``, then refuse a configuration that would not serve the new files."""
        self._postfix(entry, "check", entry.check, "config test")
        if entry.options_as(PostfixOptions).check_files:
            self.check_files_used(entry)
        self.verify_urls(entry)  # no listener to verify is an error now, before the reload

    def activate(self, entry: CertEntry) -> None:
        """``postfix reload`` (or the entry's ``reload``)."""
        self._postfix(entry, "reload", entry.reload, "reload")

    def _postfix(self, entry: CertEntry, action: str, configured: str, what: str) -> None:
        """The entry's command if it sets one, else ``postfix [-c DIR] ACTION`` on a terminal."""
        label = f"{entry.label}: {what}"
        if configured:
            run_command(configured, what=label, timeout=entry.command_timeout)
        else:
            run_on_terminal(postfix_argv(entry, action), what=label, timeout=entry.command_timeout)

    def verify_urls(self, entry: CertEntry) -> list[str]:
        """The entry's ``verify``, else one URL per smtpd listener of master.cf that offers TLS.

        ``smtp+starttls://`` for STARTTLS (25, 587), ``smtps://`` for wrapper mode (465), on the
        listener's address or ``options.verify_host`` (default: 127.0.0.1 when Postfix listens
        there), sending the entry's name as SNI. Listeners behind a PROXY-protocol balancer and
        listeners without TLS are left out.
        """
        if entry.verify:
            return list(entry.verify)
        config = self.postfix_config(entry)
        host = entry.options_as(PostfixOptions).verify_host or config.loopback_host()
        try:
            urls = [listener.verify_url(host, entry.name) for listener in config.listeners
                    if listener.offers_tls and not listener.behind_proxy]
        except ValueError as exc:
            raise InstallError(f"{entry.label}: {exc}; set verify in the entry") from None
        if not urls:
            raise InstallError(
                f"{entry.label}: no smtpd listener in {config.config_directory}/master.cf offers TLS "
                "(smtpd_tls_security_level may or encrypt, or smtpd_tls_wrappermode), so there is "
                "nothing to verify; enable TLS in Postfix, or set verify in the entry")
        return urls

    # -- checks -------------------------------------------------------------------------------

    def check_files_used(self, entry: CertEntry) -> None:
        """InstallError unless smtpd is told to load one of the files this entry writes.

        ``postfix check`` never opens the certificate files, and a main.cf still naming the
        snakeoil certificate would make the reload "succeed" with the old certificate served.
        """
        config = self.postfix_config(entry)
        named = config.tls_files()
        ours = {os.path.realpath(p) for p in entry.files.values()}
        if ours & {os.path.realpath(p) for p in named}:
            return
        wanted = entry.combined if entry.combined and entry.key_bearing("combined") else ""
        hint = (f"smtpd_tls_chain_files = {wanted}" if wanted else
                f"smtpd_tls_cert_file = {entry.fullchain or entry.cert} and smtpd_tls_key_file = {entry.key}")
        raise InstallError(
            f"{entry.label}: Postfix ({config.config_directory}) loads "
            f"{', '.join(sorted(named)) or 'no certificate at all'}, none of the files this entry "
            f"writes ({', '.join(entry.files.values())}); set {hint} in main.cf, or point the "
            "entry's paths at the files Postfix uses (options.check_files = false skips this check, "
            "e.g. for certificates served through tls_server_sni_maps)")
