"""The console's experiment creation form names the audience, as the API does."""

import pytest

from .helpers import Console, token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
GERMANS = {"id": "de", "description": "Germany first", "serve": {"variation": "on"},
           "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}]}
FORM = {"name": "Checkout test", "flag": "checkout", "environment": "production",
        "engine": "frequentist", "alpha": "0.05", "target_mde": "5", "chance_to_win": "95",
        "correction": ""}
PRODUCTION = "/api/v1/flags/checkout/environments/production"


@pytest.fixture
def console(app, admin):
    flag = {"key": "checkout", "kind": "boolean", "variations": BOOL}
    assert admin.post("/api/v1/flags", json=flag).status_code == 201
    targeting = {"enabled": True, "off_variation": "off", "rules": [GERMANS],
                 "fallthrough": {"variation": "off"}}
    assert admin.put(PRODUCTION, json=targeting).status_code == 200
    browser = Console(app.test_client())
    browser.login(token("editor", "erin"))
    return browser


def rule_ids(admin):
    return [r["id"] for r in admin.get(PRODUCTION).json["rules"]]


def test_the_form_offers_the_flags_rules_and_places_the_experiment_where_asked(console, admin):
    page = console.get("/experiments/new?flag=checkout&environment=production")
    assert page.status_code == 200
    assert 'value="rule:de"' in console.page
    assert "The audience of rule de: Germany first" in console.page
    assert '<option value="last" selected>' in console.page  # the default: after the flag's rules

    response = console.post("/experiments/new",
                            {**FORM, "key": "on-germans", "audience": "rule:de"})
    assert response.status_code == 303, console.page[-2000:]
    assert rule_ids(admin) == ["experiment-on-germans", "de"]
    experiment = admin.get("/api/v1/experiments/on-germans").json
    assert experiment["audience"] == {"rule_id": "experiment-on-germans", "position": 0,
                                      "preceded_by": []}
    assert experiment["control"] == "off"

    response = console.post("/experiments/new", {**FORM, "key": "after-rules", "audience": "last"})
    assert response.status_code == 303
    console.get(response.headers["Location"])
    assert "after experiment-on-germans, de (their contexts do not enter it)" in console.page
    assert rule_ids(admin) == ["experiment-on-germans", "de", "experiment-after-rules"]


def test_a_rule_the_flag_does_not_have_is_refused_at_the_field(console, admin):
    response = console.post("/experiments/new", {**FORM, "key": "exp", "audience": "rule:nope"})
    assert response.status_code == 400
    assert "has no rule &#39;nope&#39;" in console.page or "has no rule 'nope'" in console.page
    assert 'value="rule:de"' in console.page  # the page now lists the rules it could name
    assert admin.get("/api/v1/experiments/exp").status_code == 404
    assert rule_ids(admin) == ["de"]
