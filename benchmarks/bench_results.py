"""Results computation at scale on PostgreSQL: time and peak memory.

Run: .venv/bin/python benchmarks/bench_results.py [--scales 100000:500000,1000000:5000000]

For each scale ``units:events``: the public schema of ``BENCH_DATABASE_URL``
(default postgresql://postgres@127.0.0.1:5432/pitcrew_bench) is dropped and
migrated, and the events are generated inside PostgreSQL with
``generate_series`` (not through HTTP): ``units`` exposed units (each with
1-2 exposure events, 1 % of units exposed to both variations, a ``country``
dimension) and ``events`` track events spread over 1.1 x ``units`` units
(so some tracked units are never exposed) and three event keys. The
experiment has 3 metrics: conversion (purchase), mean revenue (purchase
values, winsorized at the 99th percentile) and count (page_view, 72-hour
window). The table is VACUUM ANALYZEd, as autovacuum would have done.

Then ``GET /results`` is computed in-process through the same domain call
the endpoint makes (``service.domain.experiments.results``), ``--repeats``
times; the table shows the median wall time, and the peak memory of the
Python process: ``tracemalloc`` peak of Python allocations during one
computation and the process's peak RSS growth (``ru_maxrss``) over the run.
Both are flat in the number of events: only per-variation sums reach Python.
Also ``dimension=country`` and ``cuped=true`` variants at the largest scale.

Bounded in time: generation takes about 1 minute per million events on a
2-core machine; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_ingest import DEFAULT_PG  # noqa: E402

DAY_US = 86_400_000_000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(app, units: int, events: int) -> float:
    """Fill the events table in SQL; returns seconds taken."""
    import sqlalchemy as sa

    from service.domain import Actor
    from service.domain import experiments as experiment_domain
    from service.domain import flags as flag_domain
    from service.domain import metrics as metric_domain
    from service.extensions import db
    from service.models import Environment

    actor = Actor("bench")
    with app.app_context():
        env = db.session.scalars(sa.select(Environment).where(Environment.key == "production")).one()
        flag_domain.create(actor, {"key": "checkout", "kind": "boolean", "variations": [
            {"key": "on", "value": True}, {"key": "off", "value": False}]})
        metric_domain.create(actor, {"key": "purchases", "event": "purchase", "type": "conversion"})
        metric_domain.create(actor, {"key": "revenue", "event": "purchase", "type": "mean", "winsorize": 0.99})
        metric_domain.create(actor, {"key": "page-views", "event": "page_view", "type": "count", "window_hours": 72})
        experiment_domain.create(actor, {
            "key": "bench", "flag": "checkout", "environment": "production",
            "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
            "control": "off", "primary_metric": "purchases", "secondary_metrics": ["revenue"],
            "guardrail_metrics": ["page-views"], "dimensions": ["country"]})
        experiment_domain.start(actor, "bench")
        t0_us = int((time.time() - 30 * 86400) * 1_000_000)
        started = time.perf_counter()
        with db.engine.begin() as conn:
            params = {"env": env.id, "t0": t0_us, "units": units, "events": events, "day": DAY_US}
            # First exposures: one per unit; variation by parity; 1 % of units also see the other one.
            conn.execute(sa.text("""
                INSERT INTO events (client_id, environment_id, type, ts, unit, unit_type, experiment, variation,
                                    attributes)
                SELECT gen_random_uuid(), :env, 'exposure', :t0 + (random() * 14 * :day)::bigint, 'u' || g, 'id',
                       'bench', CASE WHEN g % 2 = 0 THEN 'off' ELSE 'on' END,
                       json_build_object('country', (ARRAY['DE', 'FR', 'US', 'GB'])[1 + g % 4])
                FROM generate_series(1, :units) AS g"""), params)
            # Repeat exposures (same variation) for a fifth of units, the other variation for 1 %.
            conn.execute(sa.text("""
                INSERT INTO events (client_id, environment_id, type, ts, unit, unit_type, experiment, variation)
                SELECT gen_random_uuid(), :env, 'exposure', :t0 + (random() * 15 * :day)::bigint, 'u' || g, 'id',
                       'bench', CASE WHEN (g % 2 = 0) = (g % 100 <> 7) THEN 'off' ELSE 'on' END
                FROM generate_series(1, :units) AS g WHERE g % 5 = 0 OR g % 100 = 7"""), params)
            # Track events over 1.1 x units units, 3 keys; purchases carry a value.
            conn.execute(sa.text("""
                INSERT INTO events (client_id, environment_id, type, ts, unit, unit_type, event, value)
                SELECT gen_random_uuid(), :env, 'track', :t0 + (random() * 21 * :day)::bigint,
                       'u' || (1 + (random() * (:units * 1.1))::int), 'id', k.event,
                       CASE WHEN k.event = 'purchase' THEN round((random() * 100)::numeric, 2) END
                FROM (SELECT g, CASE WHEN r < 0.2 THEN 'purchase' WHEN r < 0.8 THEN 'page_view'
                                     ELSE 'add_to_cart' END AS event
                      FROM (SELECT g, random() AS r FROM generate_series(1, :events) AS g) s) k"""), params)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE events"))
        return time.perf_counter() - started


def measure(app, repeats: int, **options) -> dict:
    from service.domain import experiments as experiment_domain
    from service.extensions import db

    times, peaks = [], []
    with app.app_context():
        experiment_domain.results("bench", metric="purchases")  # warm-up: imports, connection, plans
        db.session.rollback()
    rss_before = rss_mb()
    with app.app_context():
        for _ in range(repeats):
            tracemalloc.start()
            t = time.perf_counter()
            document = experiment_domain.results("bench", **options)
            times.append(time.perf_counter() - t)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
            db.session.rollback()
    return {"seconds": statistics.median(times), "py_peak_mb": max(peaks), "rss_growth_mb": rss_mb() - rss_before,
            "units": sum(document["units"].values()), "multiple": document["multiple_exposures"],
            "rows": sum(len(m["variations"]) for m in document["metrics"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="100000:500000,1000000:5000000",
                        help="comma-separated units:events pairs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from benchmarks.bench_ingest import prepare_database
    from service import create_app
    from service.config import normalise_database_url

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)
    rows = []
    scales = [tuple(int(x) for x in s.split(":")) for s in args.scales.split(",")]
    for i, (units, events) in enumerate(scales):
        prepare_database(url)
        app = create_app({"SQLALCHEMY_DATABASE_URI": normalise_database_url(url)})
        load_s = generate(app, units, events)
        variants = [("3 metrics", {})]
        if i == len(scales) - 1:
            variants += [("3 metrics, dimension=country", {"dimension": "country"}),
                         ("3 metrics, cuped=true", {"cuped": True})]
        for label, options in variants:
            result = measure(app, args.repeats, **options)
            rows.append((units, events, label, load_s, result))
        with app.app_context():
            from service.extensions import db

            db.engine.dispose()
    command = "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    print(f"\n`{command}` on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"PostgreSQL); median of {args.repeats} computations\n")
    print("| exposed units | track events | results | seconds | Python peak (tracemalloc) MB | "
          "process RSS growth MB | units analysed | multiple exposures |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for units, events, label, _load, r in rows:
        print(f"| {units:,} | {events:,} | {label} | {r['seconds']:.2f} | {r['py_peak_mb']:.2f} | "
              f"{r['rss_growth_mb']:.1f} | {r['units']:,} | {r['multiple']:,} |")
    print("\nData generation (SQL generate_series + VACUUM ANALYZE): "
          + ", ".join(f"{u:,}/{e:,}: {load:.0f} s" for u, e, label, load, _ in rows if label == "3 metrics"))


if __name__ == "__main__":
    main()
