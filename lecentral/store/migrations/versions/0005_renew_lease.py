"""The renew lease: two columns of ``lecentral_renew_lock``, for databases whose ``GET_LOCK`` is
not cluster-wide (MariaDB Galera: see ``lecentral.store.renewlock`` and docs/ha.md). ``expires``
(Unix time, the database server's clock) ends a lease whose holder died; ``token`` tells the holder
its own lease from a successor's. Both are NULL in the holder records of GET_LOCK and advisory
locks. ``certs`` is not touched.

Re-runnable (MariaDB commits each DDL): a column is added only if missing. Adding a nullable
column is an ALTER TABLE every backend (SQLite included) does in place, without a table copy.

Revision ID: 0005_renew_lease
Revises: 0004_issuer_ca
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_renew_lease"
down_revision = "0004_issuer_ca"
branch_labels = None
depends_on = None

TABLE = "lecentral_renew_lock"
COLUMNS = (("expires", sa.BigInteger()), ("token", sa.String(64)))


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    for name, kind in COLUMNS:
        if name not in have:
            op.add_column(TABLE, sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
