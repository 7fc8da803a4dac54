"""A write never poisons its resource (issue: `exists` without `values` was committed, then every read
answered 500), a response that cannot be built commits nothing, and migration 0005 repairs stored rows.

Through the live gunicorn server where HTTP is involved."""

import importlib
import inspect
import json
import os
from pathlib import Path

import marshmallow as ma
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from service import MIGRATIONS, create_app, schemas
from service.config import normalise_database_url
from service.extensions import db
from service.models import Flag, FlagVersion
from service.sdk_api import config

from .support import audit_count

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
EXISTS = {"op": "exists", "attribute": "plan"}  # docs/evaluation.md allows `values` absent


def make_flag(client, key="checkout"):
    response = client.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": BOOL})
    assert response.status == 201, response.json
    return response


def targeting_with(conditions):
    return {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [],
            "rules": [{"id": "r1", "description": "", "conditions": conditions, "serve": {"variation": "on"}}],
            "fallthrough": {"variation": "off"}}


def test_exists_without_values_round_trips_on_targeting_put_and_patch(live_admin):
    make_flag(live_admin)
    path = "/api/v1/flags/checkout/environments/production"
    body = targeting_with([EXISTS, {"op": "exists", "attribute": "beta", "values": [], "negate": True}])
    put = live_admin.put(path, json=body)
    assert put.status == 200, put.json
    assert put.json == body  # read back exactly as written: no `values` added, none dropped
    assert live_admin.get(path).json == body
    patched = live_admin.patch(path, json={"rules": [{"id": "r2", "conditions": [EXISTS],
                                                      "serve": {"variation": "off"}}]})
    assert patched.status == 200, patched.json
    assert patched.json["rules"][0]["conditions"] == [EXISTS]
    for response in (live_admin.get("/api/v1/flags/checkout"), live_admin.get("/api/v1/flags"),
                     live_admin.get("/api/v1/flags/checkout/history")):
        assert response.status == 200, response.json
    assert live_admin.get("/api/v1/flags/checkout").json["environments"]["production"]["rules"][0][
        "conditions"] == [EXISTS]


def test_exists_without_values_round_trips_on_segments(live_admin):
    created = live_admin.post("/api/v1/segments", json={"key": "paying", "rules": [[EXISTS]]})
    assert created.status == 201, created.json
    assert created.json["rules"] == [[EXISTS]]
    patched = live_admin.patch("/api/v1/segments/paying", json={"rules": [[EXISTS], [{"op": "exists",
                                                                                       "attribute": "x"}]]})
    assert patched.status == 200, patched.json
    for response in (live_admin.get("/api/v1/segments/paying"), live_admin.get("/api/v1/segments")):
        assert response.status == 200, response.json
    assert live_admin.get("/api/v1/segments/paying").json["rules"][1] == [{"op": "exists", "attribute": "x"}]


def test_a_response_that_fails_to_serialise_commits_nothing(live_admin):
    """The transaction commits after the response is built: a 500 while serialising leaves no write."""
    make_flag(live_admin)
    # Poison the stored flag behind the API's back: a tags value the schema cannot dump.
    db.session.execute(sa.update(Flag).where(Flag.key == "checkout").values(tags=5))
    db.session.commit()
    audits = audit_count()
    response = live_admin.patch("/api/v1/flags/checkout", json={"name": "renamed"})
    assert response.status == 500 and response.json["error"]["code"] == "internal_error"
    db.session.rollback()
    flag = db.session.scalars(sa.select(Flag).where(Flag.key == "checkout")).one()
    assert (flag.name, flag.version) == ("checkout", 1)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FlagVersion)) == 1
    assert audit_count() == audits


