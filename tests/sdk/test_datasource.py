"""SDK data source and transport against a stub of /sdk/v1/config and /stream on a loopback
port: ETag polling, streaming and reconnects, fallback to polling, outages, invalid
rulesets; keep-alive, timeouts, backoff and Retry-After helpers. The named integration
scenarios against the real service are in tests/test_sdk_integration.py."""

import email.utils
import json
import logging
import threading
import time

import pytest

from pitcrew import datasource
from pitcrew.datasource import _sse_events
from pitcrew.store import RulesetStore
from pitcrew.transport import (
    Transport,
    TransportError,
    backoff_delay,
    is_retryable,
    retry_after_seconds,
)
from tests.sdk.support import StubService, bool_flag, ruleset, stub_client, wait_for


@pytest.fixture
def stub():
    with StubService(ruleset([bool_flag("f")])) as s:
        yield s


def turn_off(stub):
    return stub.bump(flags={"f": bool_flag("f", enabled=False, version=2)})


# --------------------------------------------------------------------------- polling


def test_polling_uses_etag_and_sees_a_change_within_one_interval(stub):
    interval = 0.4
    with stub_client(stub, poll_interval=interval, events=False) as client:
        assert client.wait_until_ready(3)
        assert client.variation("f", {"id": "u"}, None) is True
        time.sleep(interval * 2.5)
        assert ("GET", "/sdk/v1/config", 304) in stub.requests
        turn_off(stub)
        changed = time.monotonic()
        assert wait_for(lambda: client.variation("f", {"id": "u"}, None) is False, interval + 0.3)
        assert time.monotonic() - changed <= interval + 0.3
        # one keep-alive connection for all those polls
        assert stub.connections == 1


def test_service_outage_keeps_the_last_ruleset(stub):
    with stub_client(stub, poll_interval=0.1, events=False) as client:
        assert client.wait_until_ready(3)
        port = stub.port
        stub.stop()
        assert wait_for(lambda: client.status()["state"] == "interrupted", 3)
        assert client.variation("f", {"id": "u"}, None) is True
        assert client.is_ready()
        stub.start(port)
        turn_off(stub)
        assert wait_for(lambda: client.variation("f", {"id": "u"}, None) is False, 3)
        assert client.status()["state"] == "valid"


@pytest.mark.parametrize("bad", [
    (500, {}, b"oops"), (200, {}, b"{not json"), (200, {}, b'{"version": 5, "flags": []}'),
    (200, {}, b'{"version": "x"}'), (429, {"Retry-After": "1"}, b""),
])
def test_bad_config_responses_keep_the_last_ruleset(stub, bad):
    with stub_client(stub, poll_interval=0.1, events=False) as client:
        assert client.wait_until_ready(3)
        stub.config_script.extend([bad] * 3)
        assert wait_for(lambda: not stub.config_script, 3)
        assert client.variation("f", {"id": "u"}, None) is True
        assert client.status()["version"] == 1


def test_rejected_sdk_key_is_logged_once(stub, caplog):
    with caplog.at_level(logging.WARNING, logger="pitcrew"):
        from pitcrew import Client

        client = Client(stub.url, "wrong-key", poll_interval=0.05, events=False)
        time.sleep(0.4)
        client.close()
    refused = [r for r in caplog.records if "refused the SDK key" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert not client.is_ready()


def test_first_fetch_retries_with_backoff_when_service_is_down(stub):
    port = stub.port
    stub.stop()
    with stub_client(stub, poll_interval=30, events=False) as client:
        time.sleep(0.2)
        stub.start(port)
        # retried well before the 30 s poll interval
        assert client.wait_until_ready(4)


# --------------------------------------------------------------------------- streaming


def test_streaming_sees_a_change_within_a_second(stub):
    with stub_client(stub, stream=True, poll_interval=30, events=False) as client:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: client.status()["stream_connected"], 2)
        turn_off(stub)
        changed = time.monotonic()
        assert wait_for(lambda: client.variation("f", {"id": "u"}, None) is False, 1.0)
        assert time.monotonic() - changed < 1.0


def test_stream_reconnects_after_the_service_restarts(stub):
    with stub_client(stub, stream=True, poll_interval=30, events=False) as client:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: client.status()["stream_connected"], 2)
        port = stub.port
        stub.stop()
        assert wait_for(lambda: not client.status()["stream_connected"], 3)
        assert client.variation("f", {"id": "u"}, None) is True
        stub.start(port)
        assert wait_for(lambda: client.status()["stream_connected"], 5)
        turn_off(stub)
        assert wait_for(lambda: client.variation("f", {"id": "u"}, None) is False, 1.0)


def test_stream_unavailable_falls_back_to_polling(stub):
    stub.stream_enabled = False
    with stub_client(stub, stream=True, poll_interval=0.3, events=False) as client:
        assert client.wait_until_ready(3)
        turn_off(stub)
        assert wait_for(lambda: client.variation("f", {"id": "u"}, None) is False, 2)
        assert not client.status()["stream_connected"]


