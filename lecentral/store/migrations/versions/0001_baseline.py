"""Baseline: the own tables lecentral made before it used migrations.

lecentral_events, lecentral_renew_lock and lecentral_leftovers, each created only if missing: a
database made by an earlier lecentral (the tables there, no version table) is adopted with its
rows, a new one gets them. ``certs`` is not here and never will be.

Revision ID: 0001_baseline
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    # SQLite autoincrements only an INTEGER PRIMARY KEY
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                     autoincrement=True)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "lecentral_events" not in existing:
        op.create_table(
            "lecentral_events",
            _id(),
            sa.Column("ts", sa.BigInteger(), nullable=False),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            mysql_charset="utf8mb4",
        )
        op.create_index("ix_lecentral_events_ts", "lecentral_events", ["ts"])
        op.create_index("ix_lecentral_events_name", "lecentral_events", ["name"])
    if "lecentral_renew_lock" not in existing:
        op.create_table(
            "lecentral_renew_lock",
            sa.Column("scope", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer(), nullable=False),
            sa.Column("since", sa.BigInteger(), nullable=False),
            mysql_charset="utf8mb4",
        )
    if "lecentral_leftovers" not in existing:
        op.create_table(
            "lecentral_leftovers",
            _id(),
            sa.Column("ts", sa.BigInteger(), nullable=False),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("target", sa.Text(), nullable=False),
            sa.Column("data", sa.Text(), nullable=False),
            sa.Column("error", sa.Text(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("ts_last_try", sa.BigInteger(), nullable=False),
            mysql_charset="utf8mb4",
        )
        op.create_index("ix_lecentral_leftovers_name", "lecentral_leftovers", ["name"])


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: it would drop the event log")
