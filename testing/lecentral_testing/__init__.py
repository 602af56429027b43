"""The local ACME world: real throwaway servers on 127.0.0.1 for tests, demos and benchmarks.

Every launcher writes its configuration into a temp dir, starts the real daemon on dynamic
loopback ports, waits until it answers, and stops it by pid. Each is a context manager and works
outside pytest::

    from lecentral_testing import AcmeWorld, MariaDBServer

    with AcmeWorld.create(subzones=["www.example.test"]) as world:
        world.pebble.directory_url        # https://127.0.0.1:<port>/dir, trust world.pebble.ca_bundle
        world.bind.port                   # DNS (UDP+TCP) on 127.0.0.1
        world.bind.tsig_keys              # {"acme-update": "<base64 secret>"}

    with MariaDBServer() as db:
        db.url                            # mysql+pymysql://lecentral:...@127.0.0.1:<port>/lecentral

- :class:`BindServer`: named authoritative for a parent zone and one TSIG-updatable sub-zone per
  name (the seed's named.conf layout), rndc freeze/thaw, optional lagging secondary.
- :class:`PebbleServer`: Pebble ACME CA, TLS verified by ``ca_bundle``, optional EAB.
- :class:`AcmeWorld`: both, Pebble resolving through BIND.
- :class:`MariaDBServer`, :class:`PostgresServer`: real databases with a password user.

In pytest, use the fixtures of :mod:`lecentral_testing.pytest_plugin` (loaded automatically once
lecentral is installed): ``acme_world``, ``acme_name``, ``bind_server``, ``pebble_server``,
``mariadb_server``, ``mariadb_url``, ``postgres_server``, ``postgres_url``, ``sqlite_url``.
See docs/testing.md.

Needs the Debian packages pebble, bind9, bind9-utils, mariadb-server, postgresql. When run as
root, MariaDB and PostgreSQL run as the ``mysql`` / ``postgres`` system users.
"""

from lecentral_testing.bind import DEFAULT_KEY_NAME, BindServer, SubZone
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pebble import AcmeWorld, PebbleServer
from lecentral_testing.ports import LOOPBACK, free_port, port_is_free
from lecentral_testing.postgres import PostgresServer
from lecentral_testing.process import PortClashError, ServerStartError

__all__ = [
    "DEFAULT_KEY_NAME",
    "LOOPBACK",
    "AcmeWorld",
    "BindServer",
    "MariaDBServer",
    "PebbleServer",
    "PortClashError",
    "PostgresServer",
    "ServerStartError",
    "SubZone",
    "free_port",
    "port_is_free",
]
