"""Spreadsheet formulas from end users come out neutralised in every CSV (OWASP CSV injection):
the results CSV (API and CLI) and the exposures CSV; numbers stay numbers."""

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from service.analysis.export import cell

START = datetime.now(UTC) - timedelta(days=1)
# The cases of the issue, and one per dangerous first character.
HOSTILE = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://evil","x")', "+1+cmd|' /C calc'!A0", "-2+3+cmd",
           "@SUM(1+1)*cmd", "\t=1+1", "\r=1+1"]


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def test_cell_neutralises_formulas_and_keeps_numbers():
    for text in HOSTILE:
        assert cell(text) == "'" + text
    assert [cell(v) for v in (-0.25, 3, 1e-300, None)] == ["-0.25", "3", "1e-300", ""]
    assert [cell(v) for v in ("-42", "+3.5", "-1.5e-3", "plain", "a=b")] == ["-42", "+3.5", "-1.5e-3", "plain",
                                                                            "a=b"]


@pytest.fixture
def hostile_experiment(editor, sdk):
    editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean",
                                       "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    editor.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    created = editor.post("/api/v1/experiments", json={
        "key": "exp", "flag": "checkout", "environment": "production", "primary_metric": "purchases",
        "dimensions": ["country", "=evil-dimension"]})
    assert created.status_code == 201, created.json
    assert editor.post("/api/v1/experiments/exp/start").status_code == 200
    events = []
    for i, text in enumerate(HOSTILE * 4):
        variation = "on" if i % 2 else "off"
        unit = f"{text}#{i}" if i >= len(HOSTILE) else text
        ts = START + timedelta(minutes=i)
        events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": iso(ts), "unit": unit, "experiment": "exp",
                       "variation": variation, "attributes": {"country": HOSTILE[i % len(HOSTILE)],
                                                              "=evil-dimension": "-1"}})
        events.append({"id": str(uuid.uuid4()), "type": "track", "ts": iso(ts + timedelta(minutes=1)), "unit": unit,
                       "event": "purchase"})
    response = sdk.post("/sdk/v1/events", json={"events": events})
    assert response.status_code == 202 and response.json["rejected"] == [], response.json
    return events


def dangerous(value: str) -> bool:
    return value[:1] in ("=", "+", "-", "@", "\t", "\r") and not value.lstrip("+-").replace(".", "", 1).isdigit()


def test_exposures_csv_is_neutralised(hostile_experiment, viewer):
    text = viewer.get("/api/v1/experiments/exp/exposures").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["unit", "variation", "first_exposed_at", "multiple_variations", "country",
                       "'=evil-dimension"]
    units = {row[0] for row in rows[1:]}
    assert "'=cmd|' /C calc'!A0" in units and "'\t=1+1" in units
    assert {row[4] for row in rows[1:]} == {"'" + h for h in HOSTILE}
    assert {row[5] for row in rows[1:]} == {"-1"}  # a number stays a number
    for row in rows:
        assert not any(dangerous(value) for value in row), row


def test_results_csv_is_neutralised_in_the_api_and_the_cli(hostile_experiment, viewer, app, tmp_path):
    text = viewer.get("/api/v1/experiments/exp/results?format=csv&dimension=country").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["dimension_value"] for r in rows if r["dimension"]} == {"'" + h for h in HOSTILE}
    for row in rows:
        assert not any(dangerous(value) for value in row.values()), row
        if row["abs_estimate"]:
            float(row["abs_estimate"])  # numbers still parse as numbers (negative ones too)
    runner = app.test_cli_runner()
    target = tmp_path / "results.csv"
    out = runner.invoke(args=["results", "export", "exp", "--format", "csv", "--dimension", "country",
                              "-o", str(target)])
    assert out.exit_code == 0, out.output
    assert target.read_bytes().decode() == text
    dimension = viewer.get("/api/v1/experiments/exp/results?format=csv&dimension=%3Devil-dimension")
    assert all(not dangerous(v) for row in csv.reader(io.StringIO(dimension.get_data(as_text=True))) for v in row)
