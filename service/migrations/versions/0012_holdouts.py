"""holdouts: a share of an environment's units kept on the off variation of the flags that name it

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-04 10:00:00

Flags name a holdout in their targeting JSON (``holdout``); no column changes there.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('holdouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('basis_points', sa.Integer(), nullable=False),
    sa.Column('unit', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('holdouts', schema=None) as batch_op:
        batch_op.create_index('ix_holdouts_environment_id', ['environment_id'], unique=False)


def downgrade():
    with op.batch_alter_table('holdouts', schema=None) as batch_op:
        batch_op.drop_index('ix_holdouts_environment_id')
    op.drop_table('holdouts')
