"""Inbound calls and the deployment's own secrets.

``rounds.inbound`` says what a call from a household of the sample does: ``call-back`` (the default: no
answers are taken on the inbound call, the dialler calls the number back) or ``answer``. ``round_targets``
gets ``call_backs`` (call-backs granted, each a dial beyond the attempt budget) and
``call_back_requested_at`` (the pending one, claimed first). ``responses.inbound`` marks interviews answered
on an inbound call. ``deployment_secrets`` keeps secrets the deployment generated for itself (the simulated
network's webhook signing key). Existing rounds keep answering on inbound calls, as they did when created.

Revision ID: 0007_inbound_secrets
Revises: 0006_caller_ids_accounts
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_inbound_secrets"
down_revision = "0006_caller_ids_accounts"
branch_labels = None
depends_on = None

INBOUND_MODES = ("call-back", "answer")


def upgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        # Rounds created before this revision took answers on inbound calls: they keep doing so.
        batch_op.add_column(sa.Column("inbound", sa.String(length=20), server_default="answer", nullable=False))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.alter_column("inbound", existing_type=sa.String(length=20), server_default=None)
        batch_op.create_check_constraint(batch_op.f("ck_rounds_inbound_mode"), sa.column("inbound").in_(INBOUND_MODES))
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("call_backs", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("call_back_requested_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.alter_column("call_backs", existing_type=sa.Integer(), server_default=None)
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inbound", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.alter_column("inbound", existing_type=sa.Boolean(), server_default=None)
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployment_secrets")),
    )


def downgrade() -> None:
    op.drop_table("deployment_secrets")
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_column("inbound")
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.drop_column("call_back_requested_at")
        batch_op.drop_column("call_backs")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_rounds_inbound_mode"), type_="check")
        batch_op.drop_column("inbound")
