"""console sessions kept on the server

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 15:00:00

``console_sessions``: one row per console sign-in, keyed by the SHA-256 of
the random id its cookie carries, so signing out ends the session for every
copy of the cookie. Sessions signed in before this revision (their cookies
carry no such id) end at their next request: sign in again.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'console_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('session_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], name='fk_console_sessions_token_id', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_console_sessions'),
        sa.UniqueConstraint('session_hash', name='uq_console_sessions_session_hash'),
    )
    op.create_index('ix_console_sessions_token_id', 'console_sessions', ['token_id'])


def downgrade():
    op.drop_index('ix_console_sessions_token_id', table_name='console_sessions')
    op.drop_table('console_sessions')
