"""Holdouts through the API (docs/holdouts.md): the resource (validation, versions,
audit, usage rules), flags joining one (write-time checks, the SDK ruleset), remote
evaluation (held-out units never in an experiment's exposures, holdout exposures
recorded once), and the results endpoint on simulated data with a known effect."""

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from service.analysis import stats
from service.extensions import db
from service.models import AuditEntry

ENV = "production"
ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def bucket(salt: str, unit: str) -> int:
    """The bucketing formula, written independently of the engine."""
    return int(hashlib.sha256(f"{salt}.{unit}".encode()).hexdigest()[:16], 16) * 10000 // 2**64


def group_of(key: str, unit: str, percent: float) -> str | None:
    b, t = bucket(f"holdout:{key}", unit), round(percent * 100)
    return "held_out" if b < t else "measured" if b < 2 * t else None


def targeting(**kw):
    body = {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": {"variation": "on"}}
    body.update(kw)
    return body


def make_holdout(client, key="h5", percent=5, environment=ENV, **kw):
    r = client.post("/api/v1/holdouts", json={"key": key, "environment": environment, "percent": percent, **kw})
    assert r.status_code == 201, r.json
    return r.json


def make_flag(client, key="checkout", **targeting_fields):
    r = client.post("/api/v1/flags", json={"key": key, "kind": "boolean", "variations": ONOFF})
    assert r.status_code == 201, r.json
    if targeting_fields:
        r = client.put(f"/api/v1/flags/{key}/environments/{ENV}", json=targeting(**targeting_fields))
        assert r.status_code == 200, r.json


def audit_count(resource_type="holdout") -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                             .where(AuditEntry.resource_type == resource_type))


def exposure_rows(experiment_like: str):
    rows = db.session.execute(sa.text(
        "SELECT unit, experiment, variation, unit_type FROM events WHERE type = 'exposure' AND experiment LIKE :e"),
        {"e": experiment_like}).all()
    db.session.commit()
    return rows


# --------------------------------------------------------------------------- the resource


def test_create_read_list_with_etag_and_audit(editor, viewer):
    created = make_holdout(editor, "h5", 5, name="Q3 holdout", description="Everything we ship in Q3")
    assert {k: created[k] for k in ("key", "environment", "percent", "unit", "name", "flags", "experiments",
                                    "version")} == {
        "key": "h5", "environment": ENV, "percent": 5.0, "unit": "id", "name": "Q3 holdout", "flags": [],
        "experiments": [], "version": 1}
    r = viewer.get("/api/v1/holdouts/h5")
    assert r.status_code == 200 and r.headers["ETag"] == '"1"' and r.json["description"] == "Everything we ship in Q3"
    make_holdout(editor, "staging-h", 2.5, environment="staging", unit="account")
    assert [h["key"] for h in viewer.get("/api/v1/holdouts").json["items"]] == ["h5", "staging-h"]
    staging = viewer.get("/api/v1/holdouts?environment=staging").json["items"]
    assert [(h["key"], h["percent"], h["unit"]) for h in staging] == [("staging-h", 2.5, "account")]
    assert viewer.get("/api/v1/holdouts?environment=nope").status_code == 404
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.resource_key == "h5")).one()
    assert (entry.action, entry.environment, entry.actor, entry.after["percent"]) == ("create", ENV, "eddie", 5.0)