def _schema_classes():
    for module_info in sorted(Path(schemas.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"service.schemas.{module_info.stem}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ma.Schema) and cls.__module__.startswith("service."):
                yield cls
    for _, cls in inspect.getmembers(config, inspect.isclass):
        if issubclass(cls, ma.Schema) and cls.__module__.startswith("service."):
            yield cls


def test_no_response_schema_reads_dict_methods():
    """Dumping a dict that lacks a field leaves the field out: no schema reads `dict.values`, `items`, ..."""
    checked = 0
    for cls in _schema_classes():
        schema = cls()
        plain = [name for name, field in schema.fields.items()
                 if not isinstance(field, ma.fields.Method | ma.fields.Function)]
        dumped = cls(only=plain).dump({}) if plain else {}
        assert dumped == {}, (cls.__name__, dumped)
        for trap in ("values", "items", "keys", "get", "copy", "pop", "update"):
            if trap in schema.fields and trap in plain:
                assert cls(only=[trap]).dump({}) == {}, (cls.__name__, trap)
        checked += 1
    assert checked > 30


# ---------------------------------------------------------------- migration 0005

def _migration_revisions():
    """(revision before, this revision), found by file name so re-chaining the ids keeps the test valid."""
    script = ScriptDirectory(os.path.join(MIGRATIONS))
    for revision in script.walk_revisions():
        if Path(revision.path).name.endswith("_hardening.py"):
            return revision.down_revision, revision.revision
    raise AssertionError("migration *_hardening.py not found")


@pytest.fixture
def scratch_database(database_url, tmp_path):
    """An empty database of the same kind as the test database: a file for SQLite, a schema for PostgreSQL."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'migration.db'}"
        return
    url = normalise_database_url(database_url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA IF EXISTS pitcrew_migration_test CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA pitcrew_migration_test"))
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3Dpitcrew_migration_test"
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA IF EXISTS pitcrew_migration_test CASCADE"))
    engine.dispose()


def test_migration_repairs_stored_conditions_and_scopes_event_ids(scratch_database):
    before, this = _migration_revisions()
    app = create_app({"SQLALCHEMY_DATABASE_URI": scratch_database})
    with app.app_context():
        upgrade(revision=before)
        poisoned = targeting_with([EXISTS, {"op": "in", "attribute": "plan", "values": ["pro"]}])
        snapshot = {"key": "f", "environments": {"production": poisoned}}
        with db.engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO flags (key, name, description, kind, variations, tags, temporary, archived, version,"
                " created_at, updated_at) VALUES ('f', 'f', '', 'boolean', :v, '[]', true, false, 1,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"v": json.dumps(BOOL)})
            flag_id = connection.execute(sa.text("SELECT id FROM flags WHERE key = 'f'")).scalar()
            env_id = connection.execute(sa.text("SELECT id FROM environments WHERE key = 'production'")).scalar()
            connection.execute(sa.text("INSERT INTO flag_targeting (flag_id, environment_id, targeting)"
                                       " VALUES (:f, :e, :t)"), {"f": flag_id, "e": env_id, "t": json.dumps(poisoned)})
            connection.execute(sa.text(
                "INSERT INTO flag_versions (flag_id, version, action, actor, created_at, snapshot)"
                " VALUES (:f, 1, 'create', 't', CURRENT_TIMESTAMP, :s)"), {"f": flag_id, "s": json.dumps(snapshot)})
            connection.execute(sa.text(
                "INSERT INTO segments (key, name, description, tags, included, excluded, rules, version, created_at,"
                " updated_at) VALUES ('s', 's', '', '[]', '[]', '[]', :r, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"r": json.dumps([[EXISTS]])})
        db.session.remove()
        upgrade(revision=this)

        repaired = {"op": "exists", "attribute": "plan", "values": []}
        with db.engine.connect() as connection:
            targeting = connection.execute(sa.select(sa.column("targeting", sa.JSON))
                                           .select_from(sa.table("flag_targeting"))).scalar()
            stored_snapshot = connection.execute(sa.select(sa.column("snapshot", sa.JSON))
                                                 .select_from(sa.table("flag_versions"))).scalar()
            rules = connection.execute(sa.select(sa.column("rules", sa.JSON)).select_from(sa.table("segments"))).scalar()
        if isinstance(targeting, str):  # SQLite returns the JSON text through a bare column
            targeting, stored_snapshot, rules = (json.loads(v) for v in (targeting, stored_snapshot, rules))
        assert targeting["rules"][0]["conditions"] == [repaired, poisoned["rules"][0]["conditions"][1]]
        assert stored_snapshot["environments"]["production"]["rules"][0]["conditions"][0] == repaired
        assert rules == [[repaired]]

        # Event ids are unique per environment now: the same id in two environments is two events.
        event_id = "0b7c3b9e-5d1c-4c5e-9d2f-8a6b1e0c7f11"
        with db.engine.begin() as connection:
            for environment_id in (1, 2):
                connection.execute(sa.text(
                    "INSERT INTO events (client_id, environment_id, type, ts, unit, unit_type)"
                    " VALUES (:id, :env, 'track', 1, 'u', 'id')"),
                    {"id": event_id.replace("-", "") if "sqlite" in scratch_database else event_id,
                     "env": environment_id})
            with pytest.raises(sa.exc.IntegrityError), connection.begin_nested():
                connection.execute(sa.text(
                    "INSERT INTO events (client_id, environment_id, type, ts, unit, unit_type)"
                    " VALUES (:id, 1, 'track', 1, 'u', 'id')"),
                    {"id": event_id.replace("-", "") if "sqlite" in scratch_database else event_id})
        db.session.remove()
        downgrade(revision=before)  # reversible: one row per id is kept
        with db.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM events")).scalar() == 1
        db.session.remove()
        upgrade(revision=this)
        db.session.remove()
    with app.app_context():
        db.engine.dispose()
