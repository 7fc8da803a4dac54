"""No call of variation, track or the OpenFeature provider raises, for any input: odd
contexts, wrong types, huge values, unknown flags, hostile objects (hypothesis)."""

import math
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitcrew import Client, EvaluationResult
from tests.sdk.support import (
    StubService,
    bool_flag,
    experiment,
    flag,
    ruleset,
    three_rule_flag,
    wait_for,
)

FLAGS = ["checkout-v2", "exp-flag", "acct-flag", "s", "n", "j", "off-flag", "missing", ""]


def fuzz_ruleset():
    return ruleset(
        [three_rule_flag(), bool_flag("exp-flag", {"experiment": "exp"}),
         bool_flag("acct-flag", {"experiment": "acct"}),
         flag("s", "string", {"a": "alpha", "b": "beta"},
              serve={"rollout": {"weights": [["a", 5000], ["b", 5000]], "bucket_by": "org"}}),
         flag("n", "number", {"one": 1, "big": 10 ** 30, "half": 0.5}),
         flag("j", "json", {"cfg": {"deep": [1, {"x": None}]}}),
         bool_flag("off-flag", enabled=False)],
        [experiment("exp", "exp-flag", dimensions=["country", "plan", "id", "unit_type"]),
         experiment("acct", "acct-flag", unit="account_id")],
    )


class Hostile:
    """Raises from everything an SDK might call on it."""

    def __hash__(self):
        raise RuntimeError("no hash")

    def __eq__(self, other):
        raise RuntimeError("no eq")

    def __str__(self):
        raise RuntimeError("no str")

    def __repr__(self):
        return "Hostile()"


class HostileMapping(Mapping):
    def __getitem__(self, key):
        raise RuntimeError("boom")

    def __iter__(self):
        raise RuntimeError("boom")

    def __len__(self):
        raise RuntimeError("boom")

    def get(self, key, default=None):
        raise RuntimeError("boom")


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["DE", "5.1.0", "v1.2.3-rc.1", "a@pitcrew.dev", "2026-01-01T00:00:00Z", "x" * 5000]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
attr_names = st.one_of(st.sampled_from(["id", "country", "app_version", "email", "plan", "org",
                                        "account_id", "unit_type"]), st.text(max_size=10))
contexts = st.one_of(
    st.dictionaries(attr_names, json_values, max_size=8),
    st.fixed_dictionaries({"id": json_scalars}, optional={"account_id": json_scalars,
                                                          "country": json_values}),
    json_values,
    st.sampled_from([None, [], "ctx", 42, b"bytes"]), st.builds(Hostile), st.builds(HostileMapping),
)
flag_keys = st.one_of(st.sampled_from(FLAGS), st.text(max_size=300), st.integers(), st.none(),
                      st.sampled_from([("t",), b"exp-flag", "x" * 100_000]), st.lists(st.text()),
                      st.builds(Hostile))
anything = st.one_of(json_values, st.builds(Hostile), st.builds(HostileMapping), st.builds(object))


@pytest.fixture(scope="module")
def fuzz_env():
    stub = StubService(fuzz_ruleset()).start()
    client = Client(stub.url, stub.sdk_key, flush_interval=0.2, poll_interval=30, timeout=2)
    assert client.wait_until_ready(3)
    yield stub, client
    client.close()
    stub.stop()


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(flag_key=flag_keys, context=contexts, default=anything)
def test_variation_never_raises(fuzz_env, flag_key, context, default):
    _, client = fuzz_env
    client.variation(flag_key, context, default)
    r = client.variation_detail(flag_key, context, default)
    assert isinstance(r, EvaluationResult)
    for kind in ("boolean", "string", "number", "json", "other", None):
        assert isinstance(client.variation_detail(flag_key, context, default, kind=kind), EvaluationResult)
    client.bool_variation(flag_key, context, default)
    client.string_variation(flag_key, context, default)
    client.number_variation(flag_key, context, default)
    client.json_variation(flag_key, context, default)
    assert client.enabled(flag_key, context) in (True, False)
    client.all_flags(context)


@FUZZ
@given(event=st.one_of(st.text(max_size=200), anything), context=contexts,
       value=st.one_of(st.none(), st.integers(), st.floats(), anything))
def test_track_never_raises(fuzz_env, event, context, value):
    _, client = fuzz_env
    assert client.track(event, context, value) is None
    client.track(event, context)


def test_fuzzed_events_are_delivered_or_accounted_for(fuzz_env):
    """After the fuzz runs, every recorded event was delivered, dropped or counted as failed."""
    stub, client = fuzz_env
    for i in range(20):
        client.variation("exp-flag", {"id": f"after-{i}", "country": "DE", "plan": math.pi}, None)
    assert client.flush(10)
    stats = client.stats()
    assert stats["queued"] == 0
    assert stats["sent"] == len(stub.stored)
    assert wait_for(lambda: any(e.get("unit") == "after-19" for e in stub.stored.values()), 3)


@pytest.fixture(scope="module")
def provider_env(fuzz_env):
    pytest.importorskip("openfeature")
    from openfeature import api

    from pitcrew.openfeature import PitcrewProvider

    _, client = fuzz_env
    provider = PitcrewProvider(client)
    api.set_provider_and_wait(provider, domain="fuzz")
    yield provider, api.get_client("fuzz")
    api.clear_providers()


of_attr_values = st.one_of(json_scalars, st.lists(st.text(max_size=5), max_size=3),
                           st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                           st.datetimes())


@FUZZ
@given(flag_key=flag_keys, targeting_key=st.one_of(st.none(), st.text(max_size=20)),
       attributes=st.dictionaries(attr_names, of_attr_values, max_size=6), default=anything,
       value=st.one_of(st.none(), st.floats(), st.integers()))
def test_openfeature_provider_never_raises(provider_env, flag_key, targeting_key, attributes, default,
                                           value):
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.track import TrackingEventDetails

    provider, of_client = provider_env
    ctx = EvaluationContext(targeting_key, attributes)
    for resolve in (provider.resolve_boolean_details, provider.resolve_string_details,
                    provider.resolve_integer_details, provider.resolve_float_details,
                    provider.resolve_object_details):
        resolve(flag_key, default, ctx)
        resolve(flag_key, default, None)
    provider.track(flag_key, ctx, TrackingEventDetails(value=value))
    provider.track(flag_key, Hostile(), None)
    if isinstance(flag_key, str):
        of_client.get_boolean_details(flag_key, False, ctx)
        of_client.get_object_details(flag_key, {}, ctx)
