"""process: approvals per environment, change requests, scheduled changes, guarded rollouts

Revision ID: 0006
Revises: 0008
Create Date: 2026-11-27 10:00:00

``environments.protected`` becomes ``approvals_required`` (an environment
that was protected needs one approval); ``protected`` is derived from it.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0008'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approvals_required', sa.Integer(), nullable=False, server_default='0'))
    op.execute("UPDATE environments SET approvals_required = 1 WHERE protected")
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.drop_column('protected')

    op.create_table('change_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('targeting', JSON, nullable=True),
    sa.Column('patch', JSON, nullable=True),
    sa.Column('rollout', JSON, nullable=True),
    sa.Column('base_version', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('bypass', sa.Boolean(), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('applied_by', sa.String(length=200), nullable=True),
    sa.Column('applied_version', sa.Integer(), nullable=True),
    sa.Column('closed_by', sa.String(length=200), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('change_requests', schema=None) as batch_op:
        batch_op.create_index('ix_change_requests_environment_id', ['environment_id'], unique=False)
        batch_op.create_index('ix_change_requests_state', ['state'], unique=False)
        batch_op.create_index('ix_change_requests_flag_env_state', ['flag_id', 'environment_id', 'state'],
                              unique=False)

    op.create_table('change_request_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('change_request_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['change_request_id'], ['change_requests.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('change_request_id', 'revision', 'reviewer', 'decision')
    )

    op.create_table('scheduled_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('patch', JSON, nullable=True),
    sa.Column('change_request_id', sa.Integer(), nullable=True),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('applied_by', sa.String(length=200), nullable=True),
    sa.Column('applied_version', sa.Integer(), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['change_request_id'], ['change_requests.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('scheduled_changes', schema=None) as batch_op:
        batch_op.create_index('ix_scheduled_changes_due', ['state', 'at'], unique=False)
        batch_op.create_index('ix_scheduled_changes_flag', ['flag_id', 'state'], unique=False)
        batch_op.create_index('ix_scheduled_changes_environment_id', ['environment_id'], unique=False)
        batch_op.create_index('ix_scheduled_changes_change_request_id', ['change_request_id'], unique=False)

    op.create_table('rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('variation', sa.String(length=100), nullable=False),
    sa.Column('from_variation', sa.String(length=100), nullable=False),
    sa.Column('steps', JSON, nullable=False),
    sa.Column('guardrails', JSON, nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('step_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id')
    )
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.create_index('ix_rollouts_due', ['state', 'next_check_at'], unique=False)
        batch_op.create_index('ix_rollouts_flag_id', ['flag_id'], unique=False)
        batch_op.create_index('ix_rollouts_environment_id', ['environment_id'], unique=False)

    op.create_table('rollout_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('percent', sa.Float(), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=False),
    sa.Column('units', JSON, nullable=False),
    sa.Column('metrics', JSON, nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rollout_checks', schema=None) as batch_op:
        batch_op.create_index('ix_rollout_checks_rollout_id', ['rollout_id'], unique=False)


def downgrade():
    op.drop_table('rollout_checks')
    op.drop_table('rollouts')
    op.drop_table('scheduled_changes')
    op.drop_table('change_request_reviews')
    op.drop_table('change_requests')
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('protected', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE environments SET protected = (approvals_required > 0)")
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.drop_column('approvals_required')
