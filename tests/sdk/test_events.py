"""SDK event pipeline against a stub of POST /sdk/v1/events on a loopback port: exposure
dedup and attributes, track units, summaries, bounded queue, batching, retries (5xx, 429
Retry-After, lost responses), non-retryable errors, close()/exit flush. The same pipeline
against the real service (counted in its database) is in tests/test_sdk_integration.py."""

import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from pitcrew import Client
from pitcrew import events as events_module
from pitcrew.events import delivery as delivery_module
from tests.sdk.support import (
    StubService,
    bool_flag,
    experiment,
    experiment_ruleset,
    ruleset,
    stub_client,
    three_rule_flag,
    wait_for,
)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stub():
    rs = ruleset(
        [bool_flag("exp-flag", {"experiment": "exp"}), bool_flag("acct-flag", {"experiment": "acct"}),
         three_rule_flag()],
        [experiment("exp", "exp-flag", dimensions=["country", "plan", "tags", "beta", "score", "nan"]),
         experiment("acct", "acct-flag", unit="account_id")],
    )
    with StubService(rs) as s:
        yield s


def ready_client(stub, **kw):
    client = stub_client(stub, **kw)
    assert client.wait_until_ready(3)
    return client


def test_exposure_recorded_once_per_experiment_unit_variation(stub):
    with ready_client(stub) as client:
        ctx = {"id": "user-1", "country": "DE", "plan": 3, "tags": ["a"], "beta": True,
               "score": 1.5, "nan": float("nan"), "unused": "x"}
        results = [client.variation_detail("exp-flag", ctx, None) for _ in range(5)]
        assert all(r.in_experiment for r in results)
        client.variation("exp-flag", ctx, None)
        assert client.flush(3)
        exposures = [e for e in stub.events if e["type"] == "exposure"]
        assert len(exposures) == 1
        e = exposures[0]
        assert e["unit"] == "user-1" and e["experiment"] == "exp"
        assert e["variation"] == results[0].variation
        # unit_type plus the experiment's dimensions, scalars only
        assert e["attributes"] == {"unit_type": "id", "country": "DE", "plan": 3, "beta": True,
                                   "score": 1.5}
        assert uuid.UUID(e["id"]).version == 4
        assert TS.match(e["ts"])
        assert client.stats()["deduplicated"] == 5


def test_exposure_uses_the_experiment_unit(stub):
    with ready_client(stub) as client:
        r = client.variation_detail("acct-flag", {"id": "u1", "account_id": 77}, None)
        assert r.in_experiment and r.unit == "77"
        client.variation("acct-flag", {"id": "u2", "account_id": 77}, None)  # same unit: deduped
        client.variation("acct-flag", {"id": "u3"}, None)  # no unit: not in the experiment
        assert client.flush(3)
        exposures = [e for e in stub.events if e["type"] == "exposure"]
        assert [(e["unit"], e["attributes"]["unit_type"]) for e in exposures] == [("77", "account_id")]


def test_no_exposure_outside_experiments_and_for_prerequisites(stub):
    with ready_client(stub) as client:
        client.variation("checkout-v2", {"id": "u"}, False)
        client.variation("missing", {"id": "u"}, False)
        assert client.flush(3)
        assert [e for e in stub.events if e["type"] == "exposure"] == []


def test_track_sends_one_event_per_unit(stub):
    with ready_client(stub) as client:
        client.track("purchase", {"id": 42, "account_id": "acme"}, 9.5)
        client.track("signup", {"id": "u"})
        client.track("login", {"account_id": "acme"})  # no id, but an experiment unit
        assert client.flush(3)
    got = sorted((e["event"], e["unit"], e["attributes"]["unit_type"], e.get("value")) for e in stub.events)
    assert got == [
        ("login", "acme", "account_id", None),
        ("purchase", "42", "id", 9.5),
        ("purchase", "acme", "account_id", 9.5),
        ("signup", "u", "id", None),
    ]
    assert len({e["id"] for e in stub.events}) == 4
    assert all(TS.match(e["ts"]) and e["type"] == "track" for e in stub.events)


@pytest.mark.parametrize("args", [
    ("e", {}), ("e", {"id": ""}), ("e", {"id": True}), ("e", {"id": 1.5}), ("e", {"id": None}),
    ("", {"id": "u"}), (None, {"id": "u"}), (3, {"id": "u"}), ("e", "not-a-context"), ("e", None),
    ("e", {"id": "u"}, "12"), ("e", {"id": "u"}, float("inf")), ("e", {"id": "u"}, True),
    ("e", {"id": "u"}, 10 ** 400),
])
def test_unusable_track_calls_are_counted_not_raised(stub, args):
    with ready_client(stub, flush_interval=60) as client:
        client.track(*args)
        stats = client.stats()
        assert stats["invalid"] == 1 and stats["queued"] == 0