@pytest.mark.parametrize(("body", "field"), [
    ({"percent": 0.4}, "percent"),
    ({"percent": 10.01}, "percent"),
    ({"percent": 2.345}, "percent"),  # basis points: at most two decimals
    ({"percent": "5"}, "percent"),
    ({"percent": True}, "percent"),
    ({"percent": None}, "percent"),
    ({"key": "x" * 93}, "key"),  # "holdout:" + key must fit the exposures' 100-character experiment key
    ({"key": "Bad Key"}, "key"),
    ({"environment": "nowhere"}, "environment"),
    ({"unit": ""}, "unit"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_holdouts_are_refused_naming_the_field(editor, body, field):
    r = editor.post("/api/v1/holdouts", json={"key": "h", "environment": ENV, "percent": 5, **body})
    assert r.status_code == 400, r.json
    assert field in r.json["error"]["details"], r.json
    assert editor.get("/api/v1/holdouts").json["items"] == [] and audit_count() == 0


def test_bounds_and_92_character_keys_are_accepted(editor):
    assert make_holdout(editor, "a" * 92, 0.5)["percent"] == 0.5
    assert make_holdout(editor, "top", 10)["percent"] == 10.0
    assert make_holdout(editor, "odd", 0.55)["percent"] == 0.55


def test_duplicate_key_is_409_even_in_another_environment(editor):
    make_holdout(editor, "h5")
    r = editor.post("/api/v1/holdouts", json={"key": "h5", "environment": "staging", "percent": 1})
    assert r.status_code == 409 and r.json["error"]["details"] == {"key": ["Already exists."]}


def test_roles(viewer, editor):
    r = viewer.post("/api/v1/holdouts", json={"key": "h", "environment": ENV, "percent": 5})
    assert r.status_code == 403
    make_holdout(editor)
    assert viewer.patch("/api/v1/holdouts/h5", json={"name": "x"}).status_code == 403
    assert viewer.delete("/api/v1/holdouts/h5").status_code == 403
    assert viewer.get("/api/v1/holdouts/h5/results?metric=m").status_code == 400  # allowed; m is unknown


def test_patch_with_if_match_and_stale_versions(editor):
    make_holdout(editor)
    r = editor.patch("/api/v1/holdouts/h5", json={"name": "Renamed"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json["version"] == 2 and r.headers["ETag"] == '"2"'
    before = audit_count()
    r = editor.patch("/api/v1/holdouts/h5", json={"name": "Stale"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert editor.get("/api/v1/holdouts/h5").json["name"] == "Renamed" and audit_count() == before
    r = editor.delete("/api/v1/holdouts/h5", headers={"If-Match": '"1"'})
    assert r.status_code == 412 and editor.get("/api/v1/holdouts/h5").status_code == 200
    assert editor.patch("/api/v1/holdouts/h5", json={"environment": "staging"}).status_code == 400


def test_percent_and_unit_change_only_while_unused_and_unrecorded(editor, sdk):
    make_holdout(editor)
    config = sdk.get("/sdk/v1/config")
    assert config.json["holdouts"] == {"h5": {"key": "h5", "percent": 5.0, "unit": "id"}}
    r = editor.patch("/api/v1/holdouts/h5", json={"percent": 7.5, "unit": "account"})
    assert r.status_code == 200 and (r.json["percent"], r.json["unit"]) == (7.5, "account")
    fresh = sdk.get("/sdk/v1/config", headers={"If-None-Match": config.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.json["holdouts"]["h5"] == {"key": "h5", "percent": 7.5, "unit": "account"}

    make_flag(editor, "checkout", holdout="h5")
    before = audit_count()
    r = editor.patch("/api/v1/holdouts/h5", json={"percent": 5})
    assert r.status_code == 409 and r.json["error"]["details"]["flags"] == ["checkout"]
    assert editor.patch("/api/v1/holdouts/h5", json={"unit": "id"}).status_code == 409
    assert editor.patch("/api/v1/holdouts/h5", json={"percent": 7.5, "name": "Same size"}).status_code == 200
    assert audit_count() == before + 1

    # Once it recorded units, even a holdout no flag names keeps its population.
    editor.patch(f"/api/v1/flags/checkout/environments/{ENV}", json={"holdout": None})
    assert sdk.post("/sdk/v1/events", json={"events": [{
        "id": str(uuid.uuid4()), "type": "exposure", "ts": datetime.now(UTC).isoformat(), "unit": "u1",
        "experiment": "holdout:h5", "variation": "held_out"}]}).status_code == 202
    r = editor.patch("/api/v1/holdouts/h5", json={"percent": 5})
    assert r.status_code == 409 and "percent" in r.json["error"]["details"]


def test_delete_is_refused_while_flags_name_it_and_removes_recorded_units(editor, sdk):
    make_holdout(editor)
    make_flag(editor, "checkout", holdout="h5")
    before = audit_count()
    r = editor.delete("/api/v1/holdouts/h5")
    assert r.status_code == 409 and r.json["error"]["details"] == {"flags": ["checkout"]} and audit_count() == before
    editor.patch(f"/api/v1/flags/checkout/environments/{ENV}", json={"holdout": None})
    sdk.post("/sdk/v1/events", json={"events": [{
        "id": str(uuid.uuid4()), "type": "exposure", "ts": datetime.now(UTC).isoformat(), "unit": "u1",
        "experiment": "holdout:h5", "variation": "held_out"}]})
    assert len(exposure_rows("holdout:h5")) == 1
    assert editor.delete("/api/v1/holdouts/h5").status_code == 204
    assert editor.get("/api/v1/holdouts/h5").status_code == 404
    assert exposure_rows("holdout:h5") == []  # a new holdout under this key starts empty
    assert sdk.get("/sdk/v1/config").json["holdouts"] == {}
    actions = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == "holdout")
                                 .order_by(AuditEntry.id)).all()
    assert actions == ["create", "delete"]


def test_deleting_the_environment_deletes_its_holdouts(admin):
    make_holdout(admin, "staged", environment="staging")
    make_holdout(admin, "h5")
    assert admin.delete("/api/v1/environments/staging").status_code == 204
    assert [h["key"] for h in admin.get("/api/v1/holdouts").json["items"]] == ["h5"]


# --------------------------------------------------------------------------- flags join


def test_flag_targeting_names_a_holdout_of_its_environment(editor, viewer):
    make_holdout(editor, "h5")
    make_holdout(editor, "staging-h", environment="staging")
    make_flag(editor, "checkout")
    path = f"/api/v1/flags/checkout/environments/{ENV}"
    for key, message in (("nope", "unknown holdout 'nope'"), ("staging-h", "belongs to environment 'staging'")):
        r = editor.put(path, json=targeting(holdout=key))
        assert r.status_code == 400, r.json
        assert message in r.json["error"]["details"]["holdout"][0]
    r = editor.put(path, json=targeting(holdout=""))
    assert r.status_code == 400 and "holdout" in r.json["error"]["details"]
    assert "holdout" not in viewer.get(path).json

    r = editor.patch(path, json={"holdout": "h5"})
    assert r.status_code == 200 and r.json["holdout"] == "h5"
    assert viewer.get("/api/v1/flags/checkout").json["environments"][ENV]["holdout"] == "h5"
    assert viewer.get("/api/v1/holdouts/h5").json["flags"] == ["checkout"]
    r = editor.patch(path, json={"holdout": None})
    assert r.status_code == 200 and "holdout" not in r.json
    assert viewer.get("/api/v1/holdouts/h5").json["flags"] == []


def test_experiments_on_a_flag_in_a_holdout_inherit_it(editor, viewer):
    make_holdout(editor)
    make_flag(editor, "checkout", holdout="h5")
    editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"})
    r = editor.post("/api/v1/experiments", json={
        "key": "checkout-test", "flag": "checkout", "environment": ENV, "control": "off", "primary_metric": "buys",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}]})
    assert r.status_code == 201, r.json
    holdout = viewer.get("/api/v1/holdouts/h5").json
    assert (holdout["flags"], holdout["experiments"]) == (["checkout"], ["checkout-test"])
    # the experiment's rule was added to the targeting, which keeps its holdout
    stored = viewer.get(f"/api/v1/flags/checkout/environments/{ENV}").json
    assert stored["holdout"] == "h5" and stored["rules"][-1]["serve"] == {"experiment": "checkout-test"}


def test_rollback_to_a_version_naming_a_deleted_holdout_is_refused(editor):
    make_holdout(editor)
    make_flag(editor, "checkout", holdout="h5")
    version = editor.get("/api/v1/flags/checkout").json["version"]
    editor.patch(f"/api/v1/flags/checkout/environments/{ENV}", json={"holdout": None})
    assert editor.delete("/api/v1/holdouts/h5").status_code == 204
    r = editor.post("/api/v1/flags/checkout/rollback", json={"version": version})
    assert r.status_code == 400 and f"environments.{ENV}.holdout" in r.json["error"]["details"]


# --------------------------------------------------------------------------- remote evaluation


@pytest.fixture
def running(editor):
    """A 10 % holdout; flag `checkout` in it serves a running 50/50 experiment to everyone."""
    make_holdout(editor, "h10", 10)
    make_flag(editor, "checkout", holdout="h10")
    editor.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"})
    r = editor.post("/api/v1/experiments", json={
        "key": "checkout-test", "flag": "checkout", "environment": ENV, "control": "off", "primary_metric": "buys",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}]})
    assert r.status_code == 201, r.json
    assert editor.post("/api/v1/experiments/checkout-test/start").status_code == 200
    return editor


def test_remote_evaluation_holds_out_and_never_exposes_held_out_units(running, sdk):
    units = [f"user-{i}" for i in range(600)]
    groups = {u: group_of("h10", u, 10) for u in units}
    assert {"held_out", "measured", None} == set(groups.values())
    for _ in range(2):  # evaluating again records nothing new
        for u in units:
            r = sdk.post("/sdk/v1/evaluate", json={"context": {"id": u}, "flags": ["checkout"]})
            result = r.json["flags"]["checkout"]
            if groups[u] == "held_out":
                assert result == {"value": False, "variation": "off", "reason": "HOLDOUT", "rule_id": None,
                                  "experiment": None, "in_experiment": False}
            else:
                assert result["in_experiment"] is True and result["experiment"] == "checkout-test"
    experiment_units = {row.unit for row in exposure_rows("checkout-test")}
    assert experiment_units == {u for u in units if groups[u] != "held_out"}
    recorded = exposure_rows("holdout:%")
    assert len(recorded) == len({r.unit for r in recorded})
    assert {(r.unit, r.variation) for r in recorded} == {(u, g) for u, g in groups.items() if g}
    assert {(r.experiment, r.unit_type) for r in recorded} == {("holdout:h10", "id")}


def test_experiment_results_never_count_holdout_exposures(running, sdk, viewer):
    for u in (f"user-{i}" for i in range(300)):
        sdk.post("/sdk/v1/evaluate", json={"context": {"id": u}, "flags": ["checkout"]})
    results = viewer.get("/api/v1/experiments/checkout-test/results").json
    held = sum(1 for i in range(300) if group_of("h10", f"user-{i}", 10) == "held_out")
    assert sum(results["units"].values()) == 300 - held and results["multiple_exposures"] == 0
    assert set(results["units"]) == {"off", "on"}


# --------------------------------------------------------------------------- results


START = datetime.now(UTC) - timedelta(days=2)


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def simulate(key, percent, *, n, seed, p_held, p_measured, revenue_lift=0.0, unit_type="id"):
    """Exposures and outcomes of ``n`` units bucketed into the holdout's groups, with known rates.

    Returns (events, truth) where truth maps group -> arrays (converted, revenue)."""
    rng = random.Random(seed)
    events, truth = [], {"held_out": ([], []), "measured": ([], [])}
    for i in range(n):
        unit = f"{seed}-u{i}"
        group = group_of(key, unit, percent)
        if group is None:
            continue
        first = START + timedelta(seconds=rng.randrange(0, 24 * 3600))
        attrs = {"unit_type": unit_type}
        events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": iso(first), "unit": unit,
                       "experiment": f"holdout:{key}", "variation": group, "attributes": attrs})
        converted = rng.random() < (p_held if group == "held_out" else p_measured)
        revenue = 0.0
        if converted:
            revenue = round(rng.expovariate(1 / 20) + (revenue_lift if group == "measured" else 0.0), 2)
            events.append({"id": str(uuid.uuid4()), "type": "track", "ts": iso(first + timedelta(minutes=3)),
                           "unit": unit, "event": "purchase", "value": revenue, "attributes": attrs})
        truth[group][0].append(float(converted))
        truth[group][1].append(revenue)
    return events, {g: (np.array(c), np.array(r)) for g, (c, r) in truth.items()}


def post_events(sdk, events):
    for i in range(0, len(events), 1000):
        r = sdk.post("/sdk/v1/events", json={"events": events[i:i + 1000]})
        assert r.status_code == 202 and r.json["rejected"] == [], r.json


@pytest.fixture
def metrics(editor):
    editor.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    editor.post("/api/v1/metrics", json={"key": "revenue", "event": "purchase", "type": "mean"})
    return editor


def by_group(entry):
    return {v["variation"]: v for v in entry["variations"]}


def test_results_find_a_known_cumulative_lift(metrics, sdk, viewer):
    make_holdout(metrics, "h10", 10)
    events, truth = simulate("h10", 10, n=40000, seed=11, p_held=0.20, p_measured=0.26, revenue_lift=5.0)
    post_events(sdk, events)
    r = viewer.get("/api/v1/holdouts/h10/results?metric=purchases&metric=revenue")
    assert r.status_code == 200, r.json
    doc = r.json
    n_held, n_meas = len(truth["held_out"][0]), len(truth["measured"][0])
    assert doc["units"] == {"held_out": n_held, "measured": n_meas} and doc["control"] == "held_out"
    assert doc["srm"]["flagged"] is False and doc["multiple_exposures"] == 0
    assert [m["metric"] for m in doc["metrics"]] == ["purchases", "revenue"]

    conversion = by_group(doc["metrics"][0])
    lift = conversion["measured"]["absolute"]
    lo, hi = lift["ci"]
    assert lo < 0.06 < hi and lo > 0  # covers the true lift of 6 points, and finds it
    assert conversion["measured"]["verdict"] == "winner" and conversion["held_out"]["absolute"] is None
    # the same numbers as the statistics module on the simulated units' sufficient statistics
    a, b = (stats.proportion_moments(stats.SampleStats(len(c), c.sum(), (c * c).sum()))
            for c in (truth["held_out"][0], truth["measured"][0]))
    expected = stats.compare(a, b, engine="frequentist", alpha=0.05, sequential=False, sequential_n=5000,
                             direction="increase")
    assert lift["estimate"] == pytest.approx(expected.absolute.estimate, rel=1e-9)
    assert lift["ci"] == pytest.approx(list(expected.absolute.ci), rel=1e-9)

    # true revenue lift per unit: 0.26 * (20 + 5) - 0.20 * 20 = 2.5
    revenue = by_group(doc["metrics"][1])["measured"]["absolute"]
    assert revenue["ci"][0] < 2.5 < revenue["ci"][1]

    bayes = viewer.get("/api/v1/holdouts/h10/results?metric=purchases,revenue&engine=bayesian").json
    assert bayes["engine"] == "bayesian"
    assert by_group(bayes["metrics"][0])["measured"]["chance_to_beat_control"] > 0.99


def test_an_aa_holdout_does_not_flag(metrics, sdk, viewer):
    make_holdout(metrics, "aa", 5, unit="account")
    events, truth = simulate("aa", 5, n=60000, seed=3, p_held=0.2, p_measured=0.2, unit_type="account")
    post_events(sdk, events)
    doc = viewer.get("/api/v1/holdouts/aa/results?metric=purchases&metric=revenue").json
    assert doc["unit"] == "account" and sum(doc["units"].values()) == sum(len(c) for c, _ in truth.values())
    assert doc["srm"]["flagged"] is False
    for entry in doc["metrics"]:
        measured = by_group(entry)["measured"]
        assert measured["absolute"]["ci"][0] < 0 < measured["absolute"]["ci"][1]
        assert measured["verdict"] == "inconclusive" and entry["verdict"] == "inconclusive"
    assert {c["check"]: c["status"] for c in doc["health"]}["srm"] == "ok"


def test_results_request_validation_and_csv(metrics, viewer, sdk):
    make_holdout(metrics, "h5")
    r = viewer.get("/api/v1/holdouts/h5/results")
    assert r.status_code == 400 and "metric" in r.json["error"]["details"]
    r = viewer.get("/api/v1/holdouts/h5/results?metric=purchases&metric=ghost")
    assert r.status_code == 400 and "ghost" in r.json["error"]["message"]
    assert viewer.get("/api/v1/holdouts/nope/results?metric=purchases").status_code == 404
    assert viewer.get("/api/v1/holdouts/h5/results?metric=purchases&alpha=0.9").status_code == 400
    empty = viewer.get("/api/v1/holdouts/h5/results?metric=purchases").json
    assert empty["units"] == {"held_out": 0, "measured": 0}
    assert {c["check"]: c["status"] for c in empty["health"]}["exposures"] == "warning"
    events, _ = simulate("h5", 5, n=4000, seed=1, p_held=0.2, p_measured=0.3)
    post_events(sdk, events)
    r = viewer.get("/api/v1/holdouts/h5/results?metric=purchases&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    lines = r.get_data(as_text=True).splitlines()
    assert lines[0].startswith("metric,dimension,dimension_value,variation,units") and len(lines) == 3
    assert lines[1].split(",")[3] == "held_out" and lines[2].split(",")[3] == "measured"


def test_units_recorded_in_both_groups_are_excluded_and_counted(metrics, sdk, viewer):
    make_holdout(metrics, "h5")
    now = iso(datetime.now(UTC) - timedelta(minutes=5))
    post_events(sdk, [{"id": str(uuid.uuid4()), "type": "exposure", "ts": now, "unit": "flip",
                       "experiment": "holdout:h5", "variation": g} for g in ("held_out", "measured")])
    doc = viewer.get("/api/v1/holdouts/h5/results?metric=purchases").json
    assert doc["multiple_exposures"] == 1 and doc["units"] == {"held_out": 0, "measured": 0}


# --------------------------------------------------------------------------- flags as code


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_flags_as_code_round_trips_holdouts_and_the_targeting_field(editor, fmt):
    from service.domain import Actor
    from service.domain import environments as environment_domain
    from service.flags_as_code.apply import apply
    from service.flags_as_code.document import dump, parse
    from service.flags_as_code.export import export_document

    from .conftest import _empty_database

    make_holdout(editor, "h5", 5, name="Q3", description="All of Q3")
    make_holdout(editor, "h-acct", 0.55, unit="account")
    make_holdout(editor, "elsewhere", 1, environment="staging")
    make_flag(editor, "checkout", holdout="h5")
    make_flag(editor, "banner")
    document = export_document(ENV)
    assert [h["key"] for h in document["holdouts"]] == ["h-acct", "h5"]  # this environment's, sorted
    assert document["holdouts"][1] == {"key": "h5", "name": "Q3", "description": "All of Q3", "percent": 5.0,
                                       "unit": "id"}
    flags = {f["key"]: f for f in document["flags"]}
    assert flags["checkout"]["targeting"]["holdout"] == "h5" and "holdout" not in flags["banner"]["targeting"]
    assert "holdouts" not in export_document("development")  # none there: the section is left out
    text = dump(document, fmt)

    db.session.remove()
    _empty_database()
    environment_domain.ensure_defaults()
    result = apply(Actor("tests"), parse(text, fmt))
    assert [(h["key"], h["status"]) for h in result["holdouts"]] == [("h-acct", "created"), ("h5", "created")]
    assert dump(export_document(ENV), fmt) == text
    again = apply(Actor("tests"), parse(text, fmt))
    assert again["summary"]["created"] == again["summary"]["changed"] == 0


def test_flags_as_code_holdout_changes_follow_the_resource_rules(editor):
    from service.domain import Actor
    from service.domain.errors import ValidationFailed
    from service.flags_as_code.apply import apply
    from service.flags_as_code.export import export_document

    make_holdout(editor, "h5")
    make_holdout(editor, "elsewhere", environment="staging")
    make_flag(editor, "checkout", holdout="h5")
    document = export_document(ENV)
    document["holdouts"][0]["name"] = "Renamed"
    result = apply(Actor("tests"), document, dry_run=True)
    assert result["holdouts"][0]["changes"] == [{"path": "name", "op": "replace", "before": "h5", "after": "Renamed"}]
    document["holdouts"][0]["percent"] = 7
    with pytest.raises(ValidationFailed) as info:
        apply(Actor("tests"), document)
    assert "holdouts.0" in info.value.details  # a flag names it: its size cannot change
    document = export_document(ENV)
    document["holdouts"].append({"key": "elsewhere", "percent": 5})
    document["flags"][0]["targeting"]["holdout"] = "ghost"
    with pytest.raises(ValidationFailed) as info:
        apply(Actor("tests"), document)
    assert set(info.value.details) == {"holdouts.1.key", "flags.0.targeting.holdout"}
    assert editor.get("/api/v1/holdouts/h5").json["name"] == "h5"  # nothing was written
