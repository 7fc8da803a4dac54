"""The SQL aggregation layer (service/analysis/queries.py) against numpy.

Random per-unit data is ingested through the real ingestion path; the
sufficient statistics the database computes must equal those computed here
in Python/numpy from the same raw events: multiple-exposure exclusion,
exposures after the stop, other experiments / environments / unit types,
metric windows, events before the first exposure, CUPED pre-period,
winsorization caps (percentile_cont semantics), ratio cross sums and
dimension breakdowns (the dimension of the first exposure).
"""

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from service import ingest
from service.analysis import queries
from service.extensions import db
from service.ingest import from_micros
from service.models import Environment

HOUR = queries.US_PER_HOUR
DAY = queries.US_PER_DAY
BASE = ingest.to_micros(datetime(2024, 3, 1, tzinfo=UTC))
END = BASE + 12 * DAY
ARMS = ("control", "treatment")


def iso(us: int) -> str:
    return from_micros(us).isoformat().replace("+00:00", "Z")


def generate(seed: int, n_units: int = 240):
    """Raw events as dicts (environment key, event) plus the unit truth."""
    rng = random.Random(seed)
    rows = []

    def add(env, **event):
        event.setdefault("id", str(uuid.UUID(int=rng.getrandbits(128))))
        rows.append((env, event))

    for u in range(n_units):
        unit = f"u{u}"
        variation = rng.choice(ARMS)
        country = rng.choice(["DE", "FR", "US", None])
        first = BASE + rng.randrange(0, 10 * DAY)
        exposures = [first] + [first + rng.randrange(1, 3 * DAY) for _ in range(rng.randrange(0, 3))]
        for i, ts in enumerate(exposures):
            v = variation
            if i > 0 and rng.random() < 0.08:
                v = ARMS[1 - ARMS.index(variation)]  # a second variation: excluded unit
            attributes = {"unit_type": "id"}
            if country is not None:
                attributes["country"] = country if i == 0 else rng.choice(["DE", "XX"])
            add("production", type="exposure", ts=iso(ts), unit=unit, experiment="exp", variation=v,
                attributes=attributes)
        if rng.random() < 0.1:  # exposures that must not count
            add("production", type="exposure", ts=iso(END + HOUR), unit=unit, experiment="exp", variation=variation)
            add("production", type="exposure", ts=iso(first), unit=unit, experiment="other", variation=variation)
            add("production", type="exposure", ts=iso(first), unit=unit, experiment="exp", variation="bogus")
            add("staging", type="exposure", ts=iso(first - DAY), unit=unit, experiment="exp", variation=variation)
        lift = 1.5 if variation == "treatment" else 1.0
        for _ in range(rng.randrange(0, 16)):
            ts = first + rng.randrange(-20 * DAY, 15 * DAY)
            kind = rng.choice(["buy", "view", "session", "buy"])
            event = {"type": "track", "ts": iso(ts), "unit": unit, "event": kind}
            if kind == "buy" and rng.random() < 0.85:
                event["value"] = round(rng.expovariate(1 / (20 * lift)), 2)
            if rng.random() < 0.1:
                event["attributes"] = {"unit_type": "account_id"}
            add("staging" if rng.random() < 0.05 else "production", **event)
    for u in range(20):  # tracked but never exposed
        add("production", type="track", ts=iso(BASE + DAY), unit=f"ghost{u}", event="buy", value=5.0)
    rng.shuffle(rows)
    return rows


def load(rows):
    envs = {e.key: e.id for e in db.session.query(Environment)}
    by_env = defaultdict(list)
    for env, event in rows:
        by_env[env].append(event)
    for env, events in by_env.items():
        for i in range(0, len(events), 1000):
            result = ingest.ingest({"events": events[i:i + 1000]}, envs[env], now=datetime(2024, 6, 1, tzinfo=UTC))
            assert result.rejected == [] and result.duplicates == 0
    return envs


