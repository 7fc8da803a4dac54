"""Results additions the API and the console share: control, primary metric,
verdicts, the power block, the daily timeseries and the CSV's risk column.

The timeseries is checked day by day against an independent reference: the
per-unit values known at the end of each day, computed in Python from the
events this test generated, fed to the statistics module.
"""

import csv
import io
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

import numpy as np
import pytest

from service.analysis import power as power_calc
from service.analysis import stats

from ..analysis.reference import ratio_stats_from_values, sample_stats_from_values

TODAY = datetime.now(UTC).date()
START = datetime.combine(TODAY - timedelta(days=4), time(6), tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(**fields):
    return {"id": str(uuid.uuid4()), **fields}


class Population:
    """Units exposed over four days; purchases (with values) and page views on later days."""

    def __init__(self, n=900, seed=11):
        rng = random.Random(seed)
        self.events = []
        self.units = {}  # unit -> (variation, first exposure)
        self.tracks = defaultdict(list)  # unit -> [(ts, event, value)]
        for u in range(n):
            unit = f"u{u}"
            variation = "on" if rng.random() < 0.5 else "off"
            first = START + timedelta(seconds=rng.randrange(0, 3 * 86400))
            self.units[unit] = (variation, first)
            self.events.append(event(type="exposure", ts=iso(first), unit=unit, experiment="ts-test",
                                     variation=variation))
            p = 0.35 if variation == "on" else 0.25
            for _ in range(rng.randrange(0, 4)):  # page views: the ratio's denominator
                at = first + timedelta(hours=rng.uniform(0, 40))
                if at < datetime.now(UTC):
                    self.add(unit, at, "view", None)
            if rng.random() < p:
                for _ in range(rng.randrange(1, 3)):
                    at = first + timedelta(hours=rng.uniform(0, 50))
                    if at < datetime.now(UTC):
                        self.add(unit, at, "purchase", round(rng.uniform(1, 30), 2))
        # a purchase before the exposure never counts
        self.add("u0", self.units["u0"][1] - timedelta(hours=1), "purchase", 99.0)

    def add(self, unit, at, name, value):
        self.tracks[unit].append((at, name, value))
        self.events.append(event(type="track", ts=iso(at), unit=unit, event=name,
                                 **({"value": value} if value is not None else {})))

    def post(self, sdk):
        for i in range(0, len(self.events), 1000):
            response = sdk.post("/sdk/v1/events", json={"events": self.events[i:i + 1000]})
            assert response.status_code == 202 and response.json["rejected"] == [], response.json

    def moments(self, metric_type, variation, day_end):
        """Reference Moments from the units and events known at ``day_end``."""
        ys, ds = [], []
        for unit, (v, first) in self.units.items():
            if v != variation or first >= day_end:
                continue
            seen = [(name, value) for at, name, value in self.tracks[unit] if first <= at < day_end]
            purchases = [value for name, value in seen if name == "purchase"]
            if metric_type == "conversion":
                ys.append(1.0 if purchases else 0.0)
            elif metric_type == "count":
                ys.append(float(len(purchases)))
            else:
                ys.append(float(sum(purchases)))
            ds.append(float(sum(1 for name, _ in seen if name == "view")))
        if metric_type == "ratio":
            return stats.ratio_moments(ratio_stats_from_values(ys, ds))
        moments = stats.proportion_moments if metric_type == "conversion" else stats.mean_moments
        return moments(sample_stats_from_values(ys))


@pytest.fixture
def experiment(editor):
    editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean",
                                       "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    for key, kind, extra in (("buyers", "conversion", {}), ("orders", "count", {}), ("revenue", "mean", {}),
                             ("revenue-per-view", "ratio", {"denominator": "view"})):
        created = editor.post("/api/v1/metrics", json={"key": key, "event": "purchase", "type": kind, **extra})
        assert created.status_code == 201, created.json
    response = editor.post("/api/v1/experiments", json={
        "key": "ts-test", "flag": "checkout", "environment": "production",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
        "control": "off", "primary_metric": "buyers", "secondary_metrics": ["orders", "revenue", "revenue-per-view"]})
    assert response.status_code == 201, response.json
    assert editor.post("/api/v1/experiments/ts-test/start").status_code == 200
    return editor


