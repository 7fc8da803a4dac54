"""CSV exports: results (one row per metric, dimension value and variation) and first exposures.

Results CSV columns (SPEC section 6, in this order): ``metric, dimension,
dimension_value, variation, units, value, stddev, abs_estimate, abs_ci_low,
abs_ci_high, abs_p_value, rel_estimate, rel_ci_low, rel_ci_high,
rel_p_value, p_value_adjusted, chance_to_beat_control``, then ``risk``
(Bayesian expected loss). Empty cells stand
for null (control rows have no lift; frequentist results have no chance to
beat control); ``dimension`` and ``dimension_value`` are empty on the overall
rows. Numbers are written with full precision (``repr``), so the CSV parses
back to exactly the numbers of the JSON.

Exposures CSV columns: ``unit, variation, first_exposed_at`` (ISO 8601 UTC),
``multiple_variations`` (true when the unit saw more than one variation and
is excluded from the analysis), then one column per experiment dimension
(the values recorded with the first exposure).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from ..ingest import from_micros

RESULT_COLUMNS = ("metric", "dimension", "dimension_value", "variation", "units", "value", "stddev",
                  "abs_estimate", "abs_ci_low", "abs_ci_high", "abs_p_value", "rel_estimate", "rel_ci_low",
                  "rel_ci_high", "rel_p_value", "p_value_adjusted", "chance_to_beat_control", "risk")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _test_cells(test: dict | None) -> list:
    if test is None:
        return [None, None, None, None]
    return [test["estimate"], test["ci"][0], test["ci"][1], test["p_value"]]


def result_rows(results: dict) -> Iterator[list]:
    for entry in results["metrics"]:
        dimension = entry["dimension"]
        for v in entry["variations"]:
            yield [entry["metric"], dimension["name"] if dimension else None,
                   dimension["value"] if dimension else None, v["variation"], v["units"], v["value"], v["stddev"],
                   *_test_cells(v["absolute"]), *_test_cells(v["relative"]),
                   v["p_value_adjusted"], v["chance_to_beat_control"], v["risk"]]


def results_csv(results: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in result_rows(results):
        writer.writerow([_cell(c) for c in row])
    return out.getvalue()


def exposures_csv(rows: Iterable[tuple], dimensions: list[str], chunk_rows: int = 2000) -> Iterator[str]:
    """CSV text in chunks, from ``queries.first_exposures`` rows (never all in memory)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["unit", "variation", "first_exposed_at", "multiple_variations", *dimensions])
    pending = 1
    for unit, variation, first_us, seen, *dims in rows:
        at = from_micros(first_us).isoformat(timespec="microseconds").replace("+00:00", "Z")
        writer.writerow([unit, variation, at, "true" if seen > 1 else "false", *("" if d is None else d for d in dims)])
        pending += 1
        if pending >= chunk_rows:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            pending = 0
    if out.tell():
        yield out.getvalue()