# --------------------------------------------------------------------------- reference


def ts_of(event):
    return ingest.to_micros(datetime.fromisoformat(event["ts"]))


def reference_units(rows, dimension=None):
    exposures = defaultdict(list)
    for env, e in rows:
        if env == "production" and e["type"] == "exposure" and e["experiment"] == "exp" \
                and e["variation"] in ARMS and ts_of(e) <= END:
            exposures[e["unit"]].append(e)
    units, multiple = {}, 0
    for unit, evs in exposures.items():
        first = min(ts_of(e) for e in evs)
        variations = {e["variation"] for e in evs}
        if len(variations) > 1:
            multiple += 1
            continue
        dim = None
        if dimension:
            values = [(e.get("attributes") or {}).get(dimension) for e in evs if ts_of(e) == first]
            values = [v for v in values if v is not None]
            dim = min(values) if values else None
        units[unit] = (first, variations.pop(), dim)
    return units, multiple


def reference_values(rows, units, metric: queries.MetricSpec):
    """Per-unit (y, d, x) arrays in the order of ``units``."""
    tracks = defaultdict(list)
    for env, e in rows:
        if env == "production" and e["type"] == "track" \
                and (e.get("attributes") or {}).get("unit_type", "id") == "id" and ts_of(e) <= END:
            tracks[e["unit"]].append(e)
    ys, ds, xs = [], [], []
    for unit, (first, _, _) in units.items():
        y = d = x = 0.0
        hi = first + metric.window_us if metric.window_us else None

        def post(ts, first=first, hi=hi):
            return ts >= first and (hi is None or ts < hi)

        for e in tracks.get(unit, []):
            ts = ts_of(e)
            amount = {"conversion": 1.0, "count": 1.0}.get(metric.type, e.get("value", 1.0))
            if e["event"] == metric.event and post(ts):
                y = max(y, 1.0) if metric.type == "conversion" else y + amount
            if metric.denominator and e["event"] == metric.denominator and post(ts):
                d += 1.0
            if metric.cuped_us and e["event"] == metric.event and first - metric.cuped_us <= ts < first:
                x = max(x, 1.0) if metric.type == "conversion" else x + amount
        ys.append(y)
        ds.append(d)
        xs.append(x)
    return np.array(ys), np.array(ds), np.array(xs)


METRICS = [
    queries.MetricSpec("conv", "conversion", "buy", window_us=72 * HOUR),
    queries.MetricSpec("views", "count", "view", window_us=7 * 24 * HOUR),
    queries.MetricSpec("revenue", "mean", "buy", winsorize=0.9, cuped_us=14 * DAY),
    queries.MetricSpec("rps", "ratio", "buy", denominator="session", winsorize=0.97),
    queries.MetricSpec("conv_cuped", "conversion", "buy", cuped_us=7 * DAY),
]


def expected_cells(rows, dimension=None):
    units, multiple = reference_units(rows, dimension)
    keys = list(units)
    cells = {}
    caps = {}
    for metric in METRICS:
        y, d, x = reference_values(rows, units, metric)
        if metric.winsorize and metric.type != "conversion":
            caps[metric.key] = [float(np.quantile(v, metric.winsorize)) for v in (y, d, x)]
            y = np.minimum(y, caps[metric.key][0])
            d = np.minimum(d, caps[metric.key][1]) if metric.denominator else d
            x = np.minimum(x, caps[metric.key][2]) if metric.cuped_us else x
        for i, unit in enumerate(keys):
            _, variation, dim = units[unit]
            cell = cells.setdefault((variation, dim), {}).setdefault(metric.key, defaultdict(float))
            cell["n"] += 1
            cell["sum_y"] += y[i]
            cell["sum_y2"] += y[i] ** 2
            if metric.denominator:
                cell["sum_d"] += d[i]
                cell["sum_d2"] += d[i] ** 2
                cell["sum_yd"] += y[i] * d[i]
            if metric.cuped_us:
                cell["sum_x"] += x[i]
                cell["sum_x2"] += x[i] ** 2
                cell["sum_xy"] += x[i] * y[i]
    return units, multiple, cells, caps


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dataset():
    return generate(seed=20240301)


