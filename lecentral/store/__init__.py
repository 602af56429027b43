"""The certificate store: the seed's ``certs`` table, untouched, plus lecentral's own tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lecentral.config import DatabaseConfig
    from lecentral.interfaces import Store
    from lecentral.registry import Registry


def open_store(url: str, registry: Registry, settings: DatabaseConfig | None = None) -> Store:
    """Open the store that handles ``url`` (by its scheme), through the store plugins, and give
    it the rest of the ``[database]`` table (``settings``: the retry of a crowded server)."""
    store = registry.store_for_url(url).factory(url)
    if settings is not None:
        store.configure(settings)
    return store
