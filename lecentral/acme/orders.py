"""What a newOrder carries besides the identifiers: the ACME profile and the ARI ``replaces``.

* **Profile** (draft-ietf-acme-profiles): the CA lists the profiles it offers in its directory's
  ``meta.profiles``; the order names one (``shortlived``, ``tlsserver``...). A profile the CA does
  not offer would be refused by the CA, so it is refused here first with the list of those it
  offers; a CA that offers none gets no ``profile`` field at all (its one default applies).
* **replaces** (RFC 9773 §5): the ARI certID of the certificate being renewed. A CA exempts such
  renewals from its rate limits. When the CA rejects it (that certificate was already replaced,
  or it does not know it), the order is made again once without it.

Why a context variable: issuers (built-in and plugins) call ``AcmeClient.new_order(csr, names)``
and know nothing of lecentral's own tables; the renew job sets the options of the certificate a
worker thread is issuing (:func:`ordering_with`) around ``Issuer.issue``, and ``new_order`` reads
them. Each worker thread has its own context, so concurrent workers never see each other's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from acme import messages
from josepy.json_util import field

from lecentral.errors import IssueError


@dataclass(frozen=True)
class OrderOptions:
    """The profile and the certID to replace for the order a worker is about to make."""

    profile: str | None = None
    replaces: str | None = None
    #: where the profile came from, named in errors ("[acme] profile", "lecentral set ...")
    profile_source: str = "[acme] profile"


_current: contextvars.ContextVar[OrderOptions | None] = contextvars.ContextVar(
    "lecentral_order_options", default=None)


@contextlib.contextmanager
def ordering_with(options: OrderOptions) -> Iterator[None]:
    """Make ``options`` those of every ``AcmeClient.new_order`` of this thread in the block."""
    token = _current.set(options)
    try:
        yield
    finally:
        _current.reset(token)


def current_options() -> OrderOptions | None:
    """The options set by :func:`ordering_with` in this thread, if any."""
    return _current.get()


class NewOrderWithReplaces(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (acme's NewOrder has ``profile`` but not this).

    Both are omitted from the JSON when empty, so an order without them is byte-for-byte the
    library's own."""

    replaces: str | None = field("replaces", omitempty=True)


def chosen_profile(wanted: str | None, offered: dict[str, str], directory: str,
                   source: str) -> str | None:
    """The profile to send: ``wanted`` if the CA offers it, None if the CA offers none.

    An unknown profile is an IssueError naming the ones the CA offers."""
    if not wanted or not offered:
        return None
    if wanted in offered:
        return wanted
    listed = ", ".join(f"{name} ({' '.join(str(text).split())[:80]})" if text else name
                       for name, text in sorted(offered.items()))
    raise IssueError(f"the CA at {directory} offers no ACME profile {wanted!r} (from {source}); it "
                     f"offers: {listed}")


def rejects_replaces(code: str, detail: str) -> bool:
    """True if a newOrder problem is about ``replaces`` (already replaced, unknown certID...):
    the order is then worth making once more without it."""
    if code == "alreadyReplaced":
        return True
    return code in ("malformed", "conflict", "unauthorized") and \
        "replace" in detail.lower()
