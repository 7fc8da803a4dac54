"""Results and exports through HTTP: the field names of docs/api.md, numbers equal
to the statistics module applied to numpy sufficient statistics of the same
simulated units, request overrides, dimension breakdowns, CSV (results and
streamed first exposures), the CLI export, SRM and the stop time."""

import csv
import io
import json
import random
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from service.analysis import stats
from service.analysis.export import RESULT_COLUMNS
from service.cli_results import results as results_group

from ..analysis.reference import sample_stats_from_values

START = datetime.now(UTC) - timedelta(days=3)
TOP_LEVEL = {"experiment", "status", "computed_at", "engine", "sequential", "cuped", "alpha", "units",
             "multiple_exposures", "srm", "metrics"}
VARIATION_FIELDS = {"variation", "units", "value", "stddev", "absolute", "relative", "p_value_adjusted",
                    "chance_to_beat_control", "risk", "verdict"}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(**fields):
    return {"id": str(uuid.uuid4()), **fields}


class Population:
    """Simulated units with known per-unit outcomes (the truth the results must reproduce)."""

    def __init__(self, n=1200, seed=5, weights=(0.5, 0.5)):
        rng = random.Random(seed)
        self.events = []
        self.units = {}  # unit -> (variation, country, converted, revenue, pre_revenue)
        for u in range(n):
            unit = f"user-{u}"
            variation = "on" if rng.random() < weights[1] else "off"
            country = rng.choice(["DE", "FR", "US"])
            first = START + timedelta(seconds=rng.randrange(0, 36 * 3600))
            self.events.append(event(type="exposure", ts=iso(first), unit=unit, experiment="checkout-test",
                                     variation=variation, attributes={"country": country}))
            base = rng.expovariate(1 / 10)
            pre = 0.0
            if rng.random() < 0.5:  # pre-period purchase, correlated with later spending
                pre = round(base, 2)
                self.events.append(event(type="track", ts=iso(first - timedelta(days=2)), unit=unit,
                                         event="purchase", value=pre))
            p = 0.30 if variation == "on" else 0.20
            converted = rng.random() < p
            revenue = 0.0
            if converted:
                revenue = round(base * (1.2 if variation == "on" else 1.0) + rng.random(), 2)
                self.events.append(event(type="track", ts=iso(first + timedelta(minutes=5)), unit=unit,
                                         event="purchase", value=revenue))
            self.units[unit] = (variation, country, float(converted), revenue, pre)

    def post(self, sdk, events=None):
        events = self.events if events is None else events
        for i in range(0, len(events), 1000):
            response = sdk.post("/sdk/v1/events", json={"events": events[i:i + 1000]})
            assert response.status_code == 202 and response.json["rejected"] == [], response.json

    def arrays(self, variation, country=None):
        rows = [v for v in self.units.values() if v[0] == variation and (country is None or v[1] == country)]
        return tuple(np.array([r[i] for r in rows]) for i in (2, 3, 4))


@pytest.fixture
def experiment(editor):
    editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean",
                                       "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    editor.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    editor.post("/api/v1/metrics", json={"key": "revenue", "event": "purchase", "type": "mean"})
    editor.post("/api/v1/metrics", json={"key": "orders", "event": "purchase", "type": "count",
                                         "direction": "decrease"})
    response = editor.post("/api/v1/experiments", json={
        "key": "checkout-test", "flag": "checkout", "environment": "production",
        "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
        "control": "off", "primary_metric": "purchases", "secondary_metrics": ["revenue"],
        "guardrail_metrics": ["orders"], "dimensions": ["country"]})
    assert response.status_code == 201, response.json
    assert editor.post("/api/v1/experiments/checkout-test/start").status_code == 200
    return editor


@pytest.fixture
def population(experiment, sdk):
    population = Population()
    population.post(sdk)
    return population


def entry(results, metric, dimension=None):
    return next(m for m in results["metrics"] if m["metric"] == metric and m["dimension"] == dimension)


def by_variation(metric_entry):
    return {v["variation"]: v for v in metric_entry["variations"]}


