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
from pathlib import Path

from lecentral.api import (
    CertEntry,
    DaemonTerms,
    InstallError,
    KeyPair,
    check_key_pairs,
    pairs_using,
)

log = logging.getLogger(__name__)

TLS_ATTRIBUTES = ("olcTLSCertificateFile", "olcTLSCertificateKeyFile", "olcTLSCACertificateFile")
SLAPD = DaemonTerms("slapd", "olcTLSCertificateKeyFile", "slapd would not start")


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
    source = f"slapd's cn=config ({config})"
    where = f"{entry.label}: {source}"
    fix = (f"set them with ldapmodify -Y EXTERNAL -H ldapi:/// (olcTLSCertificateFile: {entry.cert}, "
           f"olcTLSCertificateKeyFile: {entry.key}"
           + (f", olcTLSCACertificateFile: {entry.chain}" if entry.chain else "") + ")")
    cert_file = attributes.get("olcTLSCertificateFile")
    if not cert_file:
        raise InstallError(f"{where} has no olcTLSCertificateFile: slapd offers no TLS; {fix}; "
                           "nothing was restarted")
    pair = KeyPair(cert_file, attributes.get("olcTLSCertificateKeyFile"), source, "the certificate")
    if not pairs_using(entry, [pair]):
        raise InstallError(f"{where} loads the certificate {cert_file}, not this entry's {entry.cert}: "
                           f"slapd would never present the new certificate; {fix}, or set cert in "
                           "[[cert]] to that file; nothing was restarted")
    check_key_pairs(entry, [pair], SLAPD)
