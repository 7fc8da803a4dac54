"""The OpenFeature provider, driven through the standard openfeature-sdk client: values,
variants, reasons, error codes, flag metadata, events (READY / CONFIGURATION_CHANGED), and
track()."""

import datetime
import threading
import time

import pytest

openfeature = pytest.importorskip("openfeature")

from openfeature import api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402
from openfeature.event import ProviderEvent  # noqa: E402
from openfeature.exception import ErrorCode  # noqa: E402
from openfeature.flag_evaluation import Reason as OFReason  # noqa: E402
from openfeature.provider import ProviderStatus  # noqa: E402
from openfeature.track import TrackingEventDetails  # noqa: E402

from pitcrew.openfeature import PitcrewProvider, to_context  # noqa: E402
from tests.sdk.support import (  # noqa: E402
    StubService,
    bool_flag,
    experiment,
    flag,
    ruleset,
    stub_client,
    wait_for,
)


def of_ruleset(version=1):
    return ruleset([
        bool_flag("plain", version=version),
        bool_flag("off-flag", enabled=False),
        bool_flag("targeted", targets=[{"variation": "off", "values": ["vip"]}], rules=[
            {"id": "de", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
             "serve": {"variation": "off"}},
            {"id": "split", "conditions": [{"attribute": "country", "op": "in", "values": ["FR"]}],
             "serve": {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}},
            {"id": "launch", "conditions": [{"attribute": "signup", "op": "after",
                                             "values": ["2026-01-01T00:00:00Z"]}],
             "serve": {"variation": "off"}},
        ]),
        bool_flag("rollout", {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}),
        bool_flag("exp-flag", {"experiment": "exp"}),
        bool_flag("needs-off", prerequisites=[{"flag": "off-flag", "variation": "on"}]),
        flag("color", "string", {"red": "red", "blue": "blue"}),
        flag("limit", "number", {"ten": 10, "half": 0.5}),
        flag("half", "number", {"half": 0.5}),
        flag("cfg", "json", {"v1": {"a": [1, 2]}}),
        flag("scalar-json", "json", {"v": 3}),
    ], [experiment("exp", "exp-flag")], version=version)


@pytest.fixture
def stub():
    with StubService(of_ruleset()) as s:
        yield s


@pytest.fixture
def of_client(stub):
    client = stub_client(stub, stream=True)
    assert client.wait_until_ready(3)
    provider = PitcrewProvider(client)
    api.set_provider_and_wait(provider, domain="pitcrew-test")
    yield api.get_client("pitcrew-test"), client, provider
    api.clear_providers()
    client.close()


def ctx(key="user-1", **attrs):
    return EvaluationContext(key, attrs)


def test_values_variants_and_reasons(of_client):
    of, _, _ = of_client
    d = of.get_boolean_details("plain", False, ctx())
    assert (d.value, d.variant, d.reason, d.error_code) == (True, "on", OFReason.DEFAULT, None)
    d = of.get_boolean_details("off-flag", True, ctx())
    assert (d.value, d.variant, d.reason) == (False, "off", OFReason.DISABLED)
    d = of.get_boolean_details("targeted", True, ctx("vip"))
    assert (d.value, d.reason) == (False, OFReason.TARGETING_MATCH)
    d = of.get_boolean_details("targeted", True, ctx(country="DE"))
    assert (d.value, d.reason, d.flag_metadata["rule_id"]) == (False, OFReason.TARGETING_MATCH, "de")
    d = of.get_boolean_details("targeted", True, ctx(country="FR"))
    assert d.reason == OFReason.SPLIT and d.flag_metadata["rule_id"] == "split"
    assert of.get_boolean_details("rollout", True, ctx()).reason == OFReason.SPLIT
    d = of.get_boolean_details("needs-off", True, ctx())
    assert (d.value, d.reason) == (False, "PREREQUISITE_FAILED")
    assert of.get_string_details("color", "x", ctx()).value == "red"
    assert of.get_integer_details("limit", 0, ctx()).value == 10
    assert of.get_float_details("limit", 0.0, ctx()).value == 10.0
    assert of.get_object_details("cfg", {}, ctx()).value == {"a": [1, 2]}


def test_experiment_split_and_metadata(of_client):
    of, client, _ = of_client
    d = of.get_boolean_details("exp-flag", False, ctx("u-exp"))
    assert d.reason == OFReason.SPLIT
    assert d.flag_metadata["experiment"] == "exp" and d.flag_metadata["in_experiment"] is True
    assert d.flag_metadata["kind"] == "boolean" and d.flag_metadata["ruleset_version"] == 1
    assert d.flag_metadata["flag_version"] == 1
    assert all(isinstance(v, (str, int, float, bool)) for v in d.flag_metadata.values())
    # the evaluation recorded an exposure, exactly as Client.variation does
    assert client.flush(3)
    assert client.stats()["sent"] == 1


