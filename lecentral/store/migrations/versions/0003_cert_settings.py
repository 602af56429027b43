"""Per-certificate settings of lecentral's own, beside ``certs`` (which stays the seed's table):
for now the ACME profile a certificate is ordered with (``lecentral set NAME --profile P``).

One row per certificate name (lower case, as DNS compares names), made on the first setting; a
certificate without a row uses ``[acme] profile``. Re-runnable (MariaDB commits each DDL).

Revision ID: 0003_cert_settings
Revises: 0002_fleet
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_cert_settings"
down_revision = "0002_fleet"
branch_labels = None
depends_on = None

TABLE = "lecentral_cert_settings"


def upgrade() -> None:
    if TABLE in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        TABLE,
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("profile", sa.String(64)),  # NULL: [acme] profile applies
        sa.Column("ts_changed", sa.BigInteger(), nullable=False),
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table(TABLE)
