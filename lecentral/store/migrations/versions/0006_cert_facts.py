"""What lecentral derived from each row's stored certificate, CSR and chain
(``lecentral_cert_facts``), with the values it derived them from, so that a renew sweep parses
only the rows whose stored values changed or that may be due (lecentral/store/facts.py).

The table is a cache: empty after this migration (the first sweep fills it, parsing every row
once), safe to empty at any time. ``certs`` is not touched. Re-runnable (MariaDB commits each
DDL): the table is made only if missing.

Revision ID: 0006_cert_facts
Revises: 0005_renew_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_cert_facts"
down_revision = "0005_renew_lease"
branch_labels = None
depends_on = None

TABLE = "lecentral_cert_facts"


def upgrade() -> None:
    if TABLE in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        TABLE,
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("blobs_sum", sa.BigInteger(), nullable=False),
        sa.Column("certbot", sa.String(1)),
        sa.Column("md5_modulus", sa.String(64)),
        sa.Column("md5_ca", sa.String(64)),
        sa.Column("ts_expire", sa.BigInteger()),
        sa.Column("webroot_path", sa.Text()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("not_before", sa.BigInteger()),
        sa.Column("not_after", sa.BigInteger()),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("names", sa.Text()),
        sa.Column("ts_checked", sa.BigInteger(), nullable=False),
        # ascii_bin as certs.name, so that the join compares like with like (and uses the keys)
        mysql_charset="ascii", mysql_collate="ascii_bin",
    )


def downgrade() -> None:
    op.drop_table(TABLE)
