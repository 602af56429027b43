"""pytest fixtures for the local ACME world; loaded through the ``pytest11`` entry point.

Installed with lecentral, so every test suite (lecentral's, and any plugin's) can ask for:

==================  ========  ==============================================================
fixture             scope     gives
==================  ========  ==============================================================
bind_server         session   :class:`BindServer` for ``example.test``, no sub-zones yet
pebble_server       session   :class:`PebbleServer` resolving through ``bind_server``
acme_world          session   :class:`AcmeWorld` made of the two above
acme_name           function  a fresh updatable sub-zone name in ``acme_world``
mariadb_server      session   :class:`MariaDBServer`
mariadb_url         function  URL of a new empty MariaDB database, dropped after the test
postgres_server     session   :class:`PostgresServer`
postgres_url        function  URL of a new empty PostgreSQL database, dropped after the test
sqlite_url          function  URL of an SQLite file in ``tmp_path``
==================  ========  ==============================================================

The real TLS daemons (``nginx_server``, ``slapd_server``, ...) come from
:mod:`lecentral_testing.daemons.fixtures`, loaded through ``pytest_plugins`` below.

A server starts only when a test asks for its fixture (directly or through another fixture),
once per session, and is stopped at the end of the session even when tests fail. The servers
are shared: tests must use their own names (``acme_name``, ``mariadb_url``), never fixed ones.
"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lecentral_testing.bind import BindServer
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pebble import AcmeWorld, PebbleServer
from lecentral_testing.postgres import PostgresServer

if TYPE_CHECKING:
    from lecentral_testing.agent import PebbleOrders

#: Real TLS daemons (nginx, apache2, postfix, dovecot, slapd) for verifier, agent and plugin tests.
pytest_plugins = ["lecentral_testing.daemons.fixtures"]


def _database_name(request: pytest.FixtureRequest) -> str:
    """A new database name that still says which test made it (handy when reading server logs)."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    return f"t_{test}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def bind_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    """A running BIND authoritative for ``example.test``; add sub-zones with ``add_subzone``."""
    with BindServer(tmp_path_factory.mktemp("bind")) as server:
        yield server


@pytest.fixture(scope="session")
def pebble_server(tmp_path_factory: pytest.TempPathFactory, bind_server: BindServer) -> Iterator[PebbleServer]:
    """A running Pebble whose validation authority resolves names through ``bind_server``."""
    dns_server = (bind_server.address, bind_server.port)
    with PebbleServer(tmp_path_factory.mktemp("pebble"), dns_server=dns_server) as server:
        yield server


@pytest.fixture(scope="session")
def acme_world(bind_server: BindServer, pebble_server: PebbleServer) -> AcmeWorld:
    """BIND + Pebble as one :class:`AcmeWorld` (``.bind``, ``.pebble``, ``.new_name()``)."""
    return AcmeWorld(bind_server, pebble_server)


@pytest.fixture
def acme_name(acme_world: AcmeWorld) -> str:
    """A fresh sub-zone of ``acme_world`` (e.g. ``t3-a1b2c3.example.test``) that the key
    ``acme-update`` may update at ``_acme-challenge.NAME TXT``; it resolves to 127.0.0.1."""
    return acme_world.new_name()


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A running MariaDB; ``.url`` is its application database, shared by the whole session."""
    with MariaDBServer(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


@pytest.fixture
def mariadb_url(request: pytest.FixtureRequest, mariadb_server: MariaDBServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty MariaDB database for this test only."""
    yield from _database_for_test(request, mariadb_server)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A running PostgreSQL; ``.url`` is its application database, shared by the whole session."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty PostgreSQL database for this test only."""
    yield from _database_for_test(request, postgres_server)


@pytest.fixture(scope="session")
def pebble_orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleOrders]:
    """Real certificates from an always-valid Pebble of its own (:class:`PebbleOrders`)."""
    from lecentral_testing.agent import PebbleOrders

    workdir = tmp_path_factory.mktemp("pebble-orders")
    with PebbleServer(workdir / "pebble", env={"PEBBLE_VA_ALWAYS_VALID": "1"}) as pebble:
        orders = PebbleOrders(pebble, workdir)
        try:
            yield orders
        finally:
            orders.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of an SQLite database file in this test's ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'lecentral.sqlite'}"


def _database_for_test(request: pytest.FixtureRequest, server: MariaDBServer | PostgresServer) -> Iterator[str]:
    """Yield the URL of a new database on ``server`` named after the test, then drop it.

    Dropping is best effort (the server may have been stopped by the test, or a lock held): a
    failure is only a warning, since the whole server is thrown away at the end of the session.
    """
    if not server.running:  # an earlier test took it down and did not bring it back
        server.start()
    name = _database_name(request)
    yield server.create_database(name)
    if not server.running:
        return
    try:
        server.drop_database(name)
    except Exception as exc:  # noqa: BLE001 - never turn a passing test into an error over clean-up
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=1)
