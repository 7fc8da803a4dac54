"""Holdouts in the engine and the SDK (docs/holdouts.md): sizes over many units, the
step's place in the evaluation order, the exposures a client records, track units,
OpenFeature, and that flags without a holdout compile to the closures they had."""

from __future__ import annotations

import hashlib

import pytest

from pitcrew import Client
from pitcrew.evaluation import Reason, compile_ruleset, evaluate, validate_targeting
from pitcrew.evaluation.bucketing import percent_buckets
from tests.sdk.support import StubService, bool_flag, experiment, ruleset, stub_client, wait_for

N = 100_000


def bucket(salt: str, unit: str) -> int:
    return int(hashlib.sha256(f"{salt}.{unit}".encode()).hexdigest()[:16], 16) * 10000 // 2**64


def with_holdout(flag, key, **targeting):
    flag["targeting"].update(holdout=key, **targeting)
    return flag


def holdout_ruleset(percent=5, unit="id", flags=None, experiments=()):
    rules = ruleset(flags or [with_holdout(bool_flag("f"), "h")], experiments)
    rules["holdouts"] = {"h": {"key": "h", "percent": percent, "unit": unit}}
    return rules


@pytest.mark.parametrize("percent", [0.5, 5, 10])
def test_held_out_and_measured_shares_over_100000_units(percent):
    compiled = compile_ruleset(holdout_ruleset(percent))
    held = measured = 0
    for i in range(N):
        r = evaluate(compiled, "f", {"id": f"user-{i}"}, None)
        if r.reason == Reason.HOLDOUT:
            held += 1
            assert r.holdout[:2] == ("holdout:h", "held_out") and r.value is False
        elif r.holdout is not None:
            measured += 1
            assert r.holdout[:2] == ("holdout:h", "measured") and r.reason == Reason.FALLTHROUGH
    assert abs(100 * held / N - percent) < 0.2, held
    assert abs(100 * measured / N - percent) < 0.2, measured


def test_membership_is_the_formula_for_every_unit():
    compiled = compile_ruleset(holdout_ruleset(2.5))
    for i in range(5000):
        u = f"acct-{i}"
        b = bucket("holdout:h", u)
        r = evaluate(compiled, "f", {"id": u}, None)
        expected = "held_out" if b < 250 else "measured" if b < 500 else None
        assert (r.holdout[1] if r.holdout else None) == expected, (u, b)
        assert (r.reason == Reason.HOLDOUT) == (expected == "held_out")


def test_percent_buckets_reads_the_decimal_as_written():
    assert [percent_buckets(p) for p in (0.5, 0.55, 0.29, 2.01, 5, 10, 10.0, 0)] == [50, 55, 29, 201, 500, 1000,
                                                                                     1000, 0]
    assert 0.55 * 100 > 55 and 2.01 * 100 < 201  # where the binary double would disagree


def test_flags_without_a_holdout_run_the_same_closure():
    plain = compile_ruleset(ruleset([bool_flag("f")])).flag("f")._run
    held = compile_ruleset(holdout_ruleset()).flag("f")._run
    assert plain.__name__ == "rules_and_fallthrough"
    assert held.__name__ == "holdout_step"
    ghost = compile_ruleset(ruleset([with_holdout(bool_flag("f"), "ghost")])).flag("f")._run
    assert ghost.__name__ == "rules_and_fallthrough"  # a missing holdout adds no step


@pytest.mark.parametrize(("holdout", "ok"), [
    ({"percent": 5}, True), ({"percent": 0}, True), ({"percent": 50, "unit": "org"}, True),
    ({"percent": 50.5}, False), ({"percent": -1}, False), ({"percent": True}, False), ({"percent": "5"}, False),
    ({"percent": float("nan")}, False), ({}, False), ({"percent": 5, "unit": ""}, False), ("h", False),
])
def test_an_invalid_holdout_makes_its_flags_errors(holdout, ok):
    rules = ruleset([with_holdout(bool_flag("f"), "h"), bool_flag("g")])
    rules["holdouts"] = {"h": holdout}
    compiled = compile_ruleset(rules)
    assert (compiled.flag("f").error is None) is ok
    assert compiled.flag("g").error is None
    if not ok:
        assert evaluate(compiled, "f", {"id": "u"}, "dflt").to_dict()["reason"] == Reason.ERROR


def test_targeting_validation_of_the_holdout_field():
    base = {"enabled": True, "off_variation": "on", "fallthrough": {"variation": "on"}}
    assert validate_targeting({**base, "holdout": "h"}, variations={"on"}) == []
    assert validate_targeting({**base, "holdout": None}, variations={"on"}) == []
    for bad in ("", 5, ["h"]):
        assert [p for p, _ in validate_targeting({**base, "holdout": bad}, variations={"on"})] == ["holdout"]