@pytest.fixture
def population(experiment, sdk):
    population = Population()
    population.post(sdk)
    return population


@pytest.mark.parametrize("metric,metric_type", [("buyers", "conversion"), ("orders", "count"),
                                                ("revenue", "mean"), ("revenue-per-view", "ratio")])
def test_timeseries_matches_a_day_by_day_reference(population, viewer, metric, metric_type):
    query = "" if metric == "buyers" else f"?metric={metric}"
    response = viewer.get(f"/api/v1/experiments/ts-test/results/timeseries{query}")
    assert response.status_code == 200, response.json
    series = response.json
    assert series["metric"] == metric and series["control"] == "off" and series["engine"] == "frequentist"
    dates = [d["date"] for d in series["days"]]
    assert dates[0] == START.date().isoformat()
    assert dates == [(START.date() + timedelta(days=i)).isoformat() for i in range(len(dates))]  # no gaps
    assert len(dates) >= 4
    for point in series["days"]:
        day_end = datetime.combine(datetime.fromisoformat(point["date"]).date() + timedelta(days=1), time(0),
                                   tzinfo=UTC)
        a = population.moments(metric_type, "off", day_end)
        b = population.moments(metric_type, "on", day_end)
        off, on = point["variations"]
        assert (off["variation"], on["variation"]) == ("off", "on")
        assert point["units"] == {"off": a.n, "on": b.n} and off["units"] == a.n
        if a.n:
            assert off["value"] == pytest.approx(a.unadjusted_mean, rel=1e-9, abs=1e-12)
            assert on["value"] == pytest.approx(b.unadjusted_mean, rel=1e-9, abs=1e-12)
        expected = stats.frequentist_test(a, b, alpha=0.05)
        if expected is None:
            assert on["absolute"] is None
        else:
            assert on["absolute"]["estimate"] == pytest.approx(expected.estimate, rel=1e-9, abs=1e-12)
            assert on["absolute"]["ci"] == pytest.approx(list(expected.ci), rel=1e-9, abs=1e-12)
            assert on["absolute"]["p_value"] == pytest.approx(expected.p_value, rel=1e-7, abs=1e-12)
        assert off["absolute"] is None
    # The last point is the results' own number for the same metric.
    results = viewer.get(f"/api/v1/experiments/ts-test/results?metric={metric}").json
    final = next(v for v in results["metrics"][0]["variations"] if v["variation"] == "on")
    last = series["days"][-1]["variations"][1]
    assert last["units"] == final["units"] and last["value"] == pytest.approx(final["value"], rel=1e-12)
    assert last["relative"]["ci"] == pytest.approx(final["relative"]["ci"], rel=1e-9)


def test_timeseries_needs_a_metric_and_follows_overrides(experiment, population, viewer):
    bayes = viewer.get("/api/v1/experiments/ts-test/results/timeseries?engine=bayesian").json
    assert bayes["engine"] == "bayesian"
    last = bayes["days"][-1]["variations"][1]
    assert 0 <= last["chance_to_beat_control"] <= 1 and last["absolute"]["p_value"] is None
    sequential = viewer.get("/api/v1/experiments/ts-test/results/timeseries?sequential=true").json
    fixed = viewer.get("/api/v1/experiments/ts-test/results/timeseries").json
    s_lo, s_hi = sequential["days"][-1]["variations"][1]["absolute"]["ci"]
    f_lo, f_hi = fixed["days"][-1]["variations"][1]["absolute"]["ci"]
    assert s_hi - s_lo > f_hi - f_lo  # always-valid intervals are wider
    assert viewer.get("/api/v1/experiments/ts-test/results/timeseries?metric=nope").status_code == 400
    assert viewer.get("/api/v1/experiments/nope/results/timeseries").status_code == 404


def test_timeseries_without_events_is_empty(experiment, viewer):
    series = viewer.get("/api/v1/experiments/ts-test/results/timeseries").json
    assert series["days"] == []