def scope(envs):
    return queries.Scope(envs["production"], "exp", ARMS, "id", END)


@pytest.mark.parametrize("dimension", [None, "country"])
def test_sql_sufficient_statistics_equal_numpy(dataset, dimension):
    envs = load(dataset)
    units, multiple, cells, caps = expected_cells(dataset, dimension)
    assert multiple > 0 and len({u[1] for u in units.values()}) == 2  # the data exercises exclusion
    assert all(0 < c < float("inf") for cap in caps.values() for c in cap if c)  # and real caps
    assert all(c["rps"]["sum_yd"] > 0 and c["views"]["sum_y"] > 0 for c in cells.values() if c["rps"]["n"] > 30)

    connection = db.session.connection()
    counts = queries.unit_counts(connection, scope(envs), dimension)
    assert counts.multiple_exposures == multiple
    expected_counts = defaultdict(int)
    for _, variation, dim in units.values():
        expected_counts[(variation, dim)] += 1
    assert counts.units == dict(expected_counts)
    assert counts.first_us == min(u[0] for u in units.values())

    sums = queries.metric_sums(connection, scope(envs), METRICS, n_units=len(units), first_us=counts.first_us,
                               dimension=dimension)
    assert set(sums) == set(cells)
    for cell_key, by_metric in cells.items():
        for metric_key, expected in by_metric.items():
            got = sums[cell_key][metric_key]
            for name, value in expected.items():
                assert getattr(got, name) == pytest.approx(value, rel=1e-9, abs=1e-9), (cell_key, metric_key, name)


def test_winsorize_cap_matches_percentile_cont_at_every_rank():
    """The ORDER BY ... OFFSET cap equals numpy's linear quantile for many n and q: the capped
    sums equal those of the values capped at numpy's quantile."""
    env = db.session.query(Environment).filter_by(key="production").one()
    rng = random.Random(7)
    events = []
    n = 23
    values = [round(rng.uniform(0, 100), 3) for _ in range(n)]
    for u, value in enumerate(values):
        ts = BASE + u * HOUR
        events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": iso(ts), "unit": f"w{u}",
                       "experiment": "exp", "variation": ARMS[u % 2]})
        events.append({"id": str(uuid.uuid4()), "type": "track", "ts": iso(ts + 1), "unit": f"w{u}",
                       "event": "buy", "value": value})
    ingest.ingest({"events": events}, env.id, now=datetime(2024, 6, 1, tzinfo=UTC))
    connection = db.session.connection()
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999):
        metric = queries.MetricSpec("m", "mean", "buy", winsorize=q)
        sums = queries.metric_sums(connection, queries.Scope(env.id, "exp", ARMS), [metric], n_units=n,
                                   first_us=BASE)
        capped = np.minimum(values, np.quantile(values, q))
        assert (capped < values).any(), q  # the cap bites: the sums depend on its exact value
        total = sum(c["m"].sum_y for c in sums.values())
        squares = sum(c["m"].sum_y2 for c in sums.values())
        assert total == pytest.approx(float(capped.sum()), rel=1e-12), q
        assert squares == pytest.approx(float(capped @ capped), rel=1e-12), q


def test_no_exposures_gives_empty_statistics():
    env = db.session.query(Environment).filter_by(key="production").one()
    connection = db.session.connection()
    counts = queries.unit_counts(connection, queries.Scope(env.id, "nothing", ARMS))
    assert counts.units == {} and counts.multiple_exposures == 0 and counts.first_us is None
    sums = queries.metric_sums(connection, queries.Scope(env.id, "nothing", ARMS), METRICS, n_units=0,
                               first_us=None)
    assert sums == {}
