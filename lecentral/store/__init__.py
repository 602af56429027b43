"""The certificate store: the seed's ``certs`` table, untouched, plus lecentral's own tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lecentral.interfaces import Store
    from lecentral.registry import Registry


def open_store(url: str, registry: Registry) -> Store:
    """Open the store that handles ``url`` (by its scheme), through the store plugins."""
    return registry.store_for_url(url).factory(url)
