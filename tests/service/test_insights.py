"""Insights on a seeded programme with known answers: 12 experiments over 4 months (January to
April 2025) with known outcomes and durations, releases at known times, rollbacks of each kind.
Every KPI is compared with the value computed by hand in the comments."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.domain import Actor, lifecycle
from service.domain import experiments as experiment_domain
from service.domain import flags as flag_domain
from service.domain import metrics as metric_domain
from service.domain import rollouts as rollout_domain
from service.extensions import db
from service.models import Experiment, Flag, Rollout, TargetingChange

ACTOR = Actor("tests")
BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
FULL = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}}


def d(month: int, day: int, year: int = 2025) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


# key: (started, concluded or None, outcome)  -- durations in days in the comments
EXPERIMENTS = {
    "e1": (d(1, 5), d(1, 19), "ship"),        # 14
    "e2": (d(1, 10), d(2, 9), "rollback"),    # 30
    "e3": (d(1, 20), d(2, 3), "ship"),        # 14
    "e4": (d(2, 2), d(2, 23), "iterate"),     # 21
    "e5": (d(2, 10), d(3, 3), "ship"),        # 21
    "e6": (d(2, 15), d(3, 17), "ship"),       # 30
    "e7": (d(3, 1), d(3, 8), "rollback"),     # 7
    "e8": (d(3, 5), d(4, 4), "ship"),         # 30
    "e9": (d(3, 20), d(4, 10), "iterate"),    # 21
    "e10": (d(4, 1), d(4, 15), "ship"),       # 14
    "e11": (d(4, 3), None, None),             # still running
    "e12": (d(12, 10, 2024), d(1, 9), "rollback"),  # 30; started before the period
}
# Flags created 10 days before their experiment starts; the others:
CREATED = {"plain1": d(1, 2), "plain2": d(2, 1), "plain3": d(3, 1), "before": d(11, 1, 2024), "guarded": d(1, 15)}
# First full rollout in production (flag -> moment); days since created in the comments.
FULL_ROLLOUTS = {
    "f-e1": d(1, 20),   # created Dec 26: 25 days; e1 concluded Jan 19 -> data-driven
    "plain1": d(1, 12),  # 10 days
    "f-e3": d(2, 5),    # created Jan 10: 26 days; e3 concluded Feb 3 -> data-driven
    "f-e5": d(3, 10),   # created Jan 31: 38 days; e5 concluded Mar 3 -> data-driven
    "plain2": d(3, 3),  # 30 days
    "f-e8": d(4, 5),    # created Feb 23: 41 days; e8 concluded Apr 4 -> data-driven
    "plain3": d(4, 20),  # 50 days
    "f-e10": d(4, 10),  # created Mar 22: 19 days; e10 concluded Apr 15, after -> not data-driven
}


def flag(key: str, created: datetime) -> None:
    flag_domain.create(ACTOR, {"key": key, "kind": "boolean", "variations": BOOL})
    db.session.execute(sa.update(Flag).where(Flag.key == key).values(created_at=created))
    db.session.commit()


def latest_change(key: str, moment: datetime) -> None:
    """Date the flag's latest targeting change (the one just written) at ``moment``."""
    flag_id = db.session.scalar(sa.select(Flag.id).where(Flag.key == key))
    change = db.session.scalar(sa.select(sa.func.max(TargetingChange.id)).where(TargetingChange.flag_id == flag_id))
    db.session.execute(sa.update(TargetingChange).where(TargetingChange.id == change).values(changed_at=moment))
    db.session.commit()


def experiment(key: str, started, concluded, outcome, environment="production") -> None:
    experiment_domain.create(ACTOR, {"key": key, "flag": f"f-{key}", "environment": environment,
                                     "primary_metric": "m"})
    experiment_domain.start(ACTOR, key)
    values = {"started_at": started}
    if concluded is not None:
        experiment_domain.conclude(ACTOR, key, {"decision": {
            "outcome": outcome, "variation": "on" if outcome == "ship" else None}})
        values.update(stopped_at=concluded, concluded_at=concluded)
    db.session.execute(sa.update(Experiment).where(Experiment.key == key).values(**values))
    db.session.commit()


