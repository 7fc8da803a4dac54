"""The admin API's write paths against the live gunicorn server, with generated input.

hypothesis builds targeting and segments from the grammar of docs/evaluation.md
(every op with values of the right kind, rules, targets, prerequisites,
rollouts): each valid one is PUT/POSTed and must read back equal (absent
optional lists as empty lists, a missing rule description as ""; conditions
exactly as written). Each invalid one (a valid one with one defect) must
answer 400 with the JSON error shape and change nothing: same version, same
content, no row, no audit entry. Deterministic (derandomize) so CI is
reproducible; a few hundred examples in all."""

import copy
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain import limits

from .support import audit_count

VARIATIONS = ["a", "b", "c"]
SEGMENTS = ["beta", "staff"]
PATH = "/api/v1/flags/subject/environments/production"
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# ---------------------------------------------------------------- the grammar

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12)
keys = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,15}\Z", fullmatch=True)
numbers = st.one_of(st.integers(-10**15, 10**15), st.floats(allow_nan=False, allow_infinity=False, width=64))
scalars = st.one_of(text, numbers, st.booleans())
versions = st.builds(lambda v, major, minor, patch, pre: f"{v}{major}.{minor}.{patch}{pre}",
                     st.sampled_from(["", "v"]), st.integers(0, 30), st.integers(0, 30), st.integers(0, 30),
                     st.sampled_from(["", "-beta.1", "-rc.2+build.7", "+sha.5114f85"]))
instants = st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01", "2024-05-01t12:00:00.5+02:00",
                            "2030-01-01T00:00:00-05:30", 1714564800, 1714564800.25])
patterns = st.sampled_from(["^pro", "er$", "a[bc]d", "x{2}", "foo|bar", "^[0-9]{3}-[0-9]{4}$"])


def condition(op, values, with_attribute=True):
    return st.fixed_dictionaries(
        {"op": st.just(op), **({"attribute": names} if with_attribute else {}), **({} if values is None
                                                                                   else {"values": values})},
        optional={"negate": st.booleans()})


def conditions_for(allow_segments: bool):
    options = [
        condition("in", st.lists(scalars, min_size=1, max_size=4)),
        *(condition(op, st.lists(text, min_size=1, max_size=3)) for op in ("contains", "starts_with", "ends_with")),
        condition("matches", st.lists(patterns, min_size=1, max_size=2)),
        *(condition(op, st.lists(numbers, min_size=1, max_size=1)) for op in ("gt", "gte", "lt", "lte")),
        *(condition(op, st.lists(versions, min_size=1, max_size=1))
          for op in ("semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte")),
        *(condition(op, st.lists(instants, min_size=1, max_size=1)) for op in ("before", "after")),
        condition("exists", None),  # values absent: must read back absent
        condition("exists", st.just([])),
    ]
    if allow_segments:
        options.append(condition("in_segment", st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2,
                                                        unique=True), with_attribute=False))
    return st.one_of(options)


@st.composite
def rollouts(draw):
    chosen = draw(st.lists(st.sampled_from(VARIATIONS), min_size=1, max_size=3, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 10000), min_size=len(chosen) - 1, max_size=len(chosen) - 1)))
    bounds = [0, *cuts, 10000]
    rollout = {"weights": [[v, bounds[i + 1] - bounds[i]] for i, v in enumerate(chosen)]}
    rollout.update(draw(st.fixed_dictionaries({}, optional={"bucket_by": names, "salt": text})))
    return rollout


serves = st.one_of(st.builds(lambda v: {"variation": v}, st.sampled_from(VARIATIONS)),
                   st.builds(lambda r: {"rollout": r}, rollouts()))


@st.composite
def targets(draw):
    units = draw(st.lists(names, max_size=8, unique=True))
    chosen = draw(st.lists(st.sampled_from(VARIATIONS), max_size=3, unique=True))
    if not chosen:
        return []
    split = sorted(draw(st.lists(st.integers(0, len(units)), min_size=len(chosen) - 1, max_size=len(chosen) - 1)))
    bounds = [0, *split, len(units)]
    return [{"variation": v, "values": units[bounds[i]:bounds[i + 1]]} for i, v in enumerate(chosen)]


@st.composite
def rules(draw):
    ids = draw(st.lists(keys, max_size=4, unique=True))
    out = []
    for rule_id in ids:
        rule = {"id": rule_id, "conditions": draw(st.lists(conditions_for(True), max_size=3)),
                "serve": draw(serves)}
        rule.update(draw(st.fixed_dictionaries({}, optional={"description": text})))
        out.append(rule)
    return out


