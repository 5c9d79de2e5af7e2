"""Caller IDs and Twilio accounts: a pool of numbers calls may show, per village or round; the accounts a
round may dial through; the account and caller ID of each call.

Revision ID: 0006_caller_ids_accounts
Revises: 0005_webhook_activity
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_caller_ids_accounts"
down_revision = "0005_webhook_activity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caller_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("account", sa.String(length=30), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_ids")),
        sa.UniqueConstraint("number", name=op.f("uq_caller_ids_number")),
    )
    with op.batch_alter_table("villages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caller_id_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_villages_caller_id_id_caller_ids"), "caller_ids", ["caller_id_id"], ["id"]
        )
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caller_id_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("accounts", sa.JSON(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_rounds_caller_id_id_caller_ids"), "caller_ids", ["caller_id_id"], ["id"]
        )
    op.execute("UPDATE rounds SET accounts = '[]'")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.alter_column("accounts", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("call_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("from_number", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_attempts", schema=None) as batch_op:
        batch_op.drop_column("from_number")
        batch_op.drop_column("account")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_rounds_caller_id_id_caller_ids"), type_="foreignkey")
        batch_op.drop_column("accounts")
        batch_op.drop_column("caller_id_id")
    with op.batch_alter_table("villages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_villages_caller_id_id_caller_ids"), type_="foreignkey")
        batch_op.drop_column("caller_id_id")
    op.drop_table("caller_ids")