def test_evaluation_summary(stub):
    with ready_client(stub) as client:
        for i in range(10):
            client.variation("checkout-v2", {"id": f"u{i}", "country": "DE"}, False)
        client.variation("missing", {"id": "u"}, False)
        client.bool_variation("checkout-v2", {"id": "u", "country": "DE"}, False)
        assert client.flush(3)
        assert wait_for(lambda: stub.evaluations)
        totals = {(e["flag"], e["variation"]): e["count"] for e in stub.evaluations}
        assert totals == {("checkout-v2", "on"): 11, ("missing", None): 1}
        assert all(TS.match(e["start"]) and TS.match(e["end"]) for e in stub.evaluations)
        # counts are per window: the next flush reports only new evaluations
        stub.evaluations.clear()
        client.variation("checkout-v2", {"id": "u", "country": "DE"}, False)
        assert client.flush(3)
        assert wait_for(lambda: stub.evaluations)
        assert [(e["flag"], e["count"]) for e in stub.evaluations] == [("checkout-v2", 1)]


def test_events_disabled():
    client = Client("http://127.0.0.1:9", "k", events=False, bootstrap=experiment_ruleset())
    try:
        client.variation("exp-flag", {"id": "u"}, None)
        client.track("x", {"id": "u"})
        assert client.flush() is True
        assert client.stats()["queued"] == 0
        assert not any(t.name == "pitcrew-events" and t.is_alive() and False for t in threading.enumerate())
    finally:
        client.close()


def test_queue_bounded_drops_oldest_and_counts(stub):
    stub.stop()  # nothing can be delivered
    client = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=60,
                    max_queue=10, timeout=0.5)
    try:
        for i in range(25):
            client.track("e", {"id": f"u{i}"})
        stats = client.stats()
        assert stats["queued"] == 10 and stats["dropped"] == 15
        queued_units = client._events.queue.units()
        assert queued_units == [f"u{i}" for i in range(15, 25)]  # the newest survive
    finally:
        client.close(0.2)


def test_batches_are_gzip_and_at_most_1000_events(stub):
    with ready_client(stub, flush_interval=60) as client:
        for i in range(2500):
            client.track("e", {"id": f"u{i}"})
        assert client.flush(5)
        sizes = [len(b["events"]) for b in stub.batches]
        assert sum(sizes) == 2500 and max(sizes) <= 1000
        assert stub.content_types == {("application/json", "gzip")}
        assert client.stats()["sent"] == 2500


def test_500_events_trigger_delivery_before_the_timer(stub):
    with ready_client(stub, flush_interval=60) as client:
        for i in range(events_module.FLUSH_AT):
            client.track("e", {"id": f"u{i}"})
        assert wait_for(lambda: len(stub.events) == events_module.FLUSH_AT, 3)


def test_batches_stay_under_one_mib(stub):
    big = "x" * 200_000
    rs = ruleset([bool_flag("exp-flag", {"experiment": "exp"})],
                 [experiment("exp", "exp-flag", dimensions=["blob"])])
    stub.set_ruleset(rs)
    with ready_client(stub, flush_interval=60) as client:
        for i in range(12):
            client.variation("exp-flag", {"id": f"u{i}", "blob": big}, None)
        client.variation("exp-flag", {"id": "huge", "blob": "y" * 1_100_000}, None)
        assert client.flush(5)
        assert len(stub.events) == 12
        assert len(stub.batches) >= 3
        assert client.stats()["failed"] == 1  # one event alone exceeds the request limit


def test_timer_flushes(stub):
    with ready_client(stub, flush_interval=0.1) as client:
        client.track("e", {"id": "u"})
        assert wait_for(lambda: len(stub.events) == 1, 2)


def test_5xx_and_lost_responses_are_retried_and_stored_exactly_once(stub, monkeypatch):
    monkeypatch.setattr(delivery_module, "RETRY_BASE", 0.05)
    stub.events_script.extend([
        (500, {}, b"oops"), (502, {}, b""), ("store_and_close",), (503, {}, b""), ("close",),
    ])
    with ready_client(stub, flush_interval=0.05) as client:
        for i in range(20):
            client.track("e", {"id": f"u{i}"})
        assert wait_for(lambda: len(stub.stored) == 20 and not stub.events_script, 10)
        assert client.flush(5)
        stats = client.stats()
    assert len(stub.stored) == 20
    assert len(stub.events) == 40  # the batch whose response was lost arrived twice, same ids
    assert stats["sent"] == 20 and stats["failed"] == 0 and stats["retries"] >= 3


def test_retry_after_is_honoured_for_429_and_503(stub):
    stub.events_script.extend([(429, {"Retry-After": "1"}, b""), (503, {"Retry-After": "1"}, b"")])
    with ready_client(stub, flush_interval=0.05) as client:
        client.track("e", {"id": "u"})
        client.flush(0)
        assert wait_for(lambda: len(stub.stored) == 1, 6)
    times = [t for path, status, t in stub.request_times if path == "/sdk/v1/events"]
    assert len(times) >= 3
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95


