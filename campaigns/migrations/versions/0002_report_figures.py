"""Report figures: the village and response status copied onto targets and answers.

``round_targets.village_id`` and ``round_targets.response_status``, ``answers.village_id`` and
``answers.counted`` let the village rates group a round's answers without joining every answer to its
response, target and household (see "Report figures" in campaigns/models.py). Existing rows are filled from
the tables they copy before the columns become NOT NULL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:43:01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RESPONSE_STATUSES = ("in_progress", "completed", "refused", "ineligible", "opted_out")

BACKFILL = (
    (
        "UPDATE round_targets SET"
        " village_id = (SELECT h.village_id FROM households h WHERE h.id = round_targets.household_id),"
        " response_status = (SELECT r.status FROM responses r WHERE r.target_id = round_targets.id)"
    ),
    (
        "UPDATE answers SET"
        " village_id = (SELECT t.village_id FROM responses r JOIN round_targets t ON t.id = r.target_id"
        " WHERE r.id = answers.response_id),"
        " counted = (SELECT r.status = 'completed' FROM responses r WHERE r.id = answers.response_id)"
    ),
)


def upgrade() -> None:
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("village_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("response_status", sa.String(length=20), nullable=True))
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("village_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("counted", sa.Boolean(), server_default=sa.false(), nullable=False))

    for statement in BACKFILL:
        op.execute(statement)

    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.alter_column("village_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_round_targets_village_id_villages"), "villages", ["village_id"], ["id"]
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_round_targets_target_response_status"),
            sa.column("response_status").in_(RESPONSE_STATUSES),
        )
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.alter_column("village_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("counted", existing_type=sa.Boolean(), server_default=None)
        batch_op.create_foreign_key(batch_op.f("fk_answers_village_id_villages"), "villages", ["village_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_answers_village_id_villages"), type_="foreignkey")
        batch_op.drop_column("counted")
        batch_op.drop_column("village_id")
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_round_targets_target_response_status"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_round_targets_village_id_villages"), type_="foreignkey")
        batch_op.drop_column("response_status")
        batch_op.drop_column("village_id")
