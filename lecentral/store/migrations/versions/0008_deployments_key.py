"""On MariaDB/MySQL, ``lecentral_deployments`` stored in the order of its (name, host, entry)
key: that key becomes the PRIMARY KEY (InnoDB keeps the rows in its order), ``id`` keeps its
values and its AUTO_INCREMENT through a unique key of its own.

Every fleet command (``check``, ``metrics``, ``fleet``) looks up the deployments of each
certificate by name. Through the secondary (name, host, entry) key, each of them was a second
look-up into the table by ``id``: at 100,000 certificates on 3 hosts, 300,000 random reads, most
of the server's time (bench/README.md: the statement of ``metrics`` 3.0-3.5 s -> 1.8-2.2 s on a
copy clustered so). Nothing reads ``id``. SQLite and PostgreSQL are not changed (PostgreSQL does
not keep a table in an index's order; SQLite's reads go through the key's index as before).

The rows are kept; the table is rebuilt once (MariaDB: a few seconds per 100,000 rows). Re-runnable
(MariaDB commits each DDL): nothing is done when the key is already the primary one.

Revision ID: 0008_deployments_key
Revises: 0007_ari_windows
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_deployments_key"
down_revision = "0007_ari_windows"
branch_labels = None
depends_on = None

TABLE = "lecentral_deployments"
KEY = ["name", "host", "entry"]
#: the unique key that keeps ``id`` an AUTO_INCREMENT column once it is no longer the primary one
ID_KEY = "uq_lecentral_deployments_id"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    inspector = sa.inspect(bind)
    if inspector.get_pk_constraint(TABLE)["constrained_columns"] == KEY:
        return
    has_id_key = any(i["name"] == ID_KEY for i in inspector.get_indexes(TABLE))
    op.execute(f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (name, host, entry)"
               + ("" if has_id_key else f", ADD UNIQUE KEY {ID_KEY} (id)"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    op.execute(f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (id), DROP KEY {ID_KEY}")
