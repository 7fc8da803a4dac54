"""webhooks and their outbox; flag types, usage and targeting changes (lifecycle, insights)

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-01 10:00:00

Backfills, so lifecycle stages and insights cover history from the start:

* ``targeting_changes`` by replaying every flag's version snapshots: one
  row per version whose targeting in an environment differs from the
  version before (what it serves is judged by service/domain/serving.py);
* ``flag_usage`` from ``flag_evaluations``: first and last evaluation =
  the first and last time a count arrived.
Existing flags get type ``release``.
"""
import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from service.domain.serving import is_full_rollout, single_variation

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0005'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
TS = sa.DateTime(timezone=True)
BATCH = 500


def upgrade():
    with op.batch_alter_table('flags', schema=None) as batch_op:
        batch_op.add_column(sa.Column('type', sa.String(length=20), nullable=False, server_default='release'))

    op.create_table('targeting_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=50), nullable=False),
    sa.Column('changed_at', TS, nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('serves', sa.String(length=100), nullable=True),
    sa.Column('full_rollout', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_targeting_changes_env_time', 'targeting_changes', ['environment_id', 'changed_at'])
    op.create_index('ix_targeting_changes_flag_env', 'targeting_changes', ['flag_id', 'environment_id', 'changed_at'])

    op.create_table('flag_stale_notices',
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('announced_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('flag_id')
    )

    op.create_table('flag_usage',
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('flag', sa.String(length=100), nullable=False),
    sa.Column('first_evaluated_at', TS, nullable=False),
    sa.Column('last_evaluated_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('environment_id', 'flag')
    )
    op.create_index('ix_flag_usage_flag', 'flag_usage', ['flag'])

    op.create_table('evaluation_batches',
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('batch', sa.String(length=100), nullable=False),
    sa.Column('received_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('environment_id', 'batch')
    )
    op.create_index('ix_evaluation_batches_received_at', 'evaluation_batches', ['received_at'])

    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('events', JSON, nullable=False),
    sa.Column('environments', JSON, nullable=True),
    sa.Column('format', sa.String(length=20), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('previous_secret', sa.Text(), nullable=True),
    sa.Column('previous_secret_expires_at', TS, nullable=True),
    sa.Column('failing_since', TS, nullable=True),
    sa.Column('disabled_at', TS, nullable=True),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('environment', sa.String(length=100), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', TS, nullable=False),
    sa.Column('lease_until', TS, nullable=True),
    sa.Column('manual', sa.Boolean(), nullable=False),
    sa.Column('last_attempt_at', TS, nullable=True),
    sa.Column('succeeded_at', TS, nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('webhook_id', 'message_id')
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['state', 'next_attempt_at'])
    op.create_index('ix_webhook_deliveries_webhook', 'webhook_deliveries', ['webhook_id', 'id'])

    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('attempted_at', TS, nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('manual', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_attempts_delivery', 'webhook_attempts', ['delivery_id', 'id'])

    _backfill_targeting_changes()
    _backfill_usage()


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _backfill_targeting_changes():
    bind = op.get_bind()
    environments = dict(bind.execute(sa.text("SELECT key, id FROM environments")).all())
    versions = sa.table('flag_versions', sa.column('id', sa.Integer), sa.column('flag_id', sa.Integer),
                        sa.column('version', sa.Integer), sa.column('action', sa.String),
                        sa.column('created_at', TS), sa.column('snapshot', JSON))
    changes = sa.table('targeting_changes', sa.column('flag_id', sa.Integer),
                       sa.column('environment_id', sa.Integer), sa.column('version', sa.Integer),
                       sa.column('action', sa.String), sa.column('changed_at', TS), sa.column('enabled', sa.Boolean),
                       sa.column('serves', sa.String), sa.column('full_rollout', sa.Boolean))
    rows, previous, last_id = [], {}, 0
    while True:
        page = bind.execute(sa.select(versions).where(versions.c.id > last_id).order_by(versions.c.id)
                            .limit(BATCH)).all()
        if not page:
            break
        for v in page:
            last_id = v.id
            targeting = (_json(v.snapshot) or {}).get("environments") or {}
            before = previous.get(v.flag_id)
            previous[v.flag_id] = targeting
            if before is None:
                continue
            for env_key, new in targeting.items():
                if env_key in environments and env_key in before and before[env_key] != new:
                    rows.append({"flag_id": v.flag_id, "environment_id": environments[env_key], "version": v.version,
                                 "action": v.action, "changed_at": v.created_at, "enabled": bool(new.get("enabled")),
                                 "serves": single_variation(new), "full_rollout": is_full_rollout(new)})
        if len(rows) >= BATCH:
            op.bulk_insert(changes, rows)
            rows = []
    if rows:
        op.bulk_insert(changes, rows)


def _backfill_usage():
    op.execute("INSERT INTO flag_usage (environment_id, flag, first_evaluated_at, last_evaluated_at) "
               "SELECT environment_id, flag, MIN(last_seen_at), MAX(last_seen_at) FROM flag_evaluations "
               "GROUP BY environment_id, flag")


def downgrade():
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhooks')
    op.drop_table('evaluation_batches')
    op.drop_table('flag_usage')
    op.drop_table('flag_stale_notices')
    op.drop_table('targeting_changes')
    with op.batch_alter_table('flags', schema=None) as batch_op:
        batch_op.drop_column('type')
