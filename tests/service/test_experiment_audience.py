"""An experiment's audience is the one its creation named, and the response says which it is.

A PM's flag already has a rule (Germans get the new checkout) before anyone
thinks of an experiment. Through the live server (gunicorn, shared test
database) the PM creates experiments the way the API guide shows, once per
audience: on the German rule's audience, after the existing rules (the
default), and before them. Real SDK clients then evaluate German and French
users, report their exposures, and the experiment's results (broken down by
the recorded country) show exactly the audience that was named. The rest of
the file checks the placements, the errors and the defaults through the
in-process client.
"""

import pytest

from pitcrew import Client

from .support import audit_count, make_sdk_key

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
GERMANS = {"id": "de", "description": "Germany first", "serve": {"variation": "on"},
           "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}]}
USERS = 200
FLAGS = "/api/v1/flags"
PRODUCTION = f"{FLAGS}/checkout/environments/production"


def audience(rule_id: str, position: int, *preceded_by: str) -> dict:
    return {"rule_id": rule_id, "position": position, "preceded_by": list(preceded_by)}


def status(response) -> int:
    """The status of a Flask test response or a live one."""
    return response.status_code if hasattr(response, "status_code") else response.status


def flag_with_country_rule(client, key: str, fallthrough: dict | None = None):
    response = client.post("/api/v1/flags",
                           json={"key": key, "kind": "boolean", "variations": BOOL})
    assert status(response) == 201, response.json
    body = {"enabled": True, "off_variation": "off", "rules": [GERMANS],
            "fallthrough": fallthrough or {"variation": "off"}}
    response = client.put(f"/api/v1/flags/{key}/environments/production", json=body)
    assert status(response) == 200, response.json


def users():
    """USERS Germans and USERS French users, alternating."""
    return [{"id": f"user-{i}", "country": "DE" if i % 2 == 0 else "FR"} for i in range(2 * USERS)]


def test_an_experiment_enrols_the_audience_its_creation_named(live_admin, live_server):
    expected = {
        # flag: (audience in the request, countries the experiment takes, what the others get)
        "on-germans": ({"rule_id": "de"}, {"DE"}, {"FR": "off"}),
        "after-rules": (None, {"FR"}, {"DE": "on"}),
        "before-rules": ({"position": "first"}, {"DE", "FR"}, {}),
    }
    metric = {"key": "buys", "event": "buy", "type": "conversion"}
    assert live_admin.post("/api/v1/metrics", json=metric).status == 201
    for flag, (placement, _, _) in expected.items():
        flag_with_country_rule(live_admin, flag)
        body = {"key": f"{flag}-test", "name": "Checkout redesign", "flag": flag,
                "environment": "production", "primary_metric": "buys", "dimensions": ["country"]}
        if placement is not None:
            body["audience"] = placement
        created = live_admin.post("/api/v1/experiments", json=body)
        assert created.status == 201, created.json
        assert created.json["control"] == "off"  # the flag's off variation: what users got before
        assert live_admin.post(f"/api/v1/experiments/{flag}-test/start").status == 200

    # Not silently: the response names the experiment's rule and the rules that come first.
    listed = live_admin.get("/api/v1/experiments").json["items"]
    assert {e["flag"]: e["audience"] for e in listed} == {
        "on-germans": audience("experiment-on-germans-test", 0),
        "after-rules": audience("experiment-after-rules-test", 1, "de"),
        "before-rules": audience("experiment-before-rules-test", 0),
    }
    rules = live_admin.get("/api/v1/flags/on-germans/environments/production").json["rules"]
    assert [r["id"] for r in rules] == ["experiment-on-germans-test", "de"]
    assert rules[0]["conditions"] == GERMANS["conditions"]  # the German rule's audience

    client = Client(live_server.url, make_sdk_key("production"), poll_interval=1,
                    flush_interval=0.2)
    try:
        assert client.wait_until_ready(10)
        for flag, (_, enrolled, others) in expected.items():
            for context in users():
                detail = client.variation_detail(flag, context, False)
                if context["country"] in enrolled:
                    assert detail.in_experiment, (flag, context, detail)
                    assert detail.experiment == f"{flag}-test", (flag, context, detail)
                else:
                    assert not detail.in_experiment, (flag, context, detail)
                    assert detail.variation == others[context["country"]], (flag, context, detail)
        assert client.flush(15)
        assert client.stats()["failed"] == 0
    finally:
        client.close()

    for flag, (_, enrolled, _) in expected.items():
        results = live_admin.get(f"/api/v1/experiments/{flag}-test/results?dimension=country").json
        by_country = {e["dimension"]["value"]: sum(v["units"] for v in e["variations"])
                      for e in results["metrics"] if e["dimension"]}
        assert by_country == dict.fromkeys(enrolled, USERS), (flag, by_country)
        assert sum(results["units"].values()) == USERS * len(enrolled)


def experiment(client, key="exp", flag="checkout", **extra):
    body = {"key": key, "flag": flag, "environment": "production", **extra}
    return client.post("/api/v1/experiments", json=body)


def rule_ids(client, flag="checkout"):
    return [r["id"] for r in client.get(f"{FLAGS}/{flag}/environments/production").json["rules"]]


@pytest.fixture
def flag(editor):
    rollout = {"rollout": {"weights": [["on", 1000], ["off", 9000]]}}
    flag_with_country_rule(editor, "checkout", fallthrough=rollout)
    return editor


def test_placements_and_what_the_targeting_shows(flag, viewer):
    last = experiment(flag, "by-default")
    assert last.status_code == 201, last.json
    assert last.json["audience"] == audience("experiment-by-default", 1, "de")
    first = experiment(flag, "first", audience={"position": "first"})
    assert first.json["audience"] == audience("experiment-first", 0)
    fallthrough = experiment(flag, "fall", audience={"rule_id": "fallthrough"})
    assert fallthrough.json["audience"]["position"] == 3  # after every rule, like last
    on_rule = experiment(flag, "on-de", audience={"rule_id": "de"})
    assert on_rule.json["audience"] == audience("experiment-on-de", 1, "experiment-first")
    assert rule_ids(viewer) == ["experiment-first", "experiment-on-de", "de",
                                "experiment-by-default", "experiment-fall"]
    # The audience is read from the targeting as it is now: a targeting write moves or removes it.
    targeting = viewer.get(PRODUCTION).json
    targeting["rules"] = [r for r in targeting["rules"] if r["id"] != "experiment-first"]
    targeting["fallthrough"] = {"experiment": "first"}
    assert flag.put(PRODUCTION, json=targeting).status_code == 200
    assert viewer.get("/api/v1/experiments/first").json["audience"] == audience(
        "fallthrough", 4, "experiment-on-de", "de", "experiment-by-default", "experiment-fall")
    assert viewer.get("/api/v1/experiments/on-de").json["audience"]["position"] == 0
    targeting["rules"] = [r for r in targeting["rules"] if r["id"] != "experiment-fall"]
    assert flag.put(PRODUCTION, json=targeting).status_code == 200
    assert viewer.get("/api/v1/experiments/fall").json["audience"] is None


def test_a_draft_on_a_rules_audience_changes_nobodys_variation(flag, sdk):
    """Until it starts, the experiment's rule is skipped: Germans keep the German rule's serve."""
    assert experiment(flag, "on-de", audience={"rule_id": "de"}).status_code == 201
    german = {"context": {"id": "u1", "country": "DE"}, "flags": ["checkout"]}
    served = sdk.post("/sdk/v1/evaluate", json=german).json["flags"]["checkout"]
    assert served["rule_id"] == "de" and served["value"] is True


@pytest.mark.parametrize("audience, field", [
    ({"rule_id": "nope"}, "audience.rule_id"),
    ({"rule_id": "de", "position": "first"}, "audience"),
    ({}, "audience"),
    ({"position": "middle"}, "audience.position"),
    ({"position": 0}, "audience.position"),
    ({"rule_id": "de", "preceded_by": []}, "audience.preceded_by"),
])
def test_a_bad_audience_is_400_naming_it_and_changes_nothing(flag, viewer, audience, field):
    before = (audit_count(), viewer.get("/api/v1/flags/checkout").json["version"])
    response = experiment(flag, "exp", audience=audience)
    assert response.status_code == 400, response.json
    assert field in response.json["error"]["details"], response.json
    assert viewer.get("/api/v1/experiments/exp").status_code == 404
    assert (audit_count(), viewer.get("/api/v1/flags/checkout").json["version"]) == before
    if audience == {"rule_id": "nope"}:
        assert "'de'" in response.json["error"]["details"][field][0]  # the rules it could name


def test_the_experiments_rule_id_is_free_and_short_enough_to_write_back(flag, viewer):
    taken = viewer.get(PRODUCTION).json
    taken["rules"].append({"id": "experiment-exp", "conditions": [], "serve": {"variation": "on"}})
    assert flag.put(PRODUCTION, json=taken).status_code == 200
    assert experiment(flag, "exp").json["audience"]["rule_id"] == "experiment-exp-2"
    long_key = "k" * 100
    assert experiment(flag, long_key).status_code == 201
    ids = rule_ids(viewer)
    assert all(len(i) <= 100 for i in ids) and len(set(ids)) == len(ids)
    # GET then PUT of the targeting round-trips (the schema allows 100-character rule ids).
    current = viewer.get(PRODUCTION).json
    assert flag.put(PRODUCTION, json=current).status_code == 200