def test_error_codes(of_client):
    of, _, _ = of_client
    d = of.get_boolean_details("nope", True, ctx())
    assert (d.value, d.reason, d.error_code) == (True, OFReason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    d = of.get_string_details("plain", "dflt", ctx())
    assert (d.value, d.error_code) == ("dflt", ErrorCode.TYPE_MISMATCH)
    d = of.get_integer_details("half", 7, ctx())
    assert (d.value, d.error_code) == (7, ErrorCode.TYPE_MISMATCH)
    assert of.get_float_details("half", 1.0, ctx()).value == 0.5
    d = of.get_object_details("scalar-json", {"d": 1}, ctx())
    assert (d.value, d.error_code) == ({"d": 1}, ErrorCode.TYPE_MISMATCH)


def test_context_conversion():
    when = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
    c = to_context(EvaluationContext("u1", {"id": "ignored", "signup": when, "tags": ["a"],
                                            "naive": datetime.datetime(2026, 1, 2)}))
    assert c == {"id": "u1", "signup": "2026-03-01T12:00:00+00:00", "tags": ["a"],
                 "naive": "2026-01-02T00:00:00+00:00"}
    assert to_context(None) == {}


def test_datetime_attributes_work_with_date_conditions(of_client):
    of, _, _ = of_client
    after = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
    d = of.get_boolean_details("targeted", True, ctx(signup=after))
    assert (d.value, d.flag_metadata["rule_id"]) == (False, "launch")


def test_track(of_client, stub):
    of, client, _ = of_client
    of.track("purchase", ctx("buyer"), TrackingEventDetails(value=12.5))
    assert client.flush(3)
    events = [e for e in stub.stored.values() if e["type"] == "track"]
    assert [(e["event"], e["unit"], e["value"]) for e in events] == [("purchase", "buyer", 12.5)]


def test_configuration_changed_event(of_client, stub):
    of, _, _ = of_client
    seen = []
    got = threading.Event()

    def handler(details):
        seen.append(details)
        got.set()

    of.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
    stub.set_ruleset(of_ruleset(version=2))
    assert got.wait(3)
    assert "plain" in seen[0].flags_changed
    assert "color" not in seen[0].flags_changed


def test_not_ready_then_ready(stub):
    port = stub.port
    stub.stop()
    client = stub_client(stub, events=False)
    provider = PitcrewProvider(client, ready_timeout=0.2)
    ready = threading.Event()
    try:
        api.set_provider(provider, domain="late")
        of = api.get_client("late")
        of.add_handler(ProviderEvent.PROVIDER_READY, lambda details: ready.set())
        assert wait_for(lambda: of.get_provider_status() == ProviderStatus.ERROR, 3)
        d = of.get_boolean_details("plain", False, ctx())
        assert (d.value, d.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
        stub.start(port)
        assert ready.wait(5)
        assert of.get_provider_status() == ProviderStatus.READY
        assert of.get_boolean_value("plain", False, ctx()) is True
    finally:
        api.clear_providers()
        client.close()


def test_provider_owning_its_client(stub):
    provider = PitcrewProvider(url=stub.url, sdk_key=stub.sdk_key, events=False)
    api.set_provider_and_wait(provider, domain="owned")
    try:
        assert api.get_client("owned").get_boolean_value("plain", False, ctx()) is True
        assert provider.get_metadata().name == "pitcrew"
    finally:
        api.clear_providers()
    assert provider.client._closed
    with pytest.raises(TypeError):
        PitcrewProvider()


def test_readme_example_works_as_written(stub):
    """README.md's OpenFeature example: set_provider_and_wait, then real values (not defaults)."""
    from openfeature.track import TrackingEventDetails as Details

    api.set_provider_and_wait(PitcrewProvider(url=stub.url, sdk_key=stub.sdk_key, flush_interval=0.05))
    try:
        of = api.get_client()
        assert of.get_boolean_value("plain", False, EvaluationContext("user-42", {"country": "DE"})) is True
        d = of.get_boolean_details("targeted", True, EvaluationContext("user-42", {"country": "DE"}))
        assert (d.value, d.reason, d.error_code) == (False, OFReason.TARGETING_MATCH, None)
        of.track("purchase", EvaluationContext("user-42"), Details(value=49.9))
    finally:
        api.clear_providers()  # shuts the provider (and its client) down: events delivered
    assert wait_for(lambda: [e["unit"] for e in stub.stored.values() if e.get("event") == "purchase"]
                    == ["user-42"], 3)


@pytest.mark.parametrize("context", [EvaluationContext(None, {"country": "DE"}), EvaluationContext("", {}),
                                     None])
def test_missing_targeting_key_is_targeting_key_missing(of_client, context):
    of, _, _ = of_client
    d = of.get_boolean_details("plain", False, context)
    assert (d.value, d.reason, d.error_code) == (False, OFReason.ERROR, ErrorCode.TARGETING_KEY_MISSING)
    # an "id" attribute is Pitcrew's unit too
    d = of.get_boolean_details("plain", False, EvaluationContext(None, {"id": "u"}))
    assert (d.value, d.error_code) == (True, None)


def test_refused_key_is_fatal_says_so_and_does_not_wait(stub):
    from openfeature.exception import ProviderFatalError

    provider = PitcrewProvider(url=stub.url, sdk_key="pc_sdk_wrong", ready_timeout=10, events=False)
    start = time.monotonic()
    try:
        with pytest.raises(ProviderFatalError) as info:
            api.set_provider_and_wait(provider, domain="refused")
        assert time.monotonic() - start < 3  # not the whole ready_timeout
        assert "refused the SDK key" in str(info.value) and "401" in str(info.value)
        assert "still trying" not in str(info.value)
        of = api.get_client("refused")
        assert of.get_provider_status() == ProviderStatus.FATAL
        assert provider.client.status()["state"] == "unauthorized"
    finally:
        api.clear_providers()