def test_sse_parser():
    lines = [": keepalive", "", "event: config", "data: {\"version\": 3}", "", "data: a", "data: b",
             "", "event: config", "data:{\"version\": 4}", "id: 7", "retry: 10", ""]
    assert list(_sse_events(iter(lines))) == [
        ("config", '{"version": 3}'), ("message", "a\nb"), ("config", '{"version": 4}'),
    ]


def test_close_stops_a_streaming_client_promptly(stub):
    client = stub_client(stub, stream=True, events=False)
    assert client.wait_until_ready(3)
    assert wait_for(lambda: client.status()["stream_connected"], 2)
    start = time.monotonic()
    client.close(2)
    assert time.monotonic() - start < 0.5
    assert not client._datasource.alive


# --------------------------------------------------------------------------- stale instances


def stale(version):
    """A config answer from an instance (behind a load balancer) that holds ``version``."""
    body = json.dumps(ruleset([bool_flag("f")], version=version)).encode()
    return (200, {"ETag": f'"{version}"', "Content-Type": "application/json"}, body)


NOT_MODIFIED = (304, {"ETag": '"2"'}, b"")


def catchup_threads():
    return [t for t in threading.enumerate() if t.name == "pitcrew-catchup" and t.is_alive()]


@pytest.fixture
def stub2():
    with StubService(ruleset([bool_flag("f")], version=2)) as s:
        yield s


def streaming_client(stub):
    client = stub_client(stub, stream=True, poll_interval=300, events=False)
    assert client.wait_until_ready(3) and client.status()["version"] == 2
    assert wait_for(lambda: client.status()["stream_connected"], 2)
    return client


def test_announced_version_is_refetched_past_stale_instances(stub2):
    """The stream announces 3; the refetch meets an instance still on 2 (304), the first retry
    one on 1 (older than held: not applied); the next reaches the version announced, long
    before the 300 s poll."""
    client = streaming_client(stub2)
    seen = []
    client.add_listener(lambda old, new: seen.append(new.version))
    try:
        stub2.config_script.extend([NOT_MODIFIED, stale(1)])
        stub2.bump()
        assert wait_for(lambda: client.status()["version"] == 3, 4)
        assert not stub2.config_script
        assert seen == [3]  # never went back to 1
        assert client.status()["state"] == "valid"
    finally:
        client.close()


def test_retries_aim_at_the_newest_announced_version_from_one_thread(stub2):
    client = streaming_client(stub2)
    try:
        stub2.config_script.extend([NOT_MODIFIED] * 4)
        stub2.bump()
        assert wait_for(lambda: catchup_threads() or client.status()["version"] == 3, 3)
        stub2.bump()  # announced while the retries for 3 run: they now aim at 4
        most = 0
        deadline = time.monotonic() + 4
        while client.status()["version"] != 4 and time.monotonic() < deadline:
            most = max(most, len(catchup_threads()))
            time.sleep(0.005)
        assert client.status()["version"] == 4
        assert most <= 1
        assert wait_for(lambda: not catchup_threads(), 3)  # done once the target is held
    finally:
        client.close()


def test_retries_give_up_quietly_and_leave_it_to_the_poll(stub2, caplog, monkeypatch):
    monkeypatch.setattr(datasource, "CATCHUP_BUDGET", 0.5)
    client = streaming_client(stub2)
    try:
        with caplog.at_level(logging.DEBUG, logger="pitcrew"):
            stub2.config_script.extend([NOT_MODIFIED] * 1000)
            stub2.bump()
            assert wait_for(lambda: len(stub2.config_script) <= 997, 3)  # retried
            assert wait_for(lambda: not catchup_threads(), 3)  # and stopped
        retried = 1000 - len(stub2.config_script)
        time.sleep(0.3)
        assert 1000 - len(stub2.config_script) == retried  # no more requests
        gave_up = [r for r in caplog.records if "announced version 3" in r.getMessage()]
        assert len(gave_up) == 1 and gave_up[0].levelno == logging.INFO
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert client.status()["version"] == 2 and client.status()["state"] == "valid"
    finally:
        client.close()


def test_close_stops_the_retries(stub2):
    client = streaming_client(stub2)
    stub2.config_script.extend([NOT_MODIFIED] * 1000)
    stub2.bump()
    assert wait_for(lambda: catchup_threads() and len(stub2.config_script) <= 998, 3)
    client.close(2)
    assert not catchup_threads()
    asked = stub2.config_requests
    time.sleep(0.5)
    assert stub2.config_requests == asked
    assert client.status()["version"] == 2


