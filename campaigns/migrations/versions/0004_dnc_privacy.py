"""Do-not-call with a source and a history; retired households; anonymous targets; retained rounds.

- ``do_not_call`` gets an id, a keyed hash of the number (``phone_hash``, HMAC-SHA256 with a key generated
  here and kept in ``hash_keys``), a source (keypad, office, import) and who added it; ``phone`` becomes
  nullable (a forgotten number keeps only its hash). Existing entries are copied with their hash.
- ``do_not_call_events``: the list's history (added, removed, forgotten).
- ``households.retired_at``: households a full roster no longer lists.
- ``round_targets.household_id`` and ``round_targets.phone`` become nullable and ``round_targets.cadre_id``
  is added: an anonymous target keeps its village and cadre for the reports, not its household.
- ``follow_ups.household_id`` becomes nullable; ``rounds.retained_at`` marks pseudonymised rounds.

Revision ID: 0004_dnc_privacy
Revises: 0003_accounts
Create Date: 2026-12-07 03:05:00
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from campaigns.phones import mask

revision = "0004_dnc_privacy"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None

DNC_SOURCES = ("keypad", "office", "import")
DNC_ACTIONS = ("added", "removed", "forgotten")
DNC_KEY_NAME = "phone"  # campaigns.privacy.PHONE_KEY


def _source(name: str) -> sa.Enum:
    return sa.Enum(*DNC_SOURCES, name=name, native_enum=False, create_constraint=True, length=20)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "hash_keys",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hash_keys")),
    )
    key = secrets.token_hex(32)
    now = datetime.now(UTC).replace(tzinfo=None)
    hash_keys = sa.table("hash_keys", sa.column("name"), sa.column("key"), sa.column("created_at"))
    op.bulk_insert(hash_keys, [{"name": DNC_KEY_NAME, "key": key, "created_at": now}])

    old = bind.execute(sa.text("SELECT phone, reason, round_id, created_at FROM do_not_call")).all()
    op.drop_table("do_not_call")
    op.create_table(
        "do_not_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("source", _source("dnc_source"), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_do_not_call_round_id_rounds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_do_not_call")),
        sa.UniqueConstraint("phone", name=op.f("uq_do_not_call_phone")),
        sa.UniqueConstraint("phone_hash", name=op.f("uq_do_not_call_phone_hash")),
    )
    op.create_table(
        "do_not_call_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("phone_masked", sa.String(length=20), nullable=True),
        sa.Column(
            "action",
            sa.Enum(*DNC_ACTIONS, name="dnc_action", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("source", _source("dnc_event_source"), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_do_not_call_events")),
    )
    with op.batch_alter_table("do_not_call_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_do_not_call_events_phone_hash"), ["phone_hash"], unique=False)
    if old:
        entries = sa.table(
            "do_not_call",
            sa.column("phone"), sa.column("phone_hash"), sa.column("source"), sa.column("reason"),
            sa.column("round_id"), sa.column("created_at"),
        )  # fmt: skip
        events = sa.table(
            "do_not_call_events",
            sa.column("phone_hash"), sa.column("phone_masked"), sa.column("action"), sa.column("source"),
            sa.column("reason"), sa.column("round_id"), sa.column("at"),
        )  # fmt: skip
        rows = []
        for phone, reason, round_id, created_at in old:
            digest = hmac.new(bytes.fromhex(key), phone.encode(), hashlib.sha256).hexdigest()
            # Entries made before sources were recorded: a round means the resident pressed 9 in it.
            source = "keypad" if round_id is not None else "office"
            rows.append({"phone": phone, "phone_hash": digest, "source": source, "reason": reason,
                         "round_id": round_id, "created_at": created_at})  # fmt: skip
        op.bulk_insert(entries, rows)
        op.bulk_insert(
            events,
            [{"phone_hash": r["phone_hash"], "phone_masked": mask(r["phone"]), "action": "added", "source": r["source"], "reason": r["reason"],
              "round_id": r["round_id"], "at": r["created_at"]} for r in rows],
        )  # fmt: skip

    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retained_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cadre_id", sa.Integer(), nullable=True))
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("phone", existing_type=sa.String(length=20), nullable=True)
        batch_op.create_foreign_key(batch_op.f("fk_round_targets_cadre_id_cadres"), "cadres", ["cadre_id"], ["id"])
    with op.batch_alter_table("follow_ups", schema=None) as batch_op:
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("follow_ups", schema=None) as batch_op:
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("round_targets", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_round_targets_cadre_id_cadres"), type_="foreignkey")
        batch_op.alter_column("phone", existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column("household_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("cadre_id")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_column("retained_at")
    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.drop_column("retired_at")
    kept = bind.execute(
        sa.text("SELECT phone, reason, round_id, created_at FROM do_not_call WHERE phone IS NOT NULL")
    ).all()
    with op.batch_alter_table("do_not_call_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_do_not_call_events_phone_hash"))
    op.drop_table("do_not_call_events")
    op.drop_table("do_not_call")
    op.create_table(
        "do_not_call",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_do_not_call_round_id_rounds")),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_do_not_call")),
    )
    if kept:
        entries = sa.table(
            "do_not_call", sa.column("phone"), sa.column("reason"), sa.column("round_id"), sa.column("created_at")
        )
        op.bulk_insert(entries, [dict(row._mapping) for row in kept])
    op.drop_table("hash_keys")
