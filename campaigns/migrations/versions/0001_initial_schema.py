"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 13:58:16.116747
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('cadres',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cadres')),
    sa.UniqueConstraint('name', 'phone', name=op.f('uq_cadres_name_phone'))
    )
    op.create_table('questionnaire_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=50), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_questionnaire_versions')),
    sa.UniqueConstraint('key', 'checksum', name=op.f('uq_questionnaire_versions_key_checksum'))
    )
    op.create_table('villages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_villages')),
    sa.UniqueConstraint('name', name=op.f('uq_villages_name'))
    )
    op.create_table('households',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('village_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=True),
    sa.Column('phone_status', sa.Enum('ok', 'invalid', 'blocked', name='phone_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('phone_status_reason', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadres.id'], name=op.f('fk_households_cadre_id_cadres')),
    sa.ForeignKeyConstraint(['village_id'], ['villages.id'], name=op.f('fk_households_village_id_villages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_households')),
    sa.UniqueConstraint('phone', name=op.f('uq_households_phone'))
    )
    with op.batch_alter_table('households', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_households_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_households_village_id'), ['village_id'], unique=False)

    op.create_table('rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('questionnaire_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'running', 'paused', 'completed', 'cancelled', name='round_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('sample', sa.String(length=50), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('windows', sa.JSON(), nullable=False),
    sa.Column('blocked_dates', sa.JSON(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('cps', sa.Float(), nullable=False),
    sa.Column('max_concurrent', sa.Integer(), nullable=False),
    sa.Column('retry', sa.JSON(), nullable=False),
    sa.Column('starts_at', sa.DateTime(), nullable=True),
    sa.Column('ends_at', sa.DateTime(), nullable=True),
    sa.Column('exclude_unsure', sa.Boolean(), nullable=False),
    sa.Column('rate_targets', sa.JSON(), nullable=False),
    sa.Column('machine_detection', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('launched_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['questionnaire_id'], ['questionnaire_versions.id'], name=op.f('fk_rounds_questionnaire_id_questionnaire_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rounds'))
    )
    op.create_table('do_not_call',
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_do_not_call_round_id_rounds')),
    sa.PrimaryKeyConstraint('phone', name=op.f('pk_do_not_call'))
    )
    op.create_table('round_targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('state', sa.Enum('pending', 'dialing', 'in_call', 'completed', 'refused', 'ineligible', 'opted_out', 'unreachable', 'invalid', 'cancelled', name='target_state', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('last_outcome', sa.String(length=30), nullable=True),
    sa.Column('final_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['household_id'], ['households.id'], name=op.f('fk_round_targets_household_id_households')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_round_targets_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_targets')),
    sa.UniqueConstraint('round_id', 'household_id', name=op.f('uq_round_targets_round_id_household_id'))
    )
    with op.batch_alter_table('round_targets', schema=None) as batch_op:
        batch_op.create_index('ix_round_targets_due', ['round_id', 'next_attempt_at'], unique=False, sqlite_where=sa.text("state = 'pending'"), postgresql_where=sa.text("state = 'pending'"))
        batch_op.create_index(batch_op.f('ix_round_targets_household_id'), ['household_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_round_targets_round_id'), ['round_id'], unique=False)

    op.create_table('call_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('direction', sa.Enum('outbound', 'inbound', name='call_direction', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=True),
    sa.Column('status', sa.Enum('claimed', 'queued', 'initiated', 'ringing', 'in-progress', 'completed', 'busy', 'no-answer', 'failed', 'canceled', 'not-placed', name='call_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('last_sequence_number', sa.Integer(), nullable=False),
    sa.Column('answered_by', sa.String(length=30), nullable=True),
    sa.Column('error_code', sa.String(length=20), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('duration_seconds', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('placed_at', sa.DateTime(), nullable=True),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_call_attempts_round_id_rounds')),
    sa.ForeignKeyConstraint(['target_id'], ['round_targets.id'], name=op.f('fk_call_attempts_target_id_round_targets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_attempts')),
    sa.UniqueConstraint('call_sid', name=op.f('uq_call_attempts_call_sid')),
    sa.UniqueConstraint('target_id', 'number', name=op.f('uq_call_attempts_target_id_number'))
    )
    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_attempts_round_id'), ['round_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_call_attempts_target_id'), ['target_id'], unique=False)

    op.create_table('responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('in_progress', 'completed', 'refused', 'ineligible', 'opted_out', name='response_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('current_step', sa.String(length=50), nullable=True),
    sa.Column('current_try', sa.Integer(), nullable=False),
    sa.Column('prompt_seq', sa.Integer(), nullable=False),
    sa.Column('prompted_at', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_responses_round_id_rounds')),
    sa.ForeignKeyConstraint(['target_id'], ['round_targets.id'], name=op.f('fk_responses_target_id_round_targets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_responses')),
    sa.UniqueConstraint('target_id', name=op.f('uq_responses_target_id'))
    )
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_responses_round_id'), ['round_id'], unique=False)

    op.create_table('answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('question', sa.String(length=50), nullable=False),
    sa.Column('digit', sa.String(length=5), nullable=False),
    sa.Column('attempt_id', sa.Integer(), nullable=True),
    sa.Column('tries', sa.Integer(), nullable=False),
    sa.Column('invalid_keys', sa.Integer(), nullable=False),
    sa.Column('silences', sa.Integer(), nullable=False),
    sa.Column('seconds_to_answer', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['call_attempts.id'], name=op.f('fk_answers_attempt_id_call_attempts')),
    sa.ForeignKeyConstraint(['response_id'], ['responses.id'], name=op.f('fk_answers_response_id_responses')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_answers_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answers')),
    sa.UniqueConstraint('response_id', 'question', name=op.f('uq_answers_response_id_question'))
    )
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_answers_round_id'), ['round_id'], unique=False)

    op.create_table('follow_ups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=True),
    sa.Column('negatives', sa.JSON(), nullable=False),
    sa.Column('concern', sa.String(length=5), nullable=True),
    sa.Column('status', sa.Enum('pending', 'visited', 'resolved', 'unreachable', name='follow_up_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadres.id'], name=op.f('fk_follow_ups_cadre_id_cadres')),
    sa.ForeignKeyConstraint(['household_id'], ['households.id'], name=op.f('fk_follow_ups_household_id_households')),
    sa.ForeignKeyConstraint(['response_id'], ['responses.id'], name=op.f('fk_follow_ups_response_id_responses')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_follow_ups_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_ups')),
    sa.UniqueConstraint('response_id', name=op.f('uq_follow_ups_response_id'))
    )
    with op.batch_alter_table('follow_ups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_follow_ups_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_ups_household_id'), ['household_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_ups_round_id'), ['round_id'], unique=False)

    op.create_table('key_presses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('attempt_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=50), nullable=False),
    sa.Column('try_number', sa.Integer(), nullable=False),
    sa.Column('digits', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['call_attempts.id'], name=op.f('fk_key_presses_attempt_id_call_attempts')),
    sa.ForeignKeyConstraint(['response_id'], ['responses.id'], name=op.f('fk_key_presses_response_id_responses')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_presses')),
    sa.UniqueConstraint('response_id', 'seq', name=op.f('uq_key_presses_response_id_seq'))
    )
    with op.batch_alter_table('key_presses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_presses_attempt_id'), ['attempt_id'], unique=False)

    op.create_table('answer_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('answer_id', sa.Integer(), nullable=False),
    sa.Column('old_digit', sa.String(length=5), nullable=False),
    sa.Column('new_digit', sa.String(length=5), nullable=False),
    sa.Column('attempt_id', sa.Integer(), nullable=True),
    sa.Column('changed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['answer_id'], ['answers.id'], name=op.f('fk_answer_changes_answer_id_answers')),
    sa.ForeignKeyConstraint(['attempt_id'], ['call_attempts.id'], name=op.f('fk_answer_changes_attempt_id_call_attempts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_changes'))
    )
    with op.batch_alter_table('answer_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_answer_changes_answer_id'), ['answer_id'], unique=False)

    op.create_table('follow_up_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('follow_up_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'visited', 'resolved', 'unreachable', name='follow_up_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['follow_up_id'], ['follow_ups.id'], name=op.f('fk_follow_up_events_follow_up_id_follow_ups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_up_events'))
    )
    with op.batch_alter_table('follow_up_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_follow_up_events_follow_up_id'), ['follow_up_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('follow_up_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_follow_up_events_follow_up_id'))

    op.drop_table('follow_up_events')
    with op.batch_alter_table('answer_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_answer_changes_answer_id'))

    op.drop_table('answer_changes')
    with op.batch_alter_table('key_presses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_presses_attempt_id'))

    op.drop_table('key_presses')
    with op.batch_alter_table('follow_ups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_follow_ups_round_id'))
        batch_op.drop_index(batch_op.f('ix_follow_ups_household_id'))
        batch_op.drop_index(batch_op.f('ix_follow_ups_cadre_id'))

    op.drop_table('follow_ups')
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_answers_round_id'))

    op.drop_table('answers')
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_responses_round_id'))

    op.drop_table('responses')
    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_attempts_target_id'))
        batch_op.drop_index(batch_op.f('ix_call_attempts_round_id'))

    op.drop_table('call_attempts')
    with op.batch_alter_table('round_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_round_targets_round_id'))
        batch_op.drop_index(batch_op.f('ix_round_targets_household_id'))
        batch_op.drop_index('ix_round_targets_due', sqlite_where=sa.text("state = 'pending'"), postgresql_where=sa.text("state = 'pending'"))

    op.drop_table('round_targets')
    op.drop_table('do_not_call')
    op.drop_table('rounds')
    with op.batch_alter_table('households', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_households_village_id'))
        batch_op.drop_index(batch_op.f('ix_households_cadre_id'))

    op.drop_table('households')
    op.drop_table('villages')
    op.drop_table('questionnaire_versions')
    op.drop_table('cadres')

