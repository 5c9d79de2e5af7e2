"""Webhook activity: when sanlv last heard of each call.

``call_attempts.last_heard_at`` is set by every webhook about the call (voice, key press, status callback)
and by the sweeper whenever the provider says the call is still live. The sweeper asks the provider about a
call that has been quiet for longer than its questionnaire's longest silence allows, so a call whose final
status callback never arrived (the web server restarted) is settled in about two minutes. The partial index
covers the calls that are not final, which is all the sweeper ever looks at.

Revision ID: 0005_webhook_activity
Revises: 0004_dnc_privacy
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_webhook_activity"
down_revision = "0004_dnc_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_attempts") as batch:
        batch.add_column(sa.Column("last_heard_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_attempts") as batch:
        batch.drop_column("last_heard_at")