valid_targeting = st.fixed_dictionaries(
    {"enabled": st.booleans(), "off_variation": st.sampled_from(VARIATIONS), "fallthrough": serves},
    optional={"rules": rules(), "targets": targets(),
              "prerequisites": st.lists(st.builds(lambda v: {"flag": "other", "variation": v},
                                                  st.sampled_from(["on", "off"])), max_size=1)})


def expected_targeting(targeting: dict) -> dict:
    out = {"prerequisites": [], "targets": [], "rules": [], **copy.deepcopy(targeting)}
    for rule in out["rules"]:
        rule.setdefault("description", "")
    return out


def _with_rule(t, condition):
    return {**t, "rules": [*(t.get("rules") or []), {"id": "zz-bad", "conditions": [condition],
                                                     "serve": {"variation": "a"}}]}


TARGETING_DEFECTS = {
    "unknown op": lambda t: _with_rule(t, {"attribute": "x", "op": "equals", "values": ["1"]}),
    "no values": lambda t: _with_rule(t, {"attribute": "x", "op": "in"}),
    "empty values": lambda t: _with_rule(t, {"attribute": "x", "op": "contains", "values": []}),
    "two numbers": lambda t: _with_rule(t, {"attribute": "x", "op": "gt", "values": [1, 2]}),
    "string for gt": lambda t: _with_rule(t, {"attribute": "x", "op": "lte", "values": ["1"]}),
    "bad version": lambda t: _with_rule(t, {"attribute": "x", "op": "semver_gt", "values": ["1.02.3"]}),
    "bad date": lambda t: _with_rule(t, {"attribute": "x", "op": "before", "values": ["2024-13-01"]}),
    "digits are not a date": lambda t: _with_rule(t, {"attribute": "x", "op": "after", "values": ["1714564800"]}),
    "bad pattern": lambda t: _with_rule(t, {"attribute": "x", "op": "matches", "values": ["("]}),
    "exists with values": lambda t: _with_rule(t, {"attribute": "x", "op": "exists", "values": ["x"]}),
    "negate not boolean": lambda t: _with_rule(t, {"attribute": "x", "op": "exists", "negate": "yes"}),
    "unknown segment": lambda t: _with_rule(t, {"op": "in_segment", "values": ["nope"]}),
    "no attribute": lambda t: _with_rule(t, {"op": "in", "values": ["x"]}),
    "nul in attribute": lambda t: _with_rule(t, {"attribute": "x\x00", "op": "exists"}),
    "too many values": lambda t: _with_rule(t, {"attribute": "x", "op": "in",
                                                "values": list(range(limits.VALUES_PER_CONDITION + 1))}),
    "unknown variation": lambda t: {**t, "fallthrough": {"variation": "zzz"}},
    "weights not 10000": lambda t: {**t, "fallthrough": {"rollout": {"weights": [["a", 5000], ["b", 4999]]}}},
    "weights as a dict": lambda t: {**t, "fallthrough": {"rollout": {"weights": {"a": 10000}}}},
    "two serves": lambda t: {**t, "fallthrough": {"variation": "a", "experiment": "x"}},
    "unknown experiment": lambda t: {**t, "fallthrough": {"experiment": "nope"}},
    "no fallthrough": lambda t: {k: v for k, v in t.items() if k != "fallthrough"},
    "enabled as text": lambda t: {**t, "enabled": "true"},
    "unknown field": lambda t: {**t, "colour": "red"},
    "duplicate rule id": lambda t: {**t, "rules": [{"id": "same", "serve": {"variation": "a"}}] * 2},
    "unit in two targets": lambda t: {**t, "targets": [{"variation": "a", "values": ["u"]},
                                                       {"variation": "b", "values": ["u"]}]},
    "self prerequisite": lambda t: {**t, "prerequisites": [{"flag": "subject", "variation": "a"}]},
    "unknown prerequisite variation": lambda t: {**t, "prerequisites": [{"flag": "other", "variation": "x"}]},
}


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def world(live_admin):
    for key, kind, variations in (("subject", "string", [{"key": v, "value": v} for v in VARIATIONS]),
                                  ("other", "boolean", [{"key": "on", "value": True},
                                                        {"key": "off", "value": False}])):
        response = live_admin.post("/api/v1/flags", json={"key": key, "kind": kind, "variations": variations})
        assert response.status == 201, response.json
    for key in SEGMENTS:
        assert live_admin.post("/api/v1/segments", json={"key": key}).status == 201
    return live_admin


