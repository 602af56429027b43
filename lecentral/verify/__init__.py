"""Ask a running service which certificate it presents.

The agent installs a certificate, reloads the service, then calls :func:`presented_fingerprint`
with the ``verify`` URL of the ``[[cert]]`` entry and compares the result with the SHA-256
fingerprint of the certificate it just wrote. Schemes (see :data:`lecentral.verify.url.SCHEMES` and
docs/verifiers.md)::

    tls://host:port[?sni=name]     https://host[:443]         smtps://host[:465]
    imaps://host[:993]             pop3s://host[:995]
    smtp+starttls://host[:25][?ehlo=name]   imap+starttls://host[:143]
    pop3+starttls://host[:110]

``ldap+starttls://`` and ``ldaps://`` come with the lecentral-openldap plugin (ldap3).

The certificate chain is **not** validated: a fingerprint match is a stronger check (see
:mod:`lecentral.verify.channel`). Errors are :class:`~lecentral.errors.VerifyError` naming
``host:port`` and what failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lecentral.errors import ConfigError, LecentralError, VerifyError
from lecentral.verify.url import (
    SCHEMES,
    Scheme,
    VerifyTarget,
    masked_url,
    parse_verify_url,
)

if TYPE_CHECKING:
    from lecentral.registry import Registry

__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "Scheme",
    "VerifyTarget",
    "check_verify_url",
    "fetch_leaf",
    "parse_verify_url",
    "presented_fingerprint",
    "presented_leaf",
    "url_scheme",
]

#: Seconds for the whole check (connect, dialogue, handshake) when the caller gives none.
DEFAULT_TIMEOUT = 10.0


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` (the registry key of its verifier); ConfigError if none."""
    scheme, sep, _ = str(url).partition("://")
    if not sep or not scheme:
        raise ConfigError(f"verify URL {masked_url(url)!r}: expected SCHEME://HOST[:PORT], "
                          "e.g. tls://127.0.0.1:443")
    return scheme.lower()


def fetch_leaf(target: VerifyTarget, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Connect to ``target``, run its STARTTLS dialogue if any, and return the DER of the leaf."""
    from lecentral.verify.channel import Channel
    from lecentral.verify.dialogues import DIALOGUES

    with Channel(target, timeout) as channel:
        channel.connect()
        dialogue = DIALOGUES.get(target.scheme.protocol)
        goodbye = dialogue(channel) if dialogue is not None else b""
        der = channel.handshake()
        channel.close(goodbye)
    return der


def presented_leaf(registry: Registry, url: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """DER of the leaf the service at ``url`` presents.

    The verifier is looked up in ``registry`` by the URL's scheme, so plugins can add schemes.
    Every failure, a malformed URL or an unknown scheme included, is a :class:`VerifyError`: the
    caller is usually in the middle of an install and must roll back whatever went wrong.
    """
    try:
        verifier = registry.verifier(url_scheme(url)).factory()
        return verifier.presented_certificate(url, timeout)
    except VerifyError:
        raise
    except LecentralError as exc:  # ConfigError, PluginError: still a failed verification
        message = str(exc)
        raise VerifyError(message if message.startswith("verify URL") else f"verify {masked_url(url)}: {message}") \
            from None


def presented_fingerprint(registry: Registry, url: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """SHA-256 hex (lower case, no colons) of the leaf the service at ``url`` presents
    (:func:`presented_leaf`)."""
    import hashlib

    return hashlib.sha256(presented_leaf(registry, url, timeout)).hexdigest()


def check_verify_url(registry: Registry, url: str) -> str:
    """Validate a ``verify`` setting when the configuration is loaded; return the URL unchanged.

    Raises :class:`ConfigError` if the scheme has no verifier installed, or if the URL is
    malformed (host, port, parameters: the verifier's :meth:`~lecentral.interfaces.Verifier.check_url`).
    """
    from lecentral.errors import PluginError

    scheme = url_scheme(url)
    try:
        record = registry.verifier(scheme)
    except PluginError as exc:
        raise ConfigError(f"verify URL {masked_url(url)!r}: {exc}") from None
    record.factory().check_url(url)
    return url
