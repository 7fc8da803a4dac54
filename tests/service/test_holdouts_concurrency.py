"""Holdouts under real races against the live gunicorn server (SQLite and PostgreSQL):
a targeting write naming a holdout and the holdout's delete or resize never both
succeed; 20 concurrent If-Match edits give one winner."""

from .support import at_once

ENV = "production"
ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def test_joining_and_deleting_a_holdout_never_both_succeed(live_admin):
    live_admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF})
    path = f"/api/v1/flags/checkout/environments/{ENV}"
    outcomes = set()
    for round_ in range(8):
        key = f"race-{round_}"
        assert live_admin.post("/api/v1/holdouts", json={"key": key, "environment": ENV, "percent": 5}).status == 201
        join, delete = at_once(lambda k=key: live_admin.patch(path, json={"holdout": k}),
                               lambda k=key: live_admin.delete(f"/api/v1/holdouts/{k}"))
        outcomes.add((join.status, delete.status))
        named = live_admin.get(path).json.get("holdout")
        exists = live_admin.get(f"/api/v1/holdouts/{key}").status == 200
        if join.status == 200:
            assert delete.status == 409 and named == key and exists
        else:
            assert (join.status, delete.status) == (400, 204) and named != key and not exists
        live_admin.patch(path, json={"holdout": None})
    assert outcomes <= {(200, 409), (400, 204)}


def test_joining_and_resizing_a_holdout_never_both_succeed(live_admin):
    live_admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF})
    path = f"/api/v1/flags/checkout/environments/{ENV}"
    for round_ in range(8):
        key = f"size-{round_}"
        assert live_admin.post("/api/v1/holdouts", json={"key": key, "environment": ENV, "percent": 5}).status == 201
        join, resize = at_once(lambda k=key: live_admin.patch(path, json={"holdout": k}),
                               lambda k=key: live_admin.patch(f"/api/v1/holdouts/{k}", json={"percent": 7}))
        assert join.status == 200  # joining is allowed whatever the size
        percent = live_admin.get(f"/api/v1/holdouts/{key}").json["percent"]
        # resized first (then joined at 7 %), or joined first (resize refused, still 5 %)
        assert (resize.status, percent) in ((200, 7.0), (409, 5.0)), (resize.status, percent)
        live_admin.patch(path, json={"holdout": None})


def test_concurrent_if_match_edits_have_one_winner(live_admin):
    assert live_admin.post("/api/v1/holdouts", json={"key": "h", "environment": ENV, "percent": 5}).status == 201
    edits = [lambda i=i: live_admin.patch("/api/v1/holdouts/h", json={"name": f"n{i}"}, headers={"If-Match": '"1"'})
             for i in range(20)]
    statuses = sorted(r.status for r in at_once(*edits))
    assert statuses == [200] + [412] * 19
    assert live_admin.get("/api/v1/holdouts/h").json["version"] == 2