def test_results_json_shape_and_numbers(experiment, population, viewer):
    response = viewer.get("/api/v1/experiments/checkout-test/results")
    assert response.status_code == 200, response.json
    results = response.json
    assert set(results) >= TOP_LEVEL
    assert results["experiment"] == "checkout-test" and results["status"] == "running"
    assert results["engine"] == "frequentist" and results["sequential"] is False and results["cuped"] is False
    assert results["alpha"] == 0.05 and results["computed_at"].endswith("Z")
    n_on = sum(1 for v in population.units.values() if v[0] == "on")
    assert results["units"] == {"off": len(population.units) - n_on, "on": n_on}
    assert results["multiple_exposures"] == 0
    assert set(results["srm"]) == {"p_value", "flagged"} and results["srm"]["flagged"] is False
    assert [m["metric"] for m in results["metrics"]] == ["purchases", "revenue", "orders"]
    assert {h["check"]: h["status"] for h in results["health"]}["srm"] == "ok"

    for metric_entry in results["metrics"]:
        assert set(metric_entry) == {"metric", "type", "dimension", "verdict", "variations"}
        assert [v["variation"] for v in metric_entry["variations"]] == ["off", "on"]
        for v in metric_entry["variations"]:
            assert set(v) == VARIATION_FIELDS
    control, treatment = by_variation(entry(results, "purchases"))["off"], by_variation(entry(results, "purchases"))["on"]
    assert control["absolute"] is None and control["relative"] is None and control["p_value_adjusted"] is None
    assert set(treatment["absolute"]) == {"estimate", "ci", "p_value"}

    # Independent reference: numpy sums of the simulated units -> the statistics module.
    for metric, column, moments in (("purchases", 0, stats.proportion_moments), ("revenue", 1, stats.mean_moments),
                                    ("orders", 0, stats.mean_moments)):
        a = moments(sample_stats_from_values(population.arrays("off")[column]))
        b = moments(sample_stats_from_values(population.arrays("on")[column]))
        got = by_variation(entry(results, metric))
        assert got["off"]["value"] == pytest.approx(a.mean, rel=1e-12)
        assert got["on"]["stddev"] == pytest.approx(b.stddev, rel=1e-12)
        absolute = stats.frequentist_test(a, b)
        relative = stats.frequentist_test(a, b, relative=True)
        assert got["on"]["absolute"]["estimate"] == pytest.approx(absolute.estimate, rel=1e-12)
        assert got["on"]["absolute"]["ci"] == pytest.approx(list(absolute.ci), rel=1e-12)
        assert got["on"]["absolute"]["p_value"] == pytest.approx(absolute.p_value, rel=1e-9)
        assert got["on"]["relative"]["estimate"] == pytest.approx(relative.estimate, rel=1e-12)
        assert got["on"]["relative"]["ci"] == pytest.approx(list(relative.ci), rel=1e-12)
        assert got["on"]["p_value_adjusted"] == got["on"]["absolute"]["p_value"]
    # The simulated lift (20% -> 30% conversion) is found.
    purchases = by_variation(entry(results, "purchases"))["on"]
    assert purchases["absolute"]["p_value"] < 0.001 and purchases["absolute"]["ci"][0] > 0.03