def assert_error_shape(response, status=400):
    assert response.status == status, (response.status, response.body[:500])
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["details"], dict) and body["error"]["details"], body


# ---------------------------------------------------------------- flag targeting

@settings(max_examples=150, **SETTINGS)
@given(targeting=valid_targeting)
def test_valid_targeting_reads_back_equal(world, targeting):
    before = int(world.get("/api/v1/flags/subject").header("ETag").strip('"'))
    put = world.put(PATH, json=targeting)
    assert put.status == 200, put.json
    expected = expected_targeting(targeting)
    assert put.json == expected
    assert put.header("ETag") == f'"{before + 1}"'
    assert world.get(PATH).json == expected
    assert world.get("/api/v1/flags/subject").json["environments"]["production"] == expected


@settings(max_examples=100, **SETTINGS)
@given(targeting=valid_targeting, defect=st.sampled_from(sorted(TARGETING_DEFECTS)))
def test_invalid_targeting_is_400_and_changes_nothing(world, targeting, defect):
    current = world.get(PATH)
    audits = audit_count()
    response = world.put(PATH, json=TARGETING_DEFECTS[defect](targeting))
    assert_error_shape(response)
    after = world.get(PATH)
    assert (after.json, after.header("ETag")) == (current.json, current.header("ETag")), defect
    assert audit_count() == audits, defect


# ---------------------------------------------------------------- segments

_counter = itertools.count()

valid_segment = st.fixed_dictionaries(
    {},
    optional={"name": names, "description": text, "tags": st.lists(names, max_size=3),
              "included": st.lists(names, max_size=5), "excluded": st.lists(names, max_size=5),
              "rules": st.lists(st.lists(conditions_for(False), max_size=3), max_size=3)})


def expected_segment(key: str, body: dict) -> dict:
    return {"key": key, "name": key, "description": "", "tags": [], "included": [], "excluded": [], "rules": [],
            **copy.deepcopy(body)}


SEGMENT_DEFECTS = {
    "key ends in a newline": lambda s: {**s, "key": s["key"] + "\n"},
    "upper-case key": lambda s: {**s, "key": "Beta"},
    "in_segment in a segment": lambda s: {**s, "rules": [[{"op": "in_segment", "values": ["beta"]}]]},
    "unknown op": lambda s: {**s, "rules": [[{"attribute": "x", "op": "like", "values": ["1"]}]]},
    "rule not a list": lambda s: {**s, "rules": [{"attribute": "x", "op": "exists"}]},
    "empty unit id": lambda s: {**s, "included": [""]},
    "nul in a unit id": lambda s: {**s, "excluded": ["u\x00"]},
    "too many units": lambda s: {**s, "included": [f"u{i}" for i in range(limits.SEGMENT_UNITS + 1)]},
    "unknown field": lambda s: {**s, "members": []},
    "name too long": lambda s: {**s, "name": "n" * (limits.NAME_CHARS + 1)},
}


@settings(max_examples=80, **SETTINGS)
@given(body=valid_segment, changes=valid_segment)
def test_valid_segments_read_back_equal(live_admin, body, changes):
    key = f"seg-{next(_counter)}"
    created = live_admin.post("/api/v1/segments", json={"key": key, **body})
    assert created.status == 201, created.json
    expected = expected_segment(key, body)
    got = live_admin.get(f"/api/v1/segments/{key}").json
    assert {k: got[k] for k in expected} == expected
    assert {k: created.json[k] for k in expected} == expected
    patched = live_admin.patch(f"/api/v1/segments/{key}", json=changes, headers={"If-Match": '"1"'})
    assert patched.status == 200, patched.json
    expected.update(copy.deepcopy(changes))
    got = live_admin.get(f"/api/v1/segments/{key}").json
    assert {k: got[k] for k in expected} == expected and got["version"] == 2


@settings(max_examples=60, **SETTINGS)
@given(body=valid_segment, defect=st.sampled_from(sorted(SEGMENT_DEFECTS)))
def test_invalid_segments_are_400_and_store_nothing(live_admin, body, defect):
    key = f"bad-{next(_counter)}"
    audits = audit_count()
    response = live_admin.post("/api/v1/segments", json=SEGMENT_DEFECTS[defect]({"key": key, **body}))
    assert_error_shape(response)
    assert live_admin.get(f"/api/v1/segments/{key}").status == 404
    assert live_admin.get("/api/v1/segments?limit=500").json["items"] == []
    assert audit_count() == audits, defect
