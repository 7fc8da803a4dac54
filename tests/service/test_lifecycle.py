"""Flag lifecycle on a seeded history: evaluation summaries at known (simulated) times, counted
once per batch; targeting changes at known times; each stage where docs/lifecycle.md puts it;
``flag.stale`` announced once; the ``?lifecycle=`` filter; remote evaluations counted."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service import ingest
from service.domain import Actor, lifecycle
from service.domain import announce as announcements
from service.domain import environments as environment_domain
from service.domain import flags as flag_domain
from service.extensions import db
from service.models import EvaluationBatch, Flag, FlagEvaluation, FlagUsage, TargetingChange

from .support import make_sdk_key

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
ACTOR = Actor("tests")
T0 = datetime.now(UTC).replace(microsecond=0)
HALF = {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}


def create(key, **fields):
    flag_domain.create(ACTOR, {"key": key, "kind": "boolean", "variations": BOOL, **fields})


def serve(key, env, fallthrough, enabled=True, **extra):
    flag_domain.put_targeting(ACTOR, key, env, {"enabled": enabled, "off_variation": "off",
                                                "fallthrough": fallthrough, **extra})


def evaluated(flags, day: float, env="production", batch=None):
    """An SDK summary received ``day`` days after T0, for ``flags``."""
    now = T0 + timedelta(days=day)
    body = {"evaluations": [{"flag": f, "variation": "on", "count": 3, "end": now.isoformat()} for f in flags]}
    if batch:
        body["batch"] = batch
    ingest.ingest(body, environment_domain.get(env).id, now=now)


def set_changed(key, env, moment):
    """Move a flag's targeting changes in ``env`` to ``moment`` (changes at known times)."""
    flag_id = db.session.scalar(sa.select(Flag.id).where(Flag.key == key))
    env_id = environment_domain.get(env).id
    db.session.execute(sa.update(TargetingChange).where(TargetingChange.flag_id == flag_id,
                                                        TargetingChange.environment_id == env_id)
                       .values(changed_at=moment))
    db.session.commit()


def stages(day: float) -> dict[str, str]:
    flags = db.session.scalars(sa.select(Flag).where(Flag.archived.is_(False))).all()
    computed = lifecycle.compute(flags, T0 + timedelta(days=day))
    return {f.key: computed[f.id].stage for f in flags}


@pytest.fixture
def seeded():
    """Each flag's history (days after T0):

    never      release, temporary, never evaluated
    busy       rollout 50/50 in production (serves two), evaluated days 1..30 every day
    launched   serves 'on' to everyone in production since day 0, evaluated every day
    quiet      rollout 50/50, evaluated on day 1 only
    done       kill-switch type (no lifetime), temporary, serves 'on' to everyone, evaluated on day 1 only
    needed     as 'done', but a prerequisite of 'user'
    permanent  as 'done', but not temporary
    ops        operational (7 days), temporary, evaluated every day
    """
    for key in ("never", "busy", "launched", "quiet", "ops"):
        create(key, type="operational" if key == "ops" else "release")
    for key in ("done", "needed", "permanent"):
        create(key, type="kill-switch", temporary=key != "permanent")
    create("user", type="permission", temporary=False)
    for key in ("busy", "quiet"):
        serve(key, "production", HALF)
    for key in ("launched", "done", "needed", "permanent"):
        serve(key, "production", {"variation": "on"})
    serve("user", "production", {"variation": "on"}, prerequisites=[{"flag": "needed", "variation": "on"}])
    for key in ("busy", "quiet", "launched", "done", "needed", "permanent", "user"):
        set_changed(key, "production", T0)
    evaluated(["quiet", "done", "needed", "permanent"], 1)
    for day in range(1, 31):
        evaluated(["busy", "launched", "ops", "user"], day)


