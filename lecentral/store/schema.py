"""Table definitions for SQLAlchemy Core.

``certs`` is described here only to query it; it is created from the DDL files in ``ddl/`` (the
seed's own DDL on MySQL/MariaDB), never altered. lecentral's own data lives in its own tables.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

certs = Table(
    "certs", metadata,
    Column("name", String(250), primary_key=True),
    Column("enable", String(1)),
    Column("comment", Text),
    Column("certbot", String(1)),
    Column("csr", LargeBinary, nullable=False),
    Column("ca", LargeBinary),
    Column("crt", LargeBinary),
    Column("md5_modulus", String(64), nullable=False),
    Column("md5_ca", String(64)),
    Column("ts_expire", BigInteger),
    Column("ts_last_update", BigInteger),
    Column("count_fail_update", Integer),
    Column("old_ca", LargeBinary),
    Column("old_crt", LargeBinary),
    Column("webroot_path", Text),
)

#: Every renewal attempt, install report and admin change, with its error text.
events = Table(
    "lecentral_events", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False, index=True),
    Column("name", String(250), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("message", Text, nullable=False),
    mysql_charset="utf8mb4",
)

#: Who holds the renew lock (one row while a renew works), so that a run finding the lock taken
#: can say which host and process has it. The lock itself is GET_LOCK / an advisory lock.
renew_lock = Table(
    "lecentral_renew_lock", metadata,
    Column("scope", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", BigInteger, nullable=False),
    mysql_charset="utf8mb4",
)

#: Challenge records an issuer published and could not remove (a TXT record, a webroot file):
#: ``lecentral renew`` retries removing each at the start of every run until it succeeds.
leftovers = Table(
    "lecentral_leftovers", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("name", String(250), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("target", Text, nullable=False),
    Column("data", Text, nullable=False),  # JSON: what a retry needs, never a secret
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("ts_last_try", BigInteger, nullable=False),
    mysql_charset="utf8mb4",
)

OWN_TABLES = (events, renew_lock, leftovers)

#: SQLAlchemy dialect name -> folder of ``ddl/``
DDL_DIALECTS = {"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "postgresql": "postgresql"}


def certs_ddl(dialect: str) -> str:
    """The CREATE TABLE for ``certs`` in a dialect (MySQL/MariaDB: the seed's DDL verbatim)."""
    folder = DDL_DIALECTS[dialect]
    return files("lecentral.store").joinpath("ddl", folder, "certs.sql").read_text("ascii")
