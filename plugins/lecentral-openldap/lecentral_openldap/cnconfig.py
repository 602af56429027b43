"""Which TLS files slapd will load at its next start, read from cn=config, and whether they fit.

``slaptest`` parses cn=config but never opens a certificate: a ``olcTLSCertificateKeyFile`` that
does not match the new certificate passes it, and slapd then refuses to start at the restart. So
before the restart this module reads ``cn=config.ldif`` in slapd's config directory (a plain LDIF
file, readable by root) and checks that ``olcTLSCertificateFile`` is one of the entry's files and
that the key slapd pairs with it matches the new certificate.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from lecentral.api import (
    CertEntry,
    Certificate,
    CsrError,
    InstallError,
    load_private_key_public,
    md5_modulus,
)

log = logging.getLogger(__name__)

TLS_ATTRIBUTES = ("olcTLSCertificateFile", "olcTLSCertificateKeyFile", "olcTLSCACertificateFile")
#: the roles of the files slapd may name in olcTLSCertificateFile
CERT_ROLES = ("cert", "fullchain", "combined")


def read_tls_attributes(ldif: str) -> dict[str, str]:
    """The ``olcTLS*`` attributes of the ``cn=config`` entry in ``ldif`` (folded and base64 values too)."""
    lines: list[str] = []
    for raw in ldif.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]  # RFC 2849 folding
        elif raw and not raw.startswith("#"):
            lines.append(raw)
    values: dict[str, str] = {}
    for line in lines:
        attr, sep, value = line.partition(":")
        if not sep or not attr.startswith("olcTLS"):
            continue
        if value.startswith(":"):
            try:
                value = base64.b64decode(value[1:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
        values[attr] = value.strip()
    return values


def check_tls_files(entry: CertEntry, slapd_d: str) -> None:
    """Raise InstallError if slapd, restarted now, would not serve this entry's new certificate.

    A missing config directory (slapd.conf setups) or cn=config file is only logged: slaptest and
    the checks after the restart still run.
    """
    config = Path(slapd_d) / "cn=config.ldif"
    try:
        attributes = read_tls_attributes(config.read_text(errors="replace"))
    except OSError as exc:
        log.warning("%s: cannot read %s (%s); not checking which TLS files slapd loads",
                    entry.label, config, exc.strerror)
        return
    where = f"{entry.label}: slapd's cn=config ({config})"
    fix = (f"set them with ldapmodify -Y EXTERNAL -H ldapi:/// (olcTLSCertificateFile: {entry.cert}, "
           f"olcTLSCertificateKeyFile: {entry.key}"
           + (f", olcTLSCACertificateFile: {entry.chain}" if entry.chain else "") + ")")
    cert_file = attributes.get("olcTLSCertificateFile")
    if not cert_file:
        raise InstallError(f"{where} has no olcTLSCertificateFile: slapd offers no TLS; {fix}; "
                           "nothing was restarted")
    ours = {os.path.realpath(path) for role, path in entry.files.items() if role in CERT_ROLES}
    if os.path.realpath(cert_file) not in ours:
        raise InstallError(f"{where} loads the certificate {cert_file}, not this entry's {entry.cert}: "
                           f"slapd would never present the new certificate; {fix}, or set cert in "
                           "[[cert]] to that file; nothing was restarted")
    key_file = attributes.get("olcTLSCertificateKeyFile") or cert_file
    _check_key(entry, where, key_file)


def _check_key(entry: CertEntry, where: str, key_file: str) -> None:
    try:
        leaf = Certificate.load(Path(entry.cert).read_bytes(), entry.cert)
    except (OSError, CsrError) as exc:
        raise InstallError(f"{entry.label}: cannot read the new certificate {entry.cert}: {exc}") from None
    if not os.path.exists(key_file):
        raise InstallError(f"{where} pairs the certificate with the key {key_file}, which does not "
                           f"exist: slapd would not start. Set olcTLSCertificateKeyFile: {entry.key}; "
                           "nothing was restarted")
    try:
        public = load_private_key_public(Path(key_file))
    except CsrError as exc:
        # An encrypted key or a PKCS#11 URI is slapd's business: say so and let the restart tell.
        log.warning("%s: cannot check the key %s that slapd pairs with the certificate: %s",
                    entry.label, key_file, exc)
        return
    if md5_modulus(public) != leaf.md5_modulus:
        raise InstallError(f"{where} pairs the certificate with the key {key_file}, which does not "
                           f"match the new certificate (its key is {entry.key}): slapd would not "
                           f"start. Set olcTLSCertificateKeyFile: {entry.key}, or key in [[cert]] "
                           "to the file slapd uses; nothing was restarted")