def test_each_stage_appears_where_the_definition_says(seeded):
    active = dict.fromkeys(("busy", "launched", "quiet", "done", "needed", "permanent", "ops", "user"), "active")
    assert stages(0.5) == {**active, "never": "new"}
    # Day 7.5: production unchanged for 7 days (a flag never turned on counts as serving its off
    # variation since it was created) -> launched; but 'new' comes first; 'user' has a
    # prerequisite (it may serve 'off'); 'ops' is older than its 7 days.
    assert stages(7.5) == {"never": "new", "busy": "active", "launched": "launched", "quiet": "active",
                           "done": "launched", "needed": "launched", "permanent": "launched",
                           "ops": "potentially_stale", "user": "active"}
    # Day 8.5: no evaluation since day 1 -> inactive (before launched in precedence).
    assert stages(8.5) == {"never": "new", "busy": "active", "launched": "launched", "quiet": "inactive",
                           "done": "inactive", "needed": "inactive", "permanent": "inactive",
                           "ops": "potentially_stale", "user": "active"}
    # Day 37.5: launched since day 7 for 30.5 days -> ready to archive, unless a prerequisite
    # ('needed') or permanent; 'quiet' (inactive since day 8) not yet; 'user' is permanent;
    # 'busy' was last evaluated on day 30.
    assert stages(37.5) == {"never": "ready_to_archive", "busy": "inactive", "launched": "ready_to_archive",
                            "quiet": "inactive", "done": "ready_to_archive", "needed": "inactive",
                            "permanent": "inactive", "ops": "ready_to_archive", "user": "inactive"}
    # Day 38.5: quiet has been inactive for 30.5 days.
    assert stages(38.5)["quiet"] == "ready_to_archive"
    # Day 40.5: release flags are older than their 40 days: 'busy' is potentially stale (the others
    # are ready to archive, which comes first).
    assert stages(40.5) == {"never": "ready_to_archive", "busy": "potentially_stale",
                            "launched": "ready_to_archive", "quiet": "ready_to_archive",
                            "done": "ready_to_archive", "needed": "inactive", "permanent": "inactive",
                            "ops": "ready_to_archive", "user": "inactive"}
    # Archiving 'user' frees 'needed' (no live flag needs it any more).
    flag_domain.archive(ACTOR, "user")
    assert stages(40.5)["needed"] == "ready_to_archive"


def test_reasons_name_the_evidence(seeded):
    flags = {f.key: f for f in db.session.scalars(sa.select(Flag))}
    result = lifecycle.compute(list(flags.values()), T0 + timedelta(days=40.5))
    assert result[flags["never"].id].conditions["potentially_stale"] == (
        "Temporary release flag created 40 days ago (expected lifetime 40 days).")
    assert result[flags["done"].id].reason.startswith(
        "Launched for 33 days, temporary, and no flag needs it: serves 'on' to everyone in production")
    assert "No evaluations in any environment for 39 days" in result[flags["quiet"].id].conditions["inactive"]
    assert set(result[flags["launched"].id].conditions) == {"launched", "inactive", "potentially_stale",
                                                            "ready_to_archive"}
    assert result[flags["busy"].id].last_evaluated_at == T0 + timedelta(days=30)


def test_flag_stale_is_announced_once_per_entry(seeded):
    seen = []

    def listen(type, data, env):
        if type == "flag.stale":
            seen.append(data["flag"]["key"])

    announcements.add_listener(listen)
    try:
        assert lifecycle.announce_stale(T0 + timedelta(days=8)) == 1
        assert lifecycle.announce_stale(T0 + timedelta(days=9)) == 0  # once
        assert seen == ["ops"]
        flag_domain.update(ACTOR, "ops", {"temporary": False})
        assert lifecycle.announce_stale(T0 + timedelta(days=10)) == 0  # no longer stale: notice withdrawn
        flag_domain.update(ACTOR, "ops", {"temporary": True})
        assert lifecycle.announce_stale(T0 + timedelta(days=11)) == 1  # entered again
        assert lifecycle.announce_stale(T0 + timedelta(days=41)) == 4  # the four temporary release flags
        assert sorted(seen) == ["busy", "launched", "never", "ops", "ops", "quiet"]
    finally:
        announcements.remove_listener(listen)


