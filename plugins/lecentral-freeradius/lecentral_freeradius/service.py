"""The ``freeradius`` service: files under the chroot, ``freeradius -C``, restart, RADIUS and EAP checks.

The order for one install (the engine drives it): the files are written (under ``chroot`` when
it is set: :meth:`FreeradiusService.installer`); :meth:`check_config` runs the entry's ``check``
(``freeradius -C``, which loads the EAP module and so the new certificate and key); nothing is
restarted if it fails. :meth:`activate` runs ``reload`` (``systemctl restart freeradius``), then
waits until the server answers an Access-Request (Accept or Reject: it is up) and, where
``eapol_test`` is installed, until EAP presents the certificate now in ``cert``.

Why in :meth:`activate` rather than as a verifier scheme: a verifier only gets a URL, and the
shared secret must never be in a URL (URLs are logged and shown in alerts). When the rollback
calls :meth:`activate` again, ``cert`` holds the previous certificate, so the same checks prove
that the previous certificate is served again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from lecentral.api import (
    CertEntry,
    CommandService,
    EntryError,
    Installer,
    LocalFiles,
    VerifyError,
    check_key_access,
    installed_fingerprint,
    poll_until,
)
from lecentral_freeradius.plugin import FreeradiusOptions, server_address
from lecentral_freeradius.probe import RadiusTarget

log = logging.getLogger(__name__)

DEFAULT_USER = "lecentral-probe"


class FreeradiusService(CommandService):
    """``check`` (``freeradius -C``), ``reload`` (a restart), then pyrad and eapol_test checks."""

    def __init__(self) -> None:
        #: whether the server answered an Access-Request before the restart (None: not asked)
        self.answered_before: bool | None = None

    def check_entry(self, entry: CertEntry) -> None:
        """The chroot directory, and a key no other user can read (the options checked themselves)."""
        _check_chroot(entry)
        check_key_access(entry, usual_group="freerad")

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer | None:
        """Local files, under the chroot directory when ``chroot`` is set."""
        if not entry.options_as(FreeradiusOptions).chroot:
            return None
        return LocalFiles(in_chroot(entry), workdir, keep)

    def check_config(self, entry: CertEntry) -> None:
        """The entry's ``check`` (``freeradius -C``); then note whether the running server answers.

        A server that does not answer before the restart is no reason to stop (the restart may
        be what brings it up, e.g. on the first install), but if it still does not answer after
        the restart, the alert says the problem probably is not the new certificate.
        """
        super().check_config(entry)
        from lecentral_freeradius.probe import access_request

        try:
            access_request(radius_target(entry), min(entry.verify_timeout, 3.0))
            self.answered_before = True
        except VerifyError as exc:
            log.warning("%s: before the restart: %s", entry.label, exc)
            self.answered_before = False

    def activate(self, entry: CertEntry) -> None:
        """Restart FreeRADIUS, then wait until it answers and EAP presents the certificate in ``cert``."""
        super().activate(entry)
        try:
            wait_until_serving(entry)
        except VerifyError as exc:
            if self.answered_before is False and "Access-Request" in str(exc):
                raise VerifyError(f"{exc}; it did not answer before the restart either, so check "
                                  "options.server and options.secret and that this host is a client "
                                  "in clients.conf") from None
            raise


def in_chroot(entry: CertEntry) -> CertEntry:
    """``entry`` with the files the agent writes moved under ``options.chroot`` (if set).

    ``key`` is not moved: the agent reads it where it is on this host.
    """
    root = entry.options_as(FreeradiusOptions).chroot.rstrip("/")
    if not root:
        return entry
    moved: dict[str, Any] = {role: root + path for role, path in entry.files.items()}
    return dataclasses.replace(entry, **moved)


def _check_chroot(entry: CertEntry) -> None:
    root = entry.options_as(FreeradiusOptions).chroot
    if not root:
        return
    if not os.path.isdir(root):
        raise EntryError("options.chroot", f"{root} is not a directory")
    moved = root.rstrip("/") + entry.key
    if not os.path.exists(entry.key) and os.path.exists(moved):
        raise EntryError("options.chroot", f"the key {entry.key} is not on this host but {moved} is: "
                         f"set key = \"{moved}\" (the agent reads the key at its path on this host; "
                         "only the files it writes are put under the chroot)")


def radius_target(entry: CertEntry) -> RadiusTarget:
    """Where and as whom the checks after the restart talk to the server."""
    options = entry.options_as(FreeradiusOptions)
    host, port = server_address(options.server)
    # Without a configured password, a random one: the check must never log a real user in.
    password = options.password or secrets.token_urlsafe(12)
    return RadiusTarget(host, port, options.secret, options.user or DEFAULT_USER, password)


def wait_until_serving(entry: CertEntry) -> None:
    """The server answers an Access-Request; then EAP presents the leaf in ``cert`` (if checked)."""
    from lecentral_freeradius.probe import access_request

    target = radius_target(entry)
    reply = poll_until(entry, lambda remaining: access_request(target, min(remaining, 5.0)))
    log.info("%s: RADIUS %s answers an Access-Request for %s: %s", entry.label, target.where,
             target.user, reply)
    options = entry.options_as(FreeradiusOptions)
    method = options.eap.upper()
    if not method:
        return
    program = shutil.which(options.eapol_test or "eapol_test")
    if program is None:
        log.warning("%s: eapol_test not found (apt-get install eapoltest): the certificate "
                    "FreeRADIUS presents in EAP is not checked", entry.label)
        return
    cert_path = in_chroot(entry).cert
    expected = installed_fingerprint(cert_path, "FreeRADIUS")

    def presents(remaining: float) -> str:
        from lecentral_freeradius.probe import eap_certificate

        der = eap_certificate(target, method, min(remaining, 10.0), program, options.client_cert,
                              options.client_key)
        got = hashlib.sha256(der).hexdigest()
        if got == expected:
            return got
        raise VerifyError(f"EAP-{method} on RADIUS {target.where} presents certificate sha256 "
                          f"{got[:16]}..., not the one in {cert_path} ({expected[:16]}...)")

    got = poll_until(entry, presents)
    log.info("%s: EAP-%s on RADIUS %s presents sha256 %s", entry.label, method, target.where, got[:16])
