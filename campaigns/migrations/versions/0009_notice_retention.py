"""Retention for notices: ``data retain`` pseudonymises old notices as it does old rounds.

``notice_targets.household_id`` and ``notice_targets.phone`` may be NULL (a retained notice keeps its
targets' village, arm and delivery only), ``notices.retained_at`` says when that was done, and
``notice_arms`` keeps, for each survey target, where it stood in a notice's draw once the two can no longer be
matched by household, so a lift report prints the same figures after either side is retained.

Revision ID: 0009_notice_retention
Revises: 0008_notices
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_notice_retention"
down_revision = "0008_notices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retained_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("notice_targets", schema=None) as batch_op:
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("phone", existing_type=sa.String(length=20), nullable=True)
    op.create_table(
        "notice_arms",
        sa.Column("round_target_id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("held_out", sa.Boolean(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["notice_id"], ["notices.id"], name=op.f("fk_notice_arms_notice_id_notices")),
        sa.ForeignKeyConstraint(
            ["round_target_id"], ["round_targets.id"], name=op.f("fk_notice_arms_round_target_id_round_targets")
        ),
        sa.ForeignKeyConstraint(["village_id"], ["villages.id"], name=op.f("fk_notice_arms_village_id_villages")),
        sa.PrimaryKeyConstraint("round_target_id", "notice_id", name=op.f("pk_notice_arms")),
    )
    with op.batch_alter_table("notice_arms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notice_arms_notice_id"), ["notice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notice_arms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notice_arms_notice_id"))
    op.drop_table("notice_arms")
    # A retained notice's targets have no household or number to go back to: they go with the column rule.
    op.execute("DELETE FROM notice_targets WHERE household_id IS NULL OR phone IS NULL")
    with op.batch_alter_table("notice_targets", schema=None) as batch_op:
        batch_op.alter_column("phone", existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_column("retained_at")
