"""Notices: SMS and voice broadcasts to the roster, their targets (held-out ones stored), and SMS opt-outs.

``notices`` carries a lifecycle like a round's, its hold-out fraction and seed, and optionally the round it
announces (a pre-survey notice). ``notice_targets`` has one row per sampled household, held out or sent to, with
the exactly-once mark, the provider's sid and status, delivery and (voice) heard-to-end. ``sms_opt_outs`` is
the do-not-contact list for SMS (replies of TD / 退订 / STOP).

Revision ID: 0008_notices
Revises: 0007_inbound_secrets
Create Date: 2026-12-07 02:53:12.281956
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_notices"
down_revision = "0007_inbound_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_opt_outs",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("keyword", sa.String(length=20), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sms_opt_outs")),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("sms", "voice", name="notice_channel", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("recording", sa.String(length=255), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "running",
                "paused",
                "completed",
                "cancelled",
                name="notice_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("sample", sa.String(length=50), nullable=False),
        sa.Column("sample_seed", sa.Integer(), nullable=True),
        sa.Column("holdout", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("windows", sa.JSON(), nullable=False),
        sa.Column("blocked_dates", sa.JSON(), nullable=False),
        sa.Column("cps", sa.Float(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.DateTime(), nullable=True),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("launched_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_notices_round_id_rounds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notices_round_id"), ["round_id"], unique=False)

    op.create_table(
        "notice_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("held_out", sa.Boolean(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "sending",
                "sent",
                "heard",
                "failed",
                "invalid",
                "opted_out",
                "held_out",
                "cancelled",
                name="notice_target_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("create_started_at", sa.DateTime(), nullable=True),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("provider_status", sa.String(length=20), nullable=True),
        sa.Column("last_sequence_number", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("heard_to_end", sa.Boolean(), nullable=True),
        sa.Column("plays", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=20), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("final_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_notice_targets_household_id_households")
        ),
        sa.ForeignKeyConstraint(["notice_id"], ["notices.id"], name=op.f("fk_notice_targets_notice_id_notices")),
        sa.ForeignKeyConstraint(["village_id"], ["villages.id"], name=op.f("fk_notice_targets_village_id_villages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_targets")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_notice_targets_call_sid")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_notice_targets_message_sid")),
        sa.UniqueConstraint("notice_id", "household_id", name=op.f("uq_notice_targets_notice_id_household_id")),
    )
    with op.batch_alter_table("notice_targets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notice_targets_due",
            ["notice_id", "id"],
            unique=False,
            sqlite_where=sa.text("state = 'pending'"),
            postgresql_where=sa.text("state = 'pending'"),
        )
        batch_op.create_index("ix_notice_targets_state", ["notice_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_notice_targets_household_id"), ["household_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notice_targets_notice_id"), ["notice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notice_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notice_targets_notice_id"))
        batch_op.drop_index(batch_op.f("ix_notice_targets_household_id"))
        batch_op.drop_index("ix_notice_targets_state")
        batch_op.drop_index(
            "ix_notice_targets_due",
            sqlite_where=sa.text("state = 'pending'"),
            postgresql_where=sa.text("state = 'pending'"),
        )

    op.drop_table("notice_targets")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notices_round_id"))

    op.drop_table("notices")
    op.drop_table("sms_opt_outs")
