"""Fixtures the root test suite shares.

The world modules beside this file hold the fixtures of each test world, registered here as
plugins, and the helpers (names, config builders, assertions) the test modules import from them:

* ``renew_world``: ``dns_world`` (session) -- BIND with the renew tests' sub-zones, a resolver, Pebble.
* ``agent_world``: ``agent_pebble`` (session), ``smtp_server`` (session) and ``smtp``, ``syslog``,
  ``world`` (an :class:`~lecentral_testing.agent.AgentWorld` in ``tmp_path``).
* ``webroot_world``: ``web_world`` (session) -- BIND, nginx serving the sites' webroots, Pebble.

The local ACME world's own fixtures (``acme_world``, ``mariadb_url``, ...) come from
:mod:`lecentral_testing.pytest_plugin`, loaded through its entry point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lecentral.store.sql import SqlStore

pytest_plugins = ["renew_world", "agent_world", "webroot_world"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """An SQLite store at ``tmp_path/lecentral.db`` (where ``make_config`` points), schema made."""
    s = SqlStore(f"sqlite:///{tmp_path}/lecentral.db")
    s.init_schema()
    yield s
    s.close()
