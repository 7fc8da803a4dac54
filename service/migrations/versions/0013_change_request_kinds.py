"""change requests for experiment lifecycle actions and rollbacks

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 10:00:00

``change_requests.experiment`` holds an experiment proposal (``{key, action,
decision, released_variation}``) and ``experiment_id`` the experiment it acts
on (kept when the experiment is deleted: the request then fails to apply);
``rollback_version`` names the flag version a rollback proposal restores.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    with op.batch_alter_table('change_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('experiment', JSON, nullable=True))
        batch_op.add_column(sa.Column('experiment_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rollback_version', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_change_requests_experiment_id', 'experiments', ['experiment_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index('ix_change_requests_experiment_id', ['experiment_id'], unique=False)


def downgrade():
    with op.batch_alter_table('change_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_change_requests_experiment_id')
        batch_op.drop_constraint('fk_change_requests_experiment_id', type_='foreignkey')
        batch_op.drop_column('rollback_version')
        batch_op.drop_column('experiment_id')
        batch_op.drop_column('experiment')
