"""Built-in verifiers: TLS, and STARTTLS for SMTP, IMAP and POP3, one record per URL scheme.

The protocol code lives in :mod:`lecentral.verify`; this module only registers it, and stays cheap
to import (the ``ssl`` module and the dialogues are loaded on the first verification).
"""

from __future__ import annotations

from collections.abc import Callable

from lecentral.errors import ConfigError, VerifyError
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import Verifier
from lecentral.types import VerifierType
from lecentral.verify.url import SCHEMES, parse_verify_url


class ProtocolVerifier(Verifier):
    """Reads the presented leaf for URLs of one built-in scheme (``tls``, ``smtp+starttls``...).

    No chain or host-name validation: the caller compares the leaf's fingerprint (see
    :mod:`lecentral.verify.channel` for why).
    """

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def check_url(self, url: str) -> None:
        parse_verify_url(url)

    def presented_certificate(self, url: str, timeout: float) -> bytes:
        from lecentral.verify import fetch_leaf

        try:
            target = parse_verify_url(url)
        except ConfigError as exc:
            raise VerifyError(str(exc)) from None
        if target.scheme.name != self.scheme:
            raise VerifyError(f"verify URL {url!r} was handed to the {self.scheme}:// verifier")
        return fetch_leaf(target, timeout)


def _factory(scheme: str) -> Callable[[], Verifier]:
    return lambda: ProtocolVerifier(scheme)


@hookimpl
def lecentral_register_verifiers() -> list[VerifierType]:
    return [VerifierType(name, _factory(name), info.description) for name, info in SCHEMES.items()]
