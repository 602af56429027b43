"""The built-in ``sql`` store plugin: SQLite, MariaDB/MySQL and PostgreSQL through SQLAlchemy."""

from __future__ import annotations

from lecentral.hookspecs import hookimpl
from lecentral.interfaces import Store
from lecentral.types import StoreType


def _open(url: str) -> Store:
    from lecentral.store.sql import (
        SqlStore,  # SQLAlchemy is imported only when a store is opened
    )

    return SqlStore(url)


@hookimpl
def lecentral_register_stores() -> list[StoreType]:
    return [StoreType(
        name="sql",
        schemes=("sqlite", "mysql+pymysql", "mariadb+pymysql",
                 "postgresql+psycopg"),
        factory=_open,
        description="SQLite (embedded default), MariaDB/MySQL via PyMySQL, PostgreSQL via psycopg",
    )]