def test_lifecycle_filter_and_fields_in_the_api(viewer):
    create("fresh")
    create("used")
    create("gone")
    flag_domain.archive(ACTOR, "gone")
    ingest.ingest({"evaluations": [{"flag": "used", "variation": "on", "count": 1}]},
                  environment_domain.get("staging").id)
    assert [f["key"] for f in viewer.get("/api/v1/flags?lifecycle=new").json["items"]] == ["fresh"]
    assert [f["key"] for f in viewer.get("/api/v1/flags?lifecycle=active").json["items"]] == ["used"]
    assert viewer.get("/api/v1/flags?lifecycle=launched").json["items"] == []
    used = viewer.get("/api/v1/flags/used").json
    assert used["lifecycle"] == "active" and used["type"] == "release" and used["last_evaluated_at"]
    assert viewer.get("/api/v1/flags/fresh").json["lifecycle_reason"] == "Never evaluated in any environment."
    bad = viewer.get("/api/v1/flags?lifecycle=stale")
    assert bad.status_code == 400 and "lifecycle" in bad.json["error"]["details"]
    # Pages of a filtered list hold only matching flags, and the cursor continues after them.
    for i in range(5):
        create(f"more-{i}")
    first = viewer.get("/api/v1/flags?lifecycle=new&limit=3").json
    second = viewer.get(f"/api/v1/flags?lifecycle=new&limit=3&cursor={first['next_cursor']}").json
    keys = [f["key"] for f in first["items"] + second["items"]]
    assert keys == ["fresh"] + [f"more-{i}" for i in range(5)] and second["next_cursor"] is None


def test_a_retried_batch_counts_once(sdk, viewer):
    create("checkout")
    batch = str(uuid.uuid4())
    body = {"batch": batch, "events": [], "evaluations": [{"flag": "checkout", "variation": "on", "count": 7}]}
    for _ in range(3):  # the first attempt and two retries of the same batch
        assert sdk.post("/sdk/v1/events", json=body).status_code == 202
    other = {**body, "batch": str(uuid.uuid4())}
    assert sdk.post("/sdk/v1/events", json=other).status_code == 202
    no_id = {"evaluations": body["evaluations"]}
    assert sdk.post("/sdk/v1/events", json=no_id).status_code == 202
    assert sdk.post("/sdk/v1/events", json=no_id).status_code == 202  # without an id: counted each time
    assert db.session.scalar(sa.select(sa.func.sum(FlagEvaluation.count))) == 7 * 4
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EvaluationBatch)) == 2
    # The same id in another environment is another batch.
    staging = make_sdk_key("staging")
    assert sdk.post("/sdk/v1/events", json=body, token=staging).status_code == 202
    counts = viewer.get("/api/v1/flags/checkout/evaluations?days=7").json["environments"]
    assert counts["production"]["days"][0]["count"] == 28 and counts["staging"]["days"][0]["count"] == 7
    assert counts["production"]["last_evaluated_at"] and counts["development"]["last_evaluated_at"] is None
    # Batch ids are forgotten after the retention.
    assert ingest.prune_batches(datetime.now(UTC) + ingest.BATCH_RETENTION + timedelta(minutes=1)) == 3


def test_remote_evaluations_count_and_mark_the_flag_evaluated(sdk, viewer):
    create("checkout")
    serve("checkout", "production", {"variation": "on"})
    for _ in range(3):
        response = sdk.post("/sdk/v1/evaluate", json={"context": {"id": "u1"}, "flags": ["checkout", "nope"]})
        assert response.status_code == 200
    rows = db.session.execute(sa.select(FlagEvaluation.flag, FlagEvaluation.variation, FlagEvaluation.count)).all()
    assert rows == [("checkout", "on", 3)]  # unknown flags are not counted
    usage = db.session.scalars(sa.select(FlagUsage)).all()
    assert [u.flag for u in usage] == ["checkout"]
    assert viewer.get("/api/v1/flags/checkout").json["lifecycle"] == "active"


def test_targeting_changes_record_what_is_served():
    create("checkout")
    serve("checkout", "production", HALF)
    serve("checkout", "production", {"variation": "on"})
    serve("checkout", "production", {"variation": "on"}, enabled=False)
    flag_domain.update(ACTOR, "checkout", {"name": "no targeting change"})
    rows = db.session.execute(sa.select(TargetingChange.version, TargetingChange.serves,
                                        TargetingChange.full_rollout).order_by(TargetingChange.id)).all()
    assert rows == [(2, None, False), (3, "on", True), (4, "off", False)]