def test_held_out_units_never_enter_the_flags_experiment():
    flag = with_holdout(bool_flag("f", {"experiment": "x"}), "h")
    compiled = compile_ruleset(holdout_ruleset(10, flags=[flag], experiments=[experiment("x", "f")]))
    for i in range(20000):
        r = evaluate(compiled, "f", {"id": i}, None)  # integer units
        if bucket("holdout:h", str(i)) < 1000:
            assert (r.reason, r.in_experiment, r.experiment, r.holdout[2]) == (Reason.HOLDOUT, False, None, str(i))
        else:
            assert r.in_experiment and r.experiment == "x"


# --------------------------------------------------------------------------- the client


def units_in(group, n, percent=10):
    t = round(percent * 100)
    out = []
    for i in range(100000):
        b = bucket("holdout:h", f"c-{i}")
        if (group == "held_out" and b < t) or (group == "measured" and t <= b < 2 * t) or \
                (group is None and b >= 2 * t):
            out.append(f"c-{i}")
            if len(out) == n:
                return out
    raise AssertionError(group)


def test_client_records_one_holdout_exposure_per_unit_and_group():
    flag = with_holdout(bool_flag("f", {"experiment": "x"}), "h")
    rules = holdout_ruleset(10, unit="account", flags=[flag], experiments=[experiment("x", "f")])
    held, measured, other = units_in("held_out", 5), units_in("measured", 5), units_in(None, 5)
    with StubService(rules) as stub, stub_client(stub) as client:
        assert client.wait_until_ready(5)
        for _ in range(3):
            for i, u in enumerate(held + measured + other):
                ctx = {"id": f"user-{i}", "account": u}
                value = client.variation("f", ctx, None) if i % 2 else client.variation_detail("f", ctx, None).value
                assert value is (False if u in held else value)
            client.track("buy", {"id": "user-0", "account": held[0]}, 1)
        assert client.flush(5)
        exposures = [e for e in stub.events if e["type"] == "exposure"]
        holdout = sorted((e["unit"], e["variation"]) for e in exposures if e["experiment"] == "holdout:h")
        assert holdout == sorted([(u, "held_out") for u in held] + [(u, "measured") for u in measured])
        assert {e["attributes"]["unit_type"] for e in exposures if e["experiment"] == "holdout:h"} == {"account"}
        # the experiment randomises on id: the ids of held-out accounts never enter it
        in_experiment = {e["unit"] for e in exposures if e["experiment"] == "x"}
        assert in_experiment == {f"user-{i}" for i in range(5, 15)}
        tracks = [(e["unit"], e["attributes"]["unit_type"]) for e in stub.events if e["type"] == "track"]
        assert (held[0], "account") in tracks and ("user-0", "id") in tracks  # track() records the holdout unit
        assert client.stats()["deduplicated"] > 0


def test_openfeature_maps_holdout_to_split():
    openfeature = pytest.importorskip("openfeature")
    from openfeature.flag_evaluation import Reason as OFReason

    from pitcrew.openfeature import PitcrewProvider

    held, measured = units_in("held_out", 1, 5)[0], units_in("measured", 1, 5)[0]
    provider = PitcrewProvider(url="http://127.0.0.1:9", sdk_key="k", bootstrap=holdout_ruleset(5), events=False)
    try:
        ctx = openfeature.evaluation_context.EvaluationContext(held)
        details = provider.resolve_boolean_details("f", True, ctx)
        assert (details.value, details.reason, details.variant) == (False, OFReason.SPLIT, "off")
        assert details.flag_metadata["reason"] == "HOLDOUT"
        assert (details.flag_metadata["holdout"], details.flag_metadata["holdout_group"]) == ("h", "held_out")
        details = provider.resolve_boolean_details("f", False, openfeature.evaluation_context.EvaluationContext(
            measured))
        assert details.reason == OFReason.DEFAULT and details.flag_metadata["holdout_group"] == "measured"
    finally:
        provider.shutdown()


def test_client_without_events_still_holds_out():
    client = Client("http://127.0.0.1:9", "k", bootstrap=holdout_ruleset(10), events=False, poll_interval=3600)
    try:
        held = units_in("held_out", 1)[0]
        assert client.variation_detail("f", {"id": held}, None).reason == Reason.HOLDOUT
        assert wait_for(lambda: client.stats()["queued"] == 0, 0.1)
    finally:
        client.close(0.1)
