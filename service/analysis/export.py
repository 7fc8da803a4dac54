"""CSV exports: results (one row per metric, dimension value and variation) and first exposures.

Results CSV columns (docs/api.md and docs/analysis.md, in this order): ``metric, dimension,
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

Lines end with CRLF (RFC 4180). Every cell goes through :func:`cell`, the one CSV cell writer (also used by
``flask results export``): unit ids, attribute values and other text come
from product code and its users, so text that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return)
is prefixed with ``'``, as OWASP's CSV-injection guidance says. Numbers,
and text that is just a number (``-3``, ``+1.5e3``), are written as they are.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator

from ..ingest import from_micros

RESULT_COLUMNS = ("metric", "dimension", "dimension_value", "variation", "units", "value", "stddev",
                  "abs_estimate", "abs_ci_low", "abs_ci_high", "abs_p_value", "rel_estimate", "rel_ci_low",
                  "rel_ci_high", "rel_p_value", "p_value_adjusted", "chance_to_beat_control", "risk")


# RFC 4180 line ends: with "\n" alone, Python's csv writer would leave a cell
# holding a carriage return unquoted, and the row would break in two.
LINE_END = "\r\n"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?").fullmatch


def cell(value) -> str:
    """One CSV cell: empty for None, full precision for floats, text neutralised against formula injection."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER(text):
        return "'" + text
    return text


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
    writer = csv.writer(out, lineterminator=LINE_END)
    writer.writerow(RESULT_COLUMNS)  # constants: nothing to neutralise
    for row in result_rows(results):
        writer.writerow([cell(c) for c in row])
    return out.getvalue()


def exposures_csv(rows: Iterable[tuple], dimensions: list[str], chunk_rows: int = 2000) -> Iterator[str]:
    """CSV text in chunks, from ``queries.first_exposures`` rows (never all in memory)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=LINE_END)
    writer.writerow(["unit", "variation", "first_exposed_at", "multiple_variations", *(cell(d) for d in dimensions)])
    pending = 1
    for unit, variation, first_us, seen, *dims in rows:
        at = from_micros(first_us).isoformat(timespec="microseconds").replace("+00:00", "Z")
        writer.writerow([cell(unit), cell(variation), at, "true" if seen > 1 else "false", *(cell(d) for d in dims)])
        pending += 1
        if pending >= chunk_rows:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            pending = 0
    if out.tell():
        yield out.getvalue()
