"""The CA that issued each certificate, for CA fallback (``[[acme.ca]]``): two columns of
``lecentral_cert_settings``, NULL until a renewal records them. ``certs`` is not touched.

Re-runnable (MariaDB commits each DDL): a column is added only if missing. Adding a nullable
column is an ALTER TABLE every backend (SQLite included) does in place, without a table copy.

Revision ID: 0004_issuer_ca
Revises: 0003_cert_settings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_issuer_ca"
down_revision = "0003_cert_settings"
branch_labels = None
depends_on = None

TABLE = "lecentral_cert_settings"
COLUMNS = (("issuer_ca", 64), ("issuer_ca_directory", 500))


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    for name, length in COLUMNS:
        if name not in have:
            op.add_column(TABLE, sa.Column(name, sa.String(length)))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
