"""The ``openldap`` service: key access check, cn=config check, restart, then LDAP checks with ldap3.

The order for one install (the engine drives it): the new files are in place; :meth:`check_config`
runs the entry's ``check`` (``slaptest``) and reads cn=config to make sure slapd will load this
entry's certificate with a key that matches it (:mod:`lecentral_openldap.cnconfig`); nothing is
restarted if either fails. :meth:`activate` runs ``reload`` (``systemctl restart slapd``) and then
waits until, over each LDAP verify URL (``ldap+starttls://``, ``ldaps://``), slapd presents the
certificate now in ``cert`` *and* answers a bind and a root DSE search (:mod:`lecentral_openldap.probe`).

Why in :meth:`activate` rather than as a verifier scheme: a verifier only gets a URL, and the bind
password must never be in a URL (URLs are logged and shown in alerts). The engine then checks the
same URLs with its own verifiers (fingerprint, twice in a row). When the rollback calls
:meth:`activate` again, the file in ``cert`` is the previous certificate, so the same check
proves the previous certificate is served and slapd answers again.
"""

from __future__ import annotations

import logging

from lecentral.api import (
    CertEntry,
    CommandService,
    InstallError,
    VerifyError,
    VerifyTarget,
    check_key_access,
    installed_fingerprint,
    parse_verify_url,
    poll_until,
    url_scheme,
)
from lecentral_openldap.plugin import OpenLdapOptions
from lecentral_openldap.probe import SCHEMES, Credentials

log = logging.getLogger(__name__)


class OpenLdapService(CommandService):
    """``check`` + cn=config check, ``reload`` (a restart), then bind + root DSE over TLS."""

    def check_entry(self, entry: CertEntry) -> None:
        """A key slapd can read but others cannot."""
        check_key_access(entry, group=entry.options_as(OpenLdapOptions).key_group, usual_group="openldap")

    def check_config(self, entry: CertEntry) -> None:
        """``slaptest`` (the entry's ``check``), then the TLS files named in cn=config."""
        super().check_config(entry)
        slapd_d = entry.options_as(OpenLdapOptions).slapd_d
        if slapd_d:
            from lecentral_openldap.cnconfig import check_tls_files

            check_tls_files(entry, slapd_d)
        check_bind_before_restart(entry)

    def activate(self, entry: CertEntry) -> None:
        """Restart slapd, then wait until it serves the certificate in ``cert`` and answers."""
        super().activate(entry)
        wait_until_serving(entry)


def ldap_targets(entry: CertEntry) -> list[VerifyTarget]:
    """The entry's verify URLs an LDAP session can be opened on (StartTLS and LDAPS)."""
    return [parse_verify_url(url, SCHEMES) for url in entry.verify if url_scheme(url) in SCHEMES]


def _credentials(entry: CertEntry) -> Credentials:
    options = entry.options_as(OpenLdapOptions)
    return Credentials(options.bind_dn, options.bind_password)


def check_bind_before_restart(entry: CertEntry) -> None:
    """InstallError if the running slapd refuses the configured bind: that is a configuration
    error, not the new certificate's, and restarting would only end in a failed rollback.

    slapd not answering (stopped, or no TLS yet) is fine here: the restart may well fix it.
    """
    from lecentral_openldap.probe import BindRefused, probe

    targets = ldap_targets(entry)
    if not targets:
        return
    try:
        probe(targets[0], _credentials(entry), min(entry.verify_timeout, 5.0))
    except BindRefused as exc:
        raise InstallError(f"{entry.label}: before the restart, the running slapd already refuses "
                           f"the bind: {exc}; nothing was restarted") from None
    except VerifyError as exc:
        log.info("%s: slapd not checked before the restart: %s", entry.label, exc)


def wait_until_serving(entry: CertEntry) -> None:
    """Probe each LDAP verify URL until it presents the leaf in ``cert`` and answers; else VerifyError."""
    from lecentral_openldap.probe import probe

    targets = ldap_targets(entry)
    if not targets:
        log.info("%s: no ldap+starttls:// or ldaps:// verify URL; slapd not probed", entry.label)
        return
    expected = installed_fingerprint(entry.cert, "slapd")
    credentials = _credentials(entry)
    for target in targets:
        def presents(remaining: float, target: VerifyTarget = target) -> str:
            got = probe(target, credentials, min(remaining, 10.0))
            if got != expected:
                raise VerifyError(f"{target.url} presents certificate sha256 {got[:16]}..., not the "
                                  f"one in {entry.cert} ({expected[:16]}...)")
            return got

        got = poll_until(entry, presents)
        log.info("%s: %s presents sha256 %s and answers (%s, root DSE)", entry.label, target.url,
                 got[:16], credentials.who)