def test_store_keeps_a_service_ruleset_newer_than_the_one_offered():
    store = RulesetStore()
    assert store.apply(ruleset(version=5), source="service", etag='"5"') is not None
    assert store.apply(ruleset(version=4), source="service", etag='"4"') is None
    assert store.version == 5 and store.etag == '"5"'
    assert store.apply(ruleset(version=5), source="service", etag='"5b"') is not None
    # a bootstrap or cache ruleset is replaced by whatever the service answers
    boot = RulesetStore()
    boot.apply(ruleset(version=9), source="bootstrap")
    assert boot.apply(ruleset(version=3), source="service") is not None
    assert boot.version == 3


def test_a_service_that_only_offers_older_rulesets_for_a_while_is_believed(monkeypatch):
    """A restored database really went back: the client must not stay ahead of it forever."""
    from pitcrew import store as store_module

    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    store = RulesetStore()
    store.apply(ruleset(version=5), source="service", etag='"5"')
    assert store.apply(ruleset(version=4), source="service") is None
    clock[0] += store_module.DOWNGRADE_AFTER - 1
    assert store.apply(ruleset(version=4), source="service") is None  # still within the grace
    clock[0] += 2
    assert store.apply(ruleset(version=4), source="service") is not None
    assert store.version == 4
    # An instance confirming the held version (a 304) restarts the grace: a stale peer
    # behind the same load balancer never drags the client back.
    store.apply(ruleset(version=6), source="service")
    assert store.apply(ruleset(version=4), source="service") is None
    clock[0] += store_module.DOWNGRADE_AFTER - 1
    store.confirm()
    clock[0] += 2
    assert store.apply(ruleset(version=4), source="service") is None
    assert store.version == 6


# --------------------------------------------------------------------------- transport


def test_transport_keep_alive_and_stale_connection_resend(stub):
    t = Transport(stub.url, stub.sdk_key, timeout=2)
    try:
        for _ in range(3):
            assert t.request("GET", "/sdk/v1/config").status == 200
        assert stub.connections == 1
        stub.config_script.append(("close",))  # the server drops the idle connection
        assert t.request("GET", "/sdk/v1/config").status == 200  # resent once, transparently
        assert stub.connections == 2
    finally:
        t.close()


def test_transport_timeout_bounds_every_call(stub):
    stub.config_script.append(("sleep", 2.0))
    t = Transport(stub.url, stub.sdk_key, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(TransportError):
        t.request("GET", "/sdk/v1/config")
    assert time.monotonic() - start < 1.0
    t.close()


def test_transport_rejects_bad_urls():
    with pytest.raises(ValueError):
        Transport("not a url", "k")


def test_backoff_delay_is_exponential_jittered_and_capped():
    for attempt in range(1, 60):
        raw = min(30.0, 1.0 * 2 ** min(attempt - 1, 50))
        for r in (0.0, 0.5, 0.999):
            d = backoff_delay(attempt, 1.0, 30.0, rng=lambda r=r: r)
            assert raw * 0.5 <= d <= raw <= 30.0
    assert backoff_delay(1, rng=lambda: 0.0) == 0.5
    assert backoff_delay(3, rng=lambda: 0.999) == pytest.approx(3.998)


def test_retry_after_parsing():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("100000") == 600.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(when) <= 31


def test_retryable_statuses():
    assert [s for s in (200, 202, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503)
            if is_retryable(s)] == [408, 429, 500, 502, 503]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_reported_as_unauthorized_not_initializing(stub, status, caplog):
    stub.config_script.extend([(status, {}, b'{"error": {"code": "unauthorized"}}')] * 50)
    with caplog.at_level(logging.ERROR, logger="pitcrew"):
        client = stub_client(stub, poll_interval=0.05)
        try:
            start = time.monotonic()
            assert client.wait_until_ready(5) is False
            assert time.monotonic() - start < 2  # returns early: waiting cannot help
            status_now = client.status()
            assert status_now["state"] == "unauthorized" and f"HTTP {status}" in status_now["last_error"]
            assert not status_now["ready"]
            stub.config_script.clear()  # the key is accepted again (e.g. fixed on the service)
            assert wait_for(client.is_ready, 3)  # the client kept retrying
            assert wait_for(lambda: client.status()["state"] == "valid", 3)
        finally:
            client.close()
    refused = [r for r in caplog.records if "refused the SDK key" in r.getMessage()]
    assert len(refused) == 1


def test_log_messages_carry_the_pitcrew_prefix_once(stub, capsys):
    """The logger is named "pitcrew"; a usual format ("%(name)s: %(message)s") adds it once."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s: %(message)s"))
    logger = logging.getLogger("pitcrew")
    logger.addHandler(handler)
    try:
        client = stub_client(stub, poll_interval=0.05)
        stub.stop()
        client.track("e", {"id": "u"})
        client.close(0.3)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "pitcrew: " in err and "pitcrew: pitcrew:" not in err