def test_results_name_control_primary_metric_verdicts_and_power(population, viewer):
    results = viewer.get("/api/v1/experiments/ts-test/results").json
    assert results["control"] == "off" and results["primary_metric"] == "buyers"
    allowed = {"winner", "loser", "inconclusive", "not_enough_data"}
    for entry in results["metrics"]:
        assert entry["verdict"] in allowed
        control, treatment = entry["variations"]
        assert control["verdict"] is None and treatment["verdict"] in allowed
        assert entry["verdict"] == treatment["verdict"]  # one treatment: the metric's verdict is its verdict
        p = treatment["p_value_adjusted"]
        expected = ("not_enough_data" if min(control["units"], treatment["units"]) < 100
                    else "inconclusive" if p >= 0.05
                    else "winner" if treatment["absolute"]["estimate"] > 0 else "loser")
        assert treatment["verdict"] == expected
    power = results["power"]
    assert power["metric"] == "buyers" and power["target_mde"] == 0.05 and power["relative"] is True
    assert 0 < power["power"] < 0.8 and power["mde_now"] > 0.05
    assert power["units_still_needed"] == power["units_needed"] - sum(results["units"].values()) > 0
    assert power["units_needed"] == 2 * power["units_per_variation_needed"]  # 50/50
    health = {h["check"]: h for h in results["health"]}
    assert health["power"]["status"] == "warning" and "more units are needed" in health["power"]["message"]


def test_bayesian_risk_in_csv_and_chance_to_win_threshold(population, viewer, editor):
    csv_text = viewer.get("/api/v1/experiments/ts-test/results?engine=bayesian&format=csv").get_data(as_text=True)
    document = viewer.get("/api/v1/experiments/ts-test/results?engine=bayesian").json
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert list(rows[0])[-2:] == ["chance_to_beat_control", "risk"]
    expected = [v for m in document["metrics"] for v in m["variations"]]
    for row, v in zip(rows, expected, strict=True):
        assert (float(row["risk"]) if row["risk"] else None) == v["risk"]
    buyers = next(m for m in document["metrics"] if m["metric"] == "buyers")
    ctw = buyers["variations"][1]["chance_to_beat_control"]
    # The threshold is the experiment's setting: just above / below the observed chance flips the verdict.
    for threshold, verdict in ((max(0.51, min(0.999, ctw - 0.001)), "winner"),
                               (min(0.999, max(ctw, 1 - ctw) + 0.001), "inconclusive")):
        if not (0.5 < threshold < 1):
            continue
        version = editor.get("/api/v1/experiments/ts-test").headers["ETag"]
        patched = editor.patch("/api/v1/experiments/ts-test", json={"analysis": {"chance_to_win": threshold}},
                               headers={"If-Match": version})
        assert patched.status_code == 200, patched.json
        again = viewer.get("/api/v1/experiments/ts-test/results?engine=bayesian").json
        got = next(m for m in again["metrics"] if m["metric"] == "buyers")["variations"][1]["verdict"]
        if ctw >= 0.5:
            assert got == verdict
    bad = editor.patch("/api/v1/experiments/ts-test", json={"analysis": {"target_mde": 0}})
    assert bad.status_code == 400 and "analysis.target_mde" in bad.json["error"]["details"]


def test_low_power_is_reported_like_the_issue_example(experiment, sdk, viewer):
    """516 units per arm at an 8 % conversion rate: the smallest detectable lift is about 58 %."""
    rng = np.random.default_rng(3)
    events = []
    for i in range(1032):
        variation = "off" if i % 2 == 0 else "on"
        at = START + timedelta(minutes=i)
        events.append(event(type="exposure", ts=iso(at), unit=f"p{i}", experiment="ts-test", variation=variation))
        if rng.random() < 0.08:
            events.append(event(type="track", ts=iso(at + timedelta(minutes=1)), unit=f"p{i}", event="purchase"))
    for i in range(0, len(events), 1000):
        assert sdk.post("/sdk/v1/events", json={"events": events[i:i + 1000]}).status_code == 202
    results = viewer.get("/api/v1/experiments/ts-test/results").json
    assert results["units"] == {"off": 516, "on": 516}
    power = results["power"]
    baseline = results["metrics"][0]["variations"][0]["value"]
    assert power["mde_now"] == pytest.approx(power_calc.minimum_detectable_effect(516, baseline), rel=1e-9)
    assert 0.35 < power["mde_now"] < 0.9 and power["power"] < 0.2
    warning = next(h for h in results["health"] if h["check"] == "power")
    assert warning["status"] == "warning" and "smallest change it can detect now" in warning["message"]
