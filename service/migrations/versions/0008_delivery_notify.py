"""delivery notifications: NOTIFY pitcrew_delivery on ruleset, environment and SDK key changes

On PostgreSQL, statement triggers send ``NOTIFY pitcrew_delivery`` in the
transaction of every change that an SDK can see: a ruleset version bump, an
environment created or deleted, an SDK key created, revoked or deleted. Each
service process LISTENs and refreshes its in-memory state at once (see
docs/delivery.md). Triggers, not application code, so every write path is
covered, whoever adds it. SQLite has no NOTIFY: processes poll instead, and
this migration does nothing there.

Revision ID: 0008
Revises: 0004
"""
from alembic import op

revision = '0008'
down_revision = '0004'
branch_labels = None
depends_on = None

CHANNEL = "pitcrew_delivery"


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION pitcrew_notify_delivery() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER pitcrew_delivery_environments
        AFTER INSERT OR DELETE OR UPDATE OF ruleset_version ON environments
        FOR EACH STATEMENT EXECUTE FUNCTION pitcrew_notify_delivery()
    """)
    op.execute("""
        CREATE TRIGGER pitcrew_delivery_environments_truncate
        AFTER TRUNCATE ON environments
        FOR EACH STATEMENT EXECUTE FUNCTION pitcrew_notify_delivery()
    """)
    op.execute("""
        CREATE TRIGGER pitcrew_delivery_sdk_keys
        AFTER INSERT OR DELETE OR UPDATE OF revoked_at ON sdk_keys
        FOR EACH STATEMENT EXECUTE FUNCTION pitcrew_notify_delivery()
    """)
    op.execute("""
        CREATE TRIGGER pitcrew_delivery_sdk_keys_truncate
        AFTER TRUNCATE ON sdk_keys
        FOR EACH STATEMENT EXECUTE FUNCTION pitcrew_notify_delivery()
    """)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table in (("pitcrew_delivery_environments", "environments"),
                        ("pitcrew_delivery_environments_truncate", "environments"),
                        ("pitcrew_delivery_sdk_keys", "sdk_keys"),
                        ("pitcrew_delivery_sdk_keys_truncate", "sdk_keys")):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS pitcrew_notify_delivery()")
