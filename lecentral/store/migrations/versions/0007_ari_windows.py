"""The renewal windows the CAs gave (ACME Renewal Information, RFC 9773), kept until the CA's
``Retry-After`` (``lecentral_ari_windows``), so that a renew run asks a CA only about the
certificates whose answer is due again, and two central hosts sharing the database share them
(lecentral/renew/ariwindows.py).

The table is a cache: empty after this migration (the next renew asks every certificate once),
safe to empty at any time. ``certs`` is not touched. Re-runnable (MariaDB commits each DDL): the
table is made only if missing.

Revision ID: 0007_ari_windows
Revises: 0006_cert_facts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_ari_windows"
down_revision = "0006_cert_facts"
branch_labels = None
depends_on = None

TABLE = "lecentral_ari_windows"


def upgrade() -> None:
    if TABLE in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        TABLE,
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("ari_cert_id", sa.String(250), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("explanation", sa.String(500)),
        sa.Column("ts_fetched", sa.BigInteger(), nullable=False),
        sa.Column("ts_retry", sa.BigInteger(), nullable=False),
        # ascii_bin as certs.name, so that the join compares like with like (and uses the keys)
        mysql_charset="ascii", mysql_collate="ascii_bin",
    )


def downgrade() -> None:
    op.drop_table(TABLE)