def test_flush_does_not_skip_retry_after(stub):
    stub.events_script.append((429, {"Retry-After": "30"}, b""))
    with ready_client(stub) as client:
        client.track("e", {"id": "u"})
        client.flush(0.3)
        start = time.monotonic()
        assert client.flush(0.3) is False
        assert time.monotonic() - start < 1
        assert [s for p, s, _ in stub.request_times if p == "/sdk/v1/events"] == [429]
        client.close(0.2)  # Retry-After beyond the close deadline: given up, counted
        assert client.stats()["failed"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_are_not_retried_and_logged_once(stub, status, caplog):
    stub.events_script.extend([(status, {}, b'{"error": {"code": "bad"}}')] * 2)
    with caplog.at_level(logging.WARNING, logger="pitcrew"):
        with ready_client(stub, flush_interval=60) as client:
            client.track("e", {"id": "a"})
            assert client.flush(3)
            client.track("e", {"id": "b"})
            assert client.flush(3)
            stats = client.stats()
    assert stats["failed"] == 2 and stats["retries"] == 0 and stats["sent"] == 0
    assert len([r for r in caplog.records if f"HTTP {status}" in r.getMessage()]) == 1


def test_408_is_retried(stub, monkeypatch):
    monkeypatch.setattr(delivery_module, "RETRY_BASE", 0.05)
    stub.events_script.append((408, {}, b""))
    with ready_client(stub) as client:
        client.track("e", {"id": "u"})
        assert client.flush(3)
        assert len(stub.stored) == 1 and client.stats()["retries"] == 1


def test_413_splits_the_batch(stub):
    stub.events_script.extend([(413, {}, b""), (413, {}, b"")])
    with ready_client(stub, flush_interval=60) as client:
        for i in range(40):
            client.track("e", {"id": f"u{i}"})
        assert client.flush(5)
        assert len(stub.stored) == 40
        sizes = [len(b["events"]) for b in stub.batches]
        # 40 -> 413, split in halves sent side by side: one 20 -> 413, split again
        assert sum(sizes) == 40 and max(sizes) <= 20 and min(sizes) == 10
        assert client.stats()["failed"] == 0


def test_rejected_events_are_counted_as_failed(stub):
    body = b'{"accepted": 1, "duplicates": 0, "rejected": [{"index": 1, "error": "bad unit"}]}'
    stub.events_script.append((202, {"Content-Type": "application/json"}, body))
    with ready_client(stub, flush_interval=60) as client:
        client.track("e", {"id": "a"})
        client.track("e", {"id": "b"})
        assert client.flush(3)
        assert client.stats()["sent"] == 1 and client.stats()["failed"] == 1


def test_close_flushes(stub):
    client = ready_client(stub, flush_interval=60)
    for i in range(30):
        client.track("e", {"id": f"u{i}"})
    client.close()
    assert len(stub.stored) == 30
    assert client.stats()["queued"] == 0


def test_flush_zero_only_schedules(stub):
    stub.events_script.append(("sleep", 1.0))
    with ready_client(stub, flush_interval=60) as client:
        client.track("e", {"id": "u"})
        start = time.monotonic()
        client.flush(0)
        assert time.monotonic() - start < 0.1


def test_concurrent_variation_and_track_lose_nothing(stub):
    n_threads, per_thread = 16, 300
    with ready_client(stub, flush_interval=0.05) as client:
        barrier = threading.Barrier(n_threads)

        def work(t):
            barrier.wait()
            for i in range(per_thread):
                client.variation("exp-flag", {"id": f"t{t}-u{i}"}, None)
                client.track("e", {"id": f"t{t}-u{i}"}, i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.flush(10)
        stats = client.stats()
    total = n_threads * per_thread
    tracks = [e for e in stub.stored.values() if e["type"] == "track"]
    exposures = [e for e in stub.stored.values() if e["type"] == "exposure"]
    assert len(tracks) == total and len(exposures) == total
    assert len({(e["unit"], e["value"]) for e in tracks}) == total
    assert stats["dropped"] == 0 and stats["sent"] == 2 * total
    counted = sum(e["count"] for e in stub.evaluations if e["flag"] == "exp-flag")
    assert counted == total


def test_interpreter_exit_flushes(stub):
    script = textwrap.dedent(f"""
        import sys
        from pitcrew import Client
        client = Client({stub.url!r}, {stub.sdk_key!r}, flush_interval=60)
        for i in range(7):
            client.track("exit-event", {{"id": f"u{{i}}"}})
        # no close(): the atexit hook delivers
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert len([e for e in stub.stored.values() if e.get("event") == "exit-event"]) == 7