@pytest.fixture
def programme():
    metric_domain.create(ACTOR, {"key": "m", "event": "purchase", "type": "conversion"})
    for key, (started, _, _) in EXPERIMENTS.items():
        flag(f"f-{key}", datetime.fromtimestamp(started.timestamp() - 10 * 86400, UTC))
    for key, created in CREATED.items():
        flag(key, created)
    for key, (started, concluded, outcome) in EXPERIMENTS.items():
        experiment(key, started, concluded, outcome)
    # Staging is another environment: its experiment counts nowhere in production's insights.
    flag("f-stg", d(2, 20))
    experiment("stg", d(2, 21), d(3, 1), "ship", environment="staging")
    for key, moment in FULL_ROLLOUTS.items():
        flag_domain.put_targeting(ACTOR, key, "production", FULL)  # replaces the experiment's rule
        latest_change(key, moment)
    # 'before' was fully rolled out in December (outside the period) and changed again in February.
    flag_domain.put_targeting(ACTOR, "before", "production", FULL)
    latest_change("before", d(12, 5, 2024))
    flag_domain.put_targeting(ACTOR, "before", "production", {**FULL, "rules": [
        {"id": "vip", "conditions": [{"attribute": "plan", "op": "in", "values": ["vip"]}],
         "serve": {"variation": "on"}}]})
    latest_change("before", d(2, 20))
    # A rollback call on Feb 14 (production targeting goes back to version 1: off).
    flag_domain.rollback(ACTOR, "plain1", 1)
    latest_change("plain1", d(2, 14))
    # A guarded rollout rolled back on March 12; its experiment is the rollout's, not the programme's.
    flag_domain.put_targeting(ACTOR, "guarded", "production", {**FULL, "fallthrough": {"variation": "off"}})
    latest_change("guarded", d(12, 1, 2024))
    rollout = rollout_domain.create(ACTOR, "guarded", "production", {
        "variation": "on", "from_variation": "off", "guardrails": ["m"],
        "steps": [{"percent": 50, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]})
    db.session.execute(sa.update(Rollout).where(Rollout.id == rollout.id).values(
        state="rolled_back", finished_at=d(3, 12)))
    db.session.execute(sa.update(Experiment).where(Experiment.id == rollout.experiment_id).values(
        status="concluded", started_at=d(3, 1), concluded_at=d(3, 12),
        decision={"outcome": "rollback", "variation": "off", "summary": "harm"}))
    db.session.execute(sa.update(TargetingChange).where(
        TargetingChange.flag_id == rollout.flag_id, TargetingChange.changed_at > d(5, 2))
        .values(changed_at=d(6, 1)))  # the rollout's own targeting writes: after the period
    db.session.commit()


def kpi(value, series):
    return {"value": value, "series": [{"month": m, "value": v} for m, v in zip(MONTHS, series, strict=True)]}


MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]