def test_csv_matches_json(experiment, population, viewer):
    results = viewer.get("/api/v1/experiments/checkout-test/results?dimension=country").json
    response = viewer.get("/api/v1/experiments/checkout-test/results?dimension=country&format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == RESULT_COLUMNS
    records = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert len(records) == sum(len(m["variations"]) for m in results["metrics"]) == 3 * 2 * 4

    def number(text):
        return None if text == "" else float(text)

    i = 0
    for metric_entry in results["metrics"]:
        for v in metric_entry["variations"]:
            record = records[i]
            i += 1
            dimension = metric_entry["dimension"]
            assert record["metric"] == metric_entry["metric"] and record["variation"] == v["variation"]
            assert record["dimension"] == (dimension["name"] if dimension else "")
            assert record["dimension_value"] == (dimension["value"] if dimension else "")
            assert int(record["units"]) == v["units"]
            assert number(record["value"]) == v["value"] and number(record["stddev"]) == v["stddev"]
            for prefix, test in (("abs", v["absolute"]), ("rel", v["relative"])):
                expected = [None] * 4 if test is None else [test["estimate"], *test["ci"], test["p_value"]]
                got = [number(record[f"{prefix}_{c}"]) for c in ("estimate", "ci_low", "ci_high", "p_value")]
                assert got == expected
            assert number(record["p_value_adjusted"]) == v["p_value_adjusted"]
            assert number(record["chance_to_beat_control"]) == v["chance_to_beat_control"]


def test_dimension_breakdown(experiment, population, viewer):
    results = viewer.get("/api/v1/experiments/checkout-test/results?dimension=country&metric=purchases").json
    assert [m["dimension"] for m in results["metrics"]] == [
        None, {"name": "country", "value": "DE"}, {"name": "country", "value": "FR"},
        {"name": "country", "value": "US"}]
    overall = by_variation(entry(results, "purchases"))
    for variation in ("off", "on"):
        slices = [by_variation(entry(results, "purchases", {"name": "country", "value": c}))[variation]
                  for c in ("DE", "FR", "US")]
        assert sum(s["units"] for s in slices) == overall[variation]["units"]
        de = population.arrays(variation, "DE")[0]
        assert slices[0]["units"] == len(de) and slices[0]["value"] == pytest.approx(de.mean(), rel=1e-12)


def test_overrides_bayesian_correction_cuped_sequential(experiment, population, viewer):
    base = viewer.get("/api/v1/experiments/checkout-test/results").json
    bayes = viewer.get("/api/v1/experiments/checkout-test/results?engine=bayesian").json
    assert bayes["engine"] == "bayesian"
    control, treatment = by_variation(entry(bayes, "purchases"))["off"], by_variation(entry(bayes, "purchases"))["on"]
    assert treatment["chance_to_beat_control"] > 0.99 and treatment["absolute"]["p_value"] is None
    assert control["chance_to_beat_control"] is None and control["risk"] > treatment["risk"] >= 0
    assert treatment["p_value_adjusted"] is None
    # orders: direction "decrease", so more orders is worse.
    assert by_variation(entry(bayes, "orders"))["on"]["chance_to_beat_control"] < 0.01

    holm = viewer.get("/api/v1/experiments/checkout-test/results?correction=holm").json
    assert holm["correction"] == "holm"
    p = [by_variation(entry(base, m))["on"]["absolute"]["p_value"] for m in ("purchases", "revenue", "orders")]
    adjusted = [by_variation(entry(holm, m))["on"]["p_value_adjusted"] for m in ("purchases", "revenue", "orders")]
    assert adjusted == pytest.approx(stats.holm(p))

    cuped = viewer.get("/api/v1/experiments/checkout-test/results?cuped=true&metric=revenue").json
    assert cuped["cuped"] is True
    plain_sd = by_variation(entry(base, "revenue"))["on"]["stddev"]
    cuped_entry = by_variation(entry(cuped, "revenue"))["on"]
    assert cuped_entry["stddev"] < plain_sd  # the pre-period purchase explains variance
    assert cuped_entry["value"] == by_variation(entry(base, "revenue"))["on"]["value"]  # value stays unadjusted

    sequential = viewer.get("/api/v1/experiments/checkout-test/results?sequential=true&alpha=0.1").json
    assert sequential["sequential"] is True and sequential["alpha"] == 0.1
    seq_ci = by_variation(entry(sequential, "purchases"))["on"]["absolute"]["ci"]
    fixed_ci = by_variation(entry(base, "purchases"))["on"]["absolute"]["ci"]
    assert seq_ci[1] - seq_ci[0] > fixed_ci[1] - fixed_ci[0]

    assert viewer.get("/api/v1/experiments/checkout-test/results?metric=nope").status_code == 400
    assert viewer.get("/api/v1/experiments/checkout-test/results?engine=magic").status_code == 400
    assert viewer.get("/api/v1/experiments/missing/results").status_code == 404
    assert viewer.get("/api/v1/experiments/missing/exposures").status_code == 404
    assert viewer.get('/api/v1/experiments/checkout-test/results?dimension=a"b').status_code == 400
    unknown = viewer.get("/api/v1/experiments/checkout-test/results?dimension=browser&metric=purchases").json
    assert [m["dimension"] for m in unknown["metrics"]] == [None, {"name": "browser", "value": None}]


def test_multiple_exposures_stop_time_and_srm(experiment, sdk, viewer, editor):
    events = []
    for u in range(300):  # 2:1 allocation against 50/50 weights: sample ratio mismatch
        events.append(event(type="exposure", ts=iso(START), unit=f"u{u}", experiment="checkout-test",
                            variation="on" if u % 3 else "off"))
    events.append(event(type="exposure", ts=iso(START + timedelta(hours=1)), unit="u0", experiment="checkout-test",
                        variation="on"))  # u0 saw both
    Population.post(None, sdk, events)
    results = viewer.get("/api/v1/experiments/checkout-test/results").json
    assert results["multiple_exposures"] == 1
    assert results["units"] == {"off": 99, "on": 200}
    assert results["srm"]["flagged"] is True and results["srm"]["p_value"] < 0.001
    assert {h["check"]: h["status"] for h in results["health"]}["srm"] == "failed"

    editor.post("/api/v1/experiments/checkout-test/stop")
    Population.post(None, sdk, [event(type="exposure", ts=iso(datetime.now(UTC) + timedelta(minutes=1)),
                                      unit="late", experiment="checkout-test", variation="off")])
    after = viewer.get("/api/v1/experiments/checkout-test/results").json
    assert after["status"] == "stopped" and after["units"] == {"off": 99, "on": 200}


def test_exposures_csv_stream(experiment, population, sdk, viewer, live_server):
    Population.post(None, sdk, [event(type="exposure", ts=iso(START + timedelta(days=2)), unit="user-0",
                                      experiment="checkout-test",
                                      variation="on" if population.units["user-0"][0] == "off" else "off")])
    response = viewer.get("/api/v1/experiments/checkout-test/exposures")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == ["unit", "variation", "first_exposed_at", "multiple_variations", "country"]
    assert len(rows) == len(population.units)
    by_unit = {r["unit"]: r for r in rows}
    assert by_unit["user-0"]["multiple_variations"] == "true"
    assert by_unit["user-0"]["variation"] == population.units["user-0"][0]
    assert by_unit["user-1"]["multiple_variations"] == "false"
    assert by_unit["user-1"]["country"] == population.units["user-1"][1]
    assert [r["first_exposed_at"] for r in rows] == sorted(r["first_exposed_at"] for r in rows)
    first = next(e for e in population.events if e["unit"] == "user-1" and e["type"] == "exposure")
    assert datetime.fromisoformat(by_unit["user-1"]["first_exposed_at"]) == datetime.fromisoformat(first["ts"])
    # Under gunicorn the stream outlives the request's database session: same CSV.
    request = urllib.request.Request(f"{live_server.url}/api/v1/experiments/checkout-test/exposures",
                                     headers={"Authorization": f"Bearer {viewer.token}"})
    with urllib.request.urlopen(request, timeout=30) as live:
        assert live.status == 200
        assert live.read().decode() == response.get_data(as_text=True)


def test_cli_export_matches_api(experiment, population, viewer, app, tmp_path):
    runner = app.test_cli_runner()
    app.cli.add_command(results_group)
    out = runner.invoke(args=["results", "export", "checkout-test", "--format", "json"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.output)
    api = viewer.get("/api/v1/experiments/checkout-test/results").json
    document.pop("computed_at"), api.pop("computed_at")
    assert document == api
    target = tmp_path / "r.csv"
    out = runner.invoke(args=["results", "export", "checkout-test", "--format", "csv", "--dimension", "country",
                              "-o", str(target)])
    assert out.exit_code == 0, out.output
    assert target.read_bytes().decode() == viewer.get(
        "/api/v1/experiments/checkout-test/results?format=csv&dimension=country").get_data(as_text=True)
    missing = runner.invoke(args=["results", "export", "nope"])
    assert missing.exit_code != 0 and "does not exist" in missing.output
