"""The public API: everything a plugin may import from lecentral, and nothing else.

Plugins (third-party ones included) import only from here::

    from lecentral.api import CertEntry, CommandService, ServiceType, hookimpl

Every other module of lecentral is internal and may change in any release. The names below keep
their meaning across the releases of one major version (see docs/plugin-authors.md, "The public
API"); a name is removed or changed incompatibly only in a new major version, after a release
that warns about it.

Names are imported lazily, on first use (PEP 562), so that a plugin module importing
``hookimpl`` and ``ServiceType`` at load time does not pull in ``cryptography``, SQLAlchemy or
the ACME library: building the registry and ``--help`` stay fast.

The helpers that keep a service plugin small::

    ServiceType("apache", lazy_service("lecentral_apache.service:ApacheService"),   # imported on first use
                defaults={...}, options_model=ApacheOptions)   # [cert.options], validated at load
    class ApacheOptions:                                          # a frozen dataclass of option() fields
        port: int = option(443, "help shown by lecentral-install plugins")
    raise EntryError("options.port", "...")                       # the agent adds "FILE: cert[i]."
    check_key_pairs(entry, pairs_using(entry, pairs), DaemonTerms(...))   # does the daemon's key fit?
    check_key_access(entry, group="openldap", usual_group="openldap")    # can it read the key?
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lecentral.acme.client import AcmeClient, PendingChallenge
    from lecentral.certificates import (
        Certificate,
        Csr,
        load_private_key_public,
        md5_modulus,
        when,
    )
    from lecentral.errors import (
        ConfigError,
        CsrError,
        EntryError,
        InstallError,
        IssueError,
        LecentralError,
        PluginError,
        StoreError,
        VerifyError,
    )
    from lecentral.files_io import read_nofollow, replace_atomically
    from lecentral.hookspecs import hookimpl
    from lecentral.install.fileset import LocalFiles
    from lecentral.install.journal import Journal
    from lecentral.install.pairs import (
        DaemonTerms,
        KeyPair,
        check_key_access,
        check_key_pairs,
        new_leaf,
        pairs_using,
    )
    from lecentral.install.service import (
        OUTPUT_TAIL_LINES,
        CommandService,
        command_output,
        installed_fingerprint,
        poll_until,
        run_command,
    )
    from lecentral.interfaces import (
        Installer,
        IssuedCertificate,
        Issuer,
        Notifier,
        Service,
        Store,
        Verifier,
    )
    from lecentral.phases import phase
    from lecentral.records import CertEntry, Notification
    from lecentral.store.rows import CertRow
    from lecentral.types import (
        IssuerContext,
        IssuerType,
        NotifierType,
        ServiceType,
        StoreType,
        VerifierType,
        lazy_service,
        lazy_verifier,
        option,
    )
    from lecentral.verify import Scheme, VerifyTarget, parse_verify_url, url_scheme

#: public name -> the internal module that defines it
_WHERE: dict[str, str] = {
    # hooks and the records the registration hooks return
    "hookimpl": "lecentral.hookspecs",
    **dict.fromkeys(("IssuerType", "StoreType", "ServiceType", "VerifierType", "NotifierType",
                     "IssuerContext", "lazy_service", "lazy_verifier", "option"), "lecentral.types"),
    "Notification": "lecentral.records",
    # what a plugin implements
    **dict.fromkeys(("Issuer", "Store", "Service", "Installer", "Verifier", "Notifier",
                     "IssuedCertificate"), "lecentral.interfaces"),
    # what the engine hands to a plugin
    "CertEntry": "lecentral.records",
    "CertRow": "lecentral.store.rows",
    # errors: raise these, with a message naming the thing and the next step
    **dict.fromkeys(("LecentralError", "ConfigError", "CsrError", "InstallError", "IssueError",
                     "PluginError", "StoreError", "VerifyError", "EntryError"), "lecentral.errors"),
    # building blocks for service plugins
    **dict.fromkeys(("CommandService", "run_command", "command_output", "poll_until",
                     "installed_fingerprint", "OUTPUT_TAIL_LINES"), "lecentral.install.service"),
    "LocalFiles": "lecentral.install.fileset",
    "Journal": "lecentral.install.journal",
    **dict.fromkeys(("read_nofollow", "replace_atomically"), "lecentral.files_io"),
    **dict.fromkeys(("KeyPair", "DaemonTerms", "pairs_using", "check_key_pairs", "new_leaf",
                     "check_key_access"), "lecentral.install.pairs"),
    **dict.fromkeys(("Certificate", "Csr", "load_private_key_public", "md5_modulus", "when"),
                    "lecentral.certificates"),
    **dict.fromkeys(("VerifyTarget", "parse_verify_url", "url_scheme", "Scheme"), "lecentral.verify"),
    # for issuers: the run's ACME client (IssuerContext.acme) and what it returns
    **dict.fromkeys(("AcmeClient", "PendingChallenge"), "lecentral.acme.client"),
    # for issuers: mark a step's time, shown per certificate by lecentral renew --json and -v
    "phase": "lecentral.phases",
}

__all__ = [
    "OUTPUT_TAIL_LINES",
    "AcmeClient",
    "CertEntry",
    "CertRow",
    "Certificate",
    "CommandService",
    "ConfigError",
    "Csr",
    "CsrError",
    "DaemonTerms",
    "EntryError",
    "InstallError",
    "Installer",
    "IssueError",
    "IssuedCertificate",
    "Issuer",
    "IssuerContext",
    "IssuerType",
    "Journal",
    "KeyPair",
    "LecentralError",
    "LocalFiles",
    "Notification",
    "Notifier",
    "NotifierType",
    "PendingChallenge",
    "PluginError",
    "Scheme",
    "Service",
    "ServiceType",
    "Store",
    "StoreError",
    "StoreType",
    "Verifier",
    "VerifierType",
    "VerifyError",
    "VerifyTarget",
    "check_key_access",
    "check_key_pairs",
    "command_output",
    "hookimpl",
    "installed_fingerprint",
    "lazy_service",
    "lazy_verifier",
    "load_private_key_public",
    "md5_modulus",
    "new_leaf",
    "option",
    "pairs_using",
    "parse_verify_url",
    "phase",
    "poll_until",
    "read_nofollow",
    "replace_atomically",
    "run_command",
    "url_scheme",
    "when",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"lecentral.api has no public name {name!r} (see docs/plugin-authors.md)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__