def test_every_kpi_equals_the_hand_computed_value(programme, viewer):
    response = viewer.get("/api/v1/insights?from=2025-01-01&to=2025-04-30")
    assert response.status_code == 200, response.json
    got = response.json
    assert got["environment"] == "production" and got["months"] == MONTHS
    assert got["from"].startswith("2025-01-01T00:00:00") and got["to"].startswith("2025-05-01T00:00:00")

    experiments = got["experiments"]
    # Started in the period: e1..e11 (e12 started in December). Jan e1-e3, Feb e4-e6, Mar e7-e9, Apr e10-e11.
    assert experiments["started"] == kpi(11, [3, 3, 3, 2])
    # Concluded: e1..e10 and e12. Jan e12 e1; Feb e3 e2 e4; Mar e5 e7 e6; Apr e8 e9 e10.
    assert experiments["concluded"] == kpi(11, [2, 3, 3, 3])
    assert experiments["by_outcome"] == {"ship": kpi(6, [1, 1, 2, 2]), "rollback": kpi(3, [1, 1, 1, 0]),
                                         "iterate": kpi(2, [0, 1, 0, 1])}
    assert experiments["win_rate"] == kpi(6 / 11, [1 / 2, 1 / 3, 2 / 3, 2 / 3])
    # Durations 14 30 14 21 21 30 7 30 21 14 30 -> sorted, the 6th of 11 is 21.
    # Jan: 30 (e12), 14 (e1) -> 22; Feb: 14 30 21 -> 21; Mar: 21 7 30 -> 21; Apr: 30 21 14 -> 21.
    assert _rounded(experiments["median_days_to_decision"]) == kpi(21.0, [22.0, 21.0, 21.0, 21.0])

    releases = got["releases"]
    # Created in the period: f-e3 f-e4 f-e5 plain1 guarded (Jan); f-e6 f-e7 f-e8 plain2 f-stg (Feb);
    # f-e9 f-e10 f-e11 plain3 (Mar).
    assert releases["flags_created"] == kpi(14, [5, 5, 4, 0])
    # Targeting changes in production: Jan f-e1 plain1; Feb f-e3 before rollback(plain1); Mar f-e5 plain2;
    # Apr f-e8 plain3 f-e10 = 10 over 120 days.
    weeks = {"2025-01": 31 / 7, "2025-02": 28 / 7, "2025-03": 31 / 7, "2025-04": 30 / 7}
    assert _rounded(releases["changes_per_week"]) == _rounded(kpi(10 / (120 / 7), [
        2 / weeks["2025-01"], 3 / weeks["2025-02"], 2 / weeks["2025-03"], 3 / weeks["2025-04"]]))
    # Days to first full rollout: 25 10 | 26 | 38 30 | 41 50 19 -> overall sorted 10 19 25 26 30 38 41 50 -> 28.
    assert _rounded(releases["median_days_to_full_rollout"]) == kpi(28.0, [17.5, 26.0, 34.0, 41.0])
    # Rollbacks: the call (Feb), the guarded rollout (Mar), experiments e12 (Jan) e2 (Feb) e7 (Mar).
    assert releases["rollbacks"] == {**kpi(5, [1, 2, 2, 0]),
                                     "breakdown": {"calls": 1, "guarded_rollouts": 1, "experiments": 3}}

    # Of the 8 first full rollouts, 4 followed a concluded experiment: f-e1 f-e3 f-e5 f-e8.
    assert got["decisions"]["data_driven_share"] == {**kpi(0.5, [1 / 2, 1 / 1, 1 / 2, 1 / 3]),
                                                     "releases": 8, "data_driven": 4}

    stages = lifecycle.counts()
    assert got["hygiene"]["potentially_stale"]["value"] == stages["potentially_stale"] > 0
    assert got["hygiene"]["ready_to_archive"]["value"] == stages["ready_to_archive"]


def test_environment_and_period_are_respected(programme, viewer):
    staging = viewer.get("/api/v1/insights?from=2025-01-01&to=2025-04-30&environment=staging").json
    assert staging["experiments"]["started"]["value"] == 1 and staging["experiments"]["win_rate"]["value"] == 1.0
    february = viewer.get("/api/v1/insights?from=2025-02-01&to=2025-03-01T00:00:00Z").json
    assert february["months"] == ["2025-02"]
    assert february["experiments"]["concluded"]["value"] == 3
    assert february["releases"]["rollbacks"]["value"] == 2


def test_defaults_and_refusals(viewer):
    default = viewer.get("/api/v1/insights").json
    assert default["environment"] == "production" and 3 <= len(default["months"]) <= 4
    assert default["experiments"]["win_rate"]["value"] is None  # nothing concluded: no rate
    for query, field in (("from=yesterday", "from"), ("from=2025-05-01&to=2025-01-01", "from"),
                         ("environment=nowhere", "environment"), ("from=2010-01-01&to=2025-01-01", "from")):
        response = viewer.get(f"/api/v1/insights?{query}")
        assert response.status_code == 400 and field in response.json["error"]["details"], (query, response.json)


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 9) if isinstance(value, float) else value
