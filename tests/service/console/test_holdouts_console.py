"""Console pages of holdouts (docs/holdouts.md, docs/console.md): list and create, edit,
delete refused while used, the targeting editor's holdout selector, and the results
page (table and forest plot) on simulated data."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.domain import flags as flag_domain
from service.extensions import db
from service.models import AuditEntry

from ..test_holdouts import group_of
from .helpers import Console, signed_in

ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


@pytest.fixture
def console(app):
    return signed_in(app, "editor", "erin")


@pytest.fixture
def viewer_console(app):
    return signed_in(app, "viewer", "vic")


def audit(resource_type="holdout"):
    db.session.expire_all()
    return db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == resource_type)
                              .order_by(AuditEntry.id)).all()


def test_create_edit_and_delete_through_the_domain(console, admin):
    assert console.get("/holdouts").status_code == 200 and "No holdouts yet" in console.page
    response = console.post("/holdouts", {"key": "q3", "environment": "production", "name": "Q3",
                                          "percent": "2.345", "unit": "id"})
    assert response.status_code == 400 and re.search(r'id="f-percent"[^>]*aria-invalid="true"', console.page)
    assert audit() == []
    response = console.post("/holdouts", {"key": "q3", "environment": "production", "name": "Q3",
                                          "percent": "2.5", "unit": "id"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/holdouts/q3")
    console.get("/holdouts")
    assert "q3" in console.page and "2.5 %" in console.page

    console.get("/holdouts/q3")
    version = Console.version(console.page)
    assert console.post("/holdouts/q3", {"version": version, "name": "Q3 launches", "percent": "3",
                                         "unit": "id"}).status_code == 303
    assert admin.get("/api/v1/holdouts/q3").json["percent"] == 3.0
    stale = console.post("/holdouts/q3", {"version": version, "name": "stale", "percent": "3", "unit": "id"})
    assert stale.status_code == 409 and "Conflict" in console.page
    assert admin.get("/api/v1/holdouts/q3").json["name"] == "Q3 launches"

    admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF})
    admin.patch("/api/v1/flags/checkout/environments/production", json={"holdout": "q3"})
    console.get("/holdouts/q3")
    assert 'href="/flags/checkout"' in console.page
    version = Console.version(console.page)
    response = console.post("/holdouts/q3", {"version": version, "name": "Q3 launches", "percent": "5", "unit": "id"})
    assert response.status_code == 409 and "cannot change while flags use it" in console.page.lower()
    response = console.post("/holdouts/q3/delete", {"version": version})
    assert response.status_code == 303
    assert admin.get("/api/v1/holdouts/q3").status_code == 200  # refused: checkout names it
    assert audit() == ["create", "update"]


def test_viewers_see_no_write_controls_and_cannot_post(viewer_console, admin):
    admin.post("/api/v1/holdouts", json={"key": "h5", "environment": "production", "percent": 5})
    viewer_console.get("/holdouts")
    assert "New holdout" not in viewer_console.page
    viewer_console.get("/holdouts/h5")
    assert "Save holdout" not in viewer_console.page
    assert viewer_console.post("/holdouts", {"key": "x", "environment": "production", "percent": "5"}
                               ).status_code == 403


def test_targeting_editor_joins_and_leaves_a_holdout(console, admin):
    admin.post("/api/v1/holdouts", json={"key": "h5", "environment": "production", "percent": 5})
    admin.post("/api/v1/holdouts", json={"key": "staged", "environment": "staging", "percent": 5})
    admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF})
    console.get("/flags/checkout/targeting/production")
    assert 'name="holdout"' in console.page and "h5 (5 % held out)" in console.page
    assert "staged" not in console.page  # only this environment's holdouts are offered
    base = {"version": Console.version(console.page), "enabled": "true", "off_variation": "off",
            "fallthrough.kind": "variation", "fallthrough.variation": "on", "action": "save"}
    response = console.post("/flags/checkout/targeting/production", {**base, "holdout": "staged"})
    assert response.status_code == 400 and "belongs to environment" in console.page
    response = console.post("/flags/checkout/targeting/production", {**base, "holdout": "h5"})
    assert response.status_code == 303
    assert flag_domain.get_targeting("checkout", "production")[1]["holdout"] == "h5"
    console.get("/flags/checkout")
    assert "holdout h5" in console.page
    console.get("/flags/checkout/targeting/production")
    response = console.post("/flags/checkout/targeting/production",
                            {**base, "version": Console.version(console.page), "holdout": ""})
    assert response.status_code == 303
    db.session.expire_all()
    assert "holdout" not in flag_domain.get_targeting("checkout", "production")[1]


def test_results_page_shows_table_and_forest_plot(console, admin, sdk):
    admin.post("/api/v1/holdouts", json={"key": "h10", "environment": "production", "percent": 10})
    admin.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    admin.post("/api/v1/metrics", json={"key": "orders", "event": "purchase", "type": "count"})
    assert console.get("/holdouts/h10/results").status_code == 200 and "Choose the metrics" in console.page
    first = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    later = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    events = []
    for i in range(3000):
        unit, group = f"u{i}", group_of("h10", f"u{i}", 10)
        if group is None:
            continue
        events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": first, "unit": unit,
                       "experiment": "holdout:h10", "variation": group})
        if i % (2 if group == "measured" else 4) == 0:
            events.append({"id": str(uuid.uuid4()), "type": "track", "ts": later, "unit": unit, "event": "purchase"})
    assert sdk.post("/sdk/v1/events", json={"events": events}).status_code == 202
    response = console.get("/holdouts/h10/results?metric=purchases&metric=orders&engine=frequentist")
    assert response.status_code == 200
    page = console.page
    assert page.count("<table") == 2 and "held out" in page and "measured" in page
    assert '<svg' in page and 'role="img"' in page and "Cumulative relative lift" in page
    assert "winner" in page  # 50 % vs 25 % conversion over ~600 units
    csv = console.client.get("/holdouts/h10/results.csv?metric=purchases&metric=orders")
    assert csv.status_code == 200 and csv.get_data(as_text=True).count("\n") == 5
    bad = console.get("/holdouts/h10/results?metric=ghost")
    assert bad.status_code == 400 and "ghost" in console.page
