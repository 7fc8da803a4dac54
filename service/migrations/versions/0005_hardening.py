"""hardening: event idempotency per environment; repair stored exists conditions

Revision ID: 0005
Revises: 0006
Create Date: 2026-11-27 10:00:00

1. ``events``: the primary key becomes ``(environment_id, client_id)``, so
   an event id is unique within its environment only (an id first sent to
   development no longer makes production's event a duplicate).
2. Stored ``exists`` conditions written without ``values`` get
   ``"values": []`` (the same meaning: exists takes no values). Before this
   release such a write was committed and then answered 500, and every read
   of the flag or segment failed after it: nobody ever read these rows back.
   The repair makes them readable by any release, this one or an older one
   after a rollback. Touched: flag targeting, the targeting inside flag
   version snapshots, and segment rules. New writes keep what they were sent.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0006'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
BATCH = 500


def upgrade():
    _events_primary_key(["environment_id", "client_id"])
    _repair("flag_targeting", "targeting", _repair_targeting)
    _repair("flag_versions", "snapshot", _repair_snapshot)
    _repair("segments", "rules", _repair_segment_rules)


def downgrade():
    # A global id again: keep one row of each id used in several environments.
    bind = op.get_bind()
    bind.execute(sa.text(
        "DELETE FROM events WHERE EXISTS (SELECT 1 FROM events AS other "
        "WHERE other.client_id = events.client_id AND other.environment_id < events.environment_id)"))
    _events_primary_key(["client_id"])
    # The repaired conditions stay as they are: "values": [] means what an absent list meant.


def _events_primary_key(columns):
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite cannot alter a primary key: batch mode copies the table into
        # this exact structure (the partial indexes included).
        with op.batch_alter_table("events", recreate="always", copy_from=_events_table(columns)):
            pass
    else:
        op.drop_constraint("events_pkey", "events", type_="primary")
        op.create_primary_key("events_pkey", "events", columns)


def _events_table(primary_key):
    """The events table as revision 0004 made it, with ``primary_key``."""
    return sa.Table(
        "events", sa.MetaData(),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("unit", sa.String(length=256), nullable=False),
        sa.Column("unit_type", sa.String(length=100), nullable=False),
        sa.Column("experiment", sa.String(length=100), nullable=True),
        sa.Column("variation", sa.String(length=100), nullable=True),
        sa.Column("event", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint(*primary_key, name="events_pkey"),
        sa.Index("ix_events_exposures", "environment_id", "experiment", "ts",
                 sqlite_where=sa.text("type = 'exposure'")),
        sa.Index("ix_events_tracks", "environment_id", "event", "ts", sqlite_where=sa.text("type = 'track'")),
    )


# ------------------------------------------------------------------ data repair

def _repair(table_name, column_name, repair):
    table = sa.table(table_name, sa.column("id", sa.Integer), sa.column(column_name, JSON))
    column = table.c[column_name]
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.select(table.c.id, column).where(table.c.id > last)
                            .order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row_id, value in rows:
            if repair(value):
                bind.execute(sa.update(table).where(table.c.id == row_id).values({column_name: value}))
        last = rows[-1][0]


def _repair_conditions(conditions) -> bool:
    changed = False
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("op") == "exists" and "values" not in condition:
            condition["values"] = []
            changed = True
    return changed


def _repair_targeting(targeting) -> bool:
    changed = False
    rules = targeting.get("rules") if isinstance(targeting, dict) else None
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict):
            changed |= _repair_conditions(rule.get("conditions"))
    return changed


def _repair_snapshot(snapshot) -> bool:
    environments = snapshot.get("environments") if isinstance(snapshot, dict) else None
    changed = False
    for targeting in environments.values() if isinstance(environments, dict) else []:
        changed |= _repair_targeting(targeting)
    return changed


def _repair_segment_rules(rules) -> bool:
    changed = False
    for rule in rules if isinstance(rules, list) else []:
        changed |= _repair_conditions(rule)
    return changed
