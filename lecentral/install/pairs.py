"""The certificate/key pairs a daemon will load: do they fit the new certificate?

A daemon's config test rarely opens the certificate files (``apache2ctl configtest``,
``slaptest``, ``doveconf -n``), or opens them but misses a key of another type (``nginx -t``). A
key that does not match makes the reload "succeed" and the daemon stop, or fail every handshake.
So a service plugin reads from the daemon which certificate file it pairs with which key
(:class:`KeyPair`), and :func:`check_key_pairs` checks, with the new files in place and before
anything is reloaded, each pair that names one of the entry's files. :func:`check_key_access`
checks, when the configuration is loaded, that the daemon can read the key and nobody else can.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from lecentral.errors import CsrError, EntryError, InstallError
from lecentral.records import CertEntry

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lecentral.certificates import Certificate

log = logging.getLogger(__name__)


class _NamesACert(Protocol):
    @property
    def cert(self) -> str: ...


P = TypeVar("P", bound=_NamesACert)

#: the roles of the files a daemon may load as its certificate
CERT_ROLES = ("cert", "fullchain", "combined")


@dataclass(frozen=True)
class KeyPair:
    """One certificate file a daemon loads and the key file it pairs with it.

    ``key`` ``None`` means the daemon looks for the key in the certificate file itself.
    ``source`` says who pairs them, for messages ("Apache's <VirtualHost *:443> (site.conf:3)").
    ``cert_words`` and ``key_words`` name the two in the daemon's terms, e.g. ``ssl_certificate
    /etc/ssl/a.full`` and ``ssl_certificate_key /etc/ssl/a.key`` (default: the bare paths).
    """

    cert: str
    key: str | None
    source: str
    cert_words: str = ""
    key_words: str = ""


@dataclass(frozen=True)
class DaemonTerms:
    """How to speak of a daemon in the errors: ``DaemonTerms("nginx", "ssl_certificate_key", "that
    server block would fail every TLS handshake", "nginx was not reloaded")``."""

    name: str
    key_setting: str  # the directive that names the key
    failure: str  # what a mismatch would do to it
    untouched: str = "nothing was restarted"


def pairs_using(entry: CertEntry, pairs: Iterable[P]) -> list[P]:
    """The pairs (:class:`KeyPair`, or a plugin's own records with a ``cert`` path) whose
    certificate is one of the entry's files (``cert``, ``fullchain``, ``combined``)."""
    ours = {os.path.realpath(path) for role, path in entry.files.items() if role in CERT_ROLES}
    return [pair for pair in pairs if os.path.realpath(pair.cert) in ours]


def new_leaf(entry: CertEntry) -> Certificate:
    """The certificate now in ``entry.cert`` (the new one, during an install)."""
    from lecentral.certificates import Certificate

    try:
        return Certificate.load(Path(entry.cert).read_bytes(), entry.cert)
    except (OSError, CsrError) as exc:
        raise InstallError(f"{entry.label}: cannot read the new certificate {entry.cert}: {exc}") from None


def check_key_pairs(entry: CertEntry, pairs: Iterable[KeyPair], daemon: DaemonTerms) -> None:
    """InstallError if one of ``pairs`` puts a key that does not match the new certificate (or
    no key at all) with it. A key that cannot be read here (a passphrase, a PKCS#11 URI) is the
    daemon's business: a warning. Call it with :func:`pairs_using`'s answer."""
    leaf = None
    for pair in pairs:
        leaf = leaf or new_leaf(entry)
        _check_pair(entry, pair, leaf, daemon)


def _check_pair(entry: CertEntry, pair: KeyPair, leaf: Certificate, daemon: DaemonTerms) -> None:
    from lecentral.certificates import load_private_key_public, md5_modulus

    key = pair.key or pair.cert
    cert_words = pair.cert_words or pair.cert
    key_words = pair.key_words or f"the key {key}"
    fix = (f"Point {daemon.key_setting} at {entry.key}, or set key in [[cert]] to the file "
           f"{daemon.name} uses ({daemon.untouched})")
    if pair.key is not None and not os.path.exists(key):
        raise InstallError(f"{entry.label}: {pair.source} pairs {cert_words} with {key_words}, which "
                           f"does not exist; {daemon.failure}. {fix}")
    try:
        public = load_private_key_public(Path(key))
    except CsrError as exc:
        if pair.key is None:
            raise InstallError(
                f"{entry.label}: {pair.source} loads {cert_words} with no {daemon.key_setting}, so "
                f"{daemon.name} would look for the key in that file, which holds none; "
                f"{daemon.failure}. Add {daemon.key_setting} {entry.key} ({daemon.untouched})") from None
        log.warning("%s: cannot check the key %s that %s pairs with %s: %s", entry.label, key,
                    pair.source, pair.cert, exc)
        return
    if md5_modulus(public) != leaf.md5_modulus:
        raise InstallError(
            f"{entry.label}: {pair.source} pairs {cert_words} with {key_words}, which does not "
            f"match the new certificate ({leaf.key_type}, the key {entry.key}); {daemon.failure}. {fix}")


def check_key_access(entry: CertEntry, *, usual_group: str, group: str = "",
                     group_option: str = "key_group") -> None:
    """EntryError naming ``key`` if the entry's private key is readable by every user, or (with
    ``group``, the daemon's group: ``options.<group_option>``) not readable by that group.

    For ``check_entry``: the agent never writes the key, so a key it does not like is reported
    before anything is touched. ``usual_group`` is the daemon's group on Debian, for the hint. A
    key that does not exist yet is left to the engine's own checks, which name it.
    """
    import grp
    import pwd
    import stat

    try:
        st = os.stat(entry.key)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EntryError("key", f"cannot stat the key {entry.key}: {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise EntryError("key", f"the private key {entry.key} is readable by every user (mode "
                         f"{mode:04o}); run chmod o-rwx {entry.key} (Debian: root:{group or usual_group} "
                         "0640); nothing was installed")
    if not group:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise EntryError(f"options.{group_option}", f"no group {group!r} on this host (is the daemon "
                         "installed?)") from None
    try:
        primary = pwd.getpwuid(st.st_uid).pw_gid
    except KeyError:
        primary = None
    if (st.st_gid == gid and mode & 0o040) or (primary == gid and mode & 0o400):
        return
    raise EntryError("key", f"the {entry.service} daemon (group {group}) cannot read the private key {entry.key} (owner "
                     f"{st.st_uid}:{st.st_gid}, mode {mode:04o}); run chgrp {group} {entry.key} && "
                     f"chmod 0640 {entry.key}, or set options.{group_option}; nothing was installed")
