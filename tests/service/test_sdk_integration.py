"""The SDK against the real service (gunicorn on a loopback port, sharing the test
database): flags are created through the admin API, events are counted in the ``events``
table. Faults (500s, 429s, lost responses) are injected by a loopback proxy in front of
the real service; outages and restarts stop and start a real server on the same port."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from pitcrew import Client, Reason
from pitcrew import events as events_module
from service.extensions import db
from tests.sdk.support import ONOFF, FaultProxy, wait_for
from tests.service.support import LiveServer, make_sdk_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = "production"


# --------------------------------------------------------------------------- helpers


def targeting(fallthrough=None, **kw):
    body = {"enabled": True, "off_variation": "off", "prerequisites": [], "targets": [], "rules": [],
            "fallthrough": fallthrough or {"variation": "on"}}
    body.update(kw)
    return body


def create_flag(admin, key, body=None, kind="boolean", variations=ONOFF):
    r = admin.post("/api/v1/flags", json={"key": key, "name": key, "kind": kind, "variations": variations})
    assert r.status_code == 201, r.get_json()
    set_targeting(admin, key, body or targeting())


def set_targeting(admin, key, body):
    r = admin.put(f"/api/v1/flags/{key}/environments/{ENV}", json=body)
    assert r.status_code == 200, r.get_json()


def create_running_experiment(admin, key, flag_key, **extra):
    """A running experiment serving ``flag_key``'s fallthrough; skips if the API is not there."""
    create_flag(admin, flag_key)
    r = admin.post("/api/v1/metrics", json={"key": f"{key}-metric", "name": key, "event": "purchase",
                                            "type": "conversion"})
    if r.status_code in (404, 405):
        pytest.skip("the metrics API has not landed yet")
    assert r.status_code == 201, r.get_json()
    body = {"key": key, "name": key, "flag": flag_key, "environment": ENV,
            "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
            "control": "off", "primary_metric": f"{key}-metric", **extra}
    r = admin.post("/api/v1/experiments", json=body)
    if r.status_code in (404, 405):
        pytest.skip("the experiments API has not landed yet")
    assert r.status_code == 201, r.get_json()
    r = admin.post(f"/api/v1/experiments/{key}/start")
    assert r.status_code == 200, r.get_json()
    set_targeting(admin, flag_key, targeting({"experiment": key}))


def rows(where="1=1", **params):
    result = db.session.execute(
        sa.text(f"SELECT client_id, type, unit, unit_type, experiment, variation, event, value "
                f"FROM events WHERE {where}"), params,
    ).mappings().all()
    db.session.commit()
    return [dict(r) for r in result]


def count(where="1=1", **params) -> int:
    n = db.session.execute(sa.text(f"SELECT count(*) FROM events WHERE {where}"), params).scalar()
    db.session.commit()
    return n


@pytest.fixture
def sdk_key():
    return make_sdk_key(ENV)


@pytest.fixture
def own_server(database_url):
    """A real gunicorn server of our own, to stop and restart on the same port."""
    server = LiveServer(database_url)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- ruleset sync


def test_polling_client_sees_a_flag_change_within_one_interval(live_server, admin, sdk_key):
    create_flag(admin, "poll-flag")
    interval = 1.0
    with Client(live_server.url, sdk_key, poll_interval=interval, events=False) as client:
        assert client.wait_until_ready(5)
        assert client.variation("poll-flag", {"id": "u"}, None) is True
        assert client.status()["source"] == "service"
        time.sleep(0.3)
        set_targeting(admin, "poll-flag", targeting(enabled=False))
        changed = time.monotonic()
        assert wait_for(lambda: client.variation("poll-flag", {"id": "u"}, None) is False, interval + 1)
        assert time.monotonic() - changed <= interval + 0.3


def test_streaming_client_sees_a_flag_change_within_a_second(live_server, admin, sdk_key):
    create_flag(admin, "stream-flag")
    with Client(live_server.url, sdk_key, stream=True, poll_interval=30, events=False) as client:
        assert client.wait_until_ready(5)
        assert wait_for(lambda: client.status()["stream_connected"], 3)
        for enabled in (False, True, False):
            set_targeting(admin, "stream-flag", targeting(enabled=enabled))
            changed = time.monotonic()
            assert wait_for(lambda e=enabled: client.variation("stream-flag", {"id": "u"}, None) is e, 1.0)
            assert time.monotonic() - changed < 1.0


def test_wrong_sdk_key_is_not_ready(live_server):
    with Client(live_server.url, "pc_sdk_not-a-key", events=False, poll_interval=0.2) as client:
        assert client.wait_until_ready(1) is False
        assert client.variation_detail("x", {"id": "u"}, 1).reason == Reason.CLIENT_NOT_READY
        assert "401" in (client.status()["last_error"] or "") or "403" in client.status()["last_error"]


# --------------------------------------------------------------------------- events


def test_close_flushes(live_server, admin, sdk_key):
    create_flag(admin, "close-flag")
    client = Client(live_server.url, sdk_key, flush_interval=60)
    assert client.wait_until_ready(5)
    for i in range(50):
        client.track("close-event", {"id": f"u{i}"}, i)
    assert count("event = 'close-event'") == 0
    client.close()
    stored = rows("event = 'close-event'")
    assert len(stored) == 50
    assert sorted(r["value"] for r in stored) == list(range(50))
    assert {r["unit_type"] for r in stored} == {"id"}
    assert client.stats()["sent"] == 50


def test_exposures_reach_the_service_once_per_unit(live_server, admin, sdk_key):
    create_running_experiment(admin, "sdk-exp", "sdk-exp-flag", dimensions=["country"])
    with Client(live_server.url, sdk_key, flush_interval=60) as client:
        assert client.wait_until_ready(5)
        for _ in range(3):
            for i in range(20):
                r = client.variation_detail("sdk-exp-flag", {"id": f"u{i}", "country": "DE"}, None)
                assert r.in_experiment
        assert client.flush(5)
    stored = rows("type = 'exposure'")
    assert len(stored) == 20
    assert {r["experiment"] for r in stored} == {"sdk-exp"}
    assert {r["unit_type"] for r in stored} == {"id"}
    assert sorted(r["unit"] for r in stored) == sorted(f"u{i}" for i in range(20))
    attributes = db.session.execute(sa.text("SELECT attributes FROM events WHERE type = 'exposure'")).scalars().all()
    db.session.commit()
    assert all((json.loads(a) if isinstance(a, str) else a) == {"country": "DE"} for a in attributes)


def test_track_reports_every_experiment_unit(live_server, admin, sdk_key):
    create_running_experiment(admin, "acct-exp", "acct-exp-flag", unit="account_id")
    with Client(live_server.url, sdk_key, flush_interval=60) as client:
        assert client.wait_until_ready(5)
        r = client.variation_detail("acct-exp-flag", {"id": "u1", "account_id": "acme"}, None)
        assert r.in_experiment and r.unit == "acme"
        client.track("purchase", {"id": "u1", "account_id": "acme"}, 10)
        client.track("purchase", {"id": "u2"}, 5)
        assert client.flush(5)
    got = sorted((r["type"], r["unit"], r["unit_type"], r["value"]) for r in rows())
    assert got == [("exposure", "acme", "account_id", None), ("track", "acme", "account_id", 10.0),
                   ("track", "u1", "id", 10.0), ("track", "u2", "id", 5.0)]


def test_evaluation_counts_reach_the_service(live_server, admin, sdk_key):
    create_flag(admin, "counted-flag")
    with Client(live_server.url, sdk_key, flush_interval=60) as client:
        assert client.wait_until_ready(5)
        for i in range(25):
            client.variation("counted-flag", {"id": f"u{i}"}, False)
        client.variation("no-such-flag", {"id": "u"}, False)
        assert client.flush(5)
    counts = db.session.execute(sa.text("SELECT flag, variation, count FROM flag_evaluations")).all()
    db.session.commit()
    assert sorted(tuple(r) for r in counts) == [("counted-flag", "on", 25), ("no-such-flag", "", 1)]


def test_sixteen_threads_lose_nothing(live_server, admin, sdk_key):
    create_flag(admin, "mt-flag", targeting({"rollout": {"weights": [["on", 5000], ["off", 5000]]}}))
    n_threads, per_thread = 16, 200
    with Client(live_server.url, sdk_key, flush_interval=0.1) as client:
        assert client.wait_until_ready(5)
        barrier = threading.Barrier(n_threads)
        errors = []

        def work(t):
            try:
                barrier.wait()
                for i in range(per_thread):
                    v = client.variation("mt-flag", {"id": f"t{t}-{i}"}, None)
                    client.track("mt-event", {"id": f"t{t}-{i}"}, 1 if v else 0)
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.flush(20)
        stats = client.stats()
    total = n_threads * per_thread
    assert errors == []
    assert count("event = 'mt-event'") == total
    assert db.session.execute(sa.text("SELECT count(DISTINCT unit) FROM events WHERE event = 'mt-event'")).scalar() == total
    assert stats["sent"] == total and stats["dropped"] == 0 and stats["failed"] == 0


def test_500s_429s_and_lost_responses_deliver_exactly_once(live_server, admin, sdk_key, monkeypatch):
    monkeypatch.setattr(events_module, "RETRY_BASE", 0.1)
    create_flag(admin, "fault-flag")
    with FaultProxy(live_server.url) as proxy:
        proxy.faults.extend([
            ("/sdk/v1/config", (500, {})), ("/sdk/v1/config", (429, {"Retry-After": "1"})),
            ("/sdk/v1/events", (500, {})), ("/sdk/v1/events", (503, {"Retry-After": "1"})),
            ("/sdk/v1/events", "forward_and_drop"), ("/sdk/v1/events", (429, {"Retry-After": "1"})),
            ("/sdk/v1/events", (502, {})),
        ])
        with Client(proxy.url, sdk_key, flush_interval=0.1, poll_interval=0.2) as client:
            assert client.wait_until_ready(10)  # after a 500 and a 429 on /config
            assert client.variation("fault-flag", {"id": "u"}, None) is True
            for i in range(100):
                client.track("fault-event", {"id": f"u{i}"})
            assert wait_for(lambda: not proxy.faults and client.stats()["queued"] == 0, 20)
            stats = client.stats()
        events_log = [(status, t) for path, status, t in proxy.log if path == "/sdk/v1/events"]
    stored = rows("event = 'fault-event'")
    assert len(stored) == 100 and len({r["unit"] for r in stored}) == 100
    assert stats["sent"] == 100 and stats["failed"] == 0 and stats["retries"] >= 4
    statuses = [s for s, _ in events_log]
    assert statuses[:5] == [500, 503, "dropped", 429, 502]
    # Retry-After: 1 was honoured after the 503 and after the 429
    assert events_log[2][1] - events_log[1][1] >= 0.95
    assert events_log[4][1] - events_log[3][1] >= 0.95


def test_outage_keeps_ruleset_buffers_events_and_delivers_each_once(own_server, admin, sdk_key):
    create_flag(admin, "outage-flag", kind="string", variations=[{"key": "a", "value": "alpha"},
                                                                {"key": "b", "value": "beta"}],
                body=targeting({"variation": "b"}, off_variation="a"))
    with Client(own_server.url, sdk_key, poll_interval=0.3, flush_interval=0.2) as client:
        assert client.wait_until_ready(5)
        for i in range(10):
            client.track("outage-event", {"id": f"before-{i}"})
        assert client.flush(5)
        own_server.stop()
        for i in range(300):
            assert client.variation("outage-flag", {"id": f"u{i}"}, None) == "beta"
            client.track("outage-event", {"id": f"during-{i}"})
        assert wait_for(lambda: client.status()["state"] == "interrupted", 5)
        time.sleep(0.5)  # several failed delivery attempts
        stats = client.stats()
        assert stats["queued"] == 300 and stats["dropped"] == 0 and stats["retries"] >= 1
        assert client.variation("outage-flag", {"id": "u"}, None) == "beta"
        own_server.start()
        assert client.flush(15)
        assert wait_for(lambda: client.status()["state"] == "valid", 5)
        stats = client.stats()
    stored = rows("event = 'outage-event'")
    units = [r["unit"] for r in stored]
    assert len(units) == 310 and len(set(units)) == 310
    assert stats["sent"] == 310 and stats["failed"] == 0


def test_restart_while_service_is_down_serves_from_cache_path(own_server, admin, sdk_key, tmp_path):
    create_flag(admin, "cached-flag", kind="number", variations=[{"key": "low", "value": 1},
                                                               {"key": "high", "value": 99}],
                body=targeting({"variation": "high"}, off_variation="low"))
    path = str(tmp_path / "pitcrew-ruleset.json")
    with Client(own_server.url, sdk_key, cache_path=path, events=False) as client:
        assert client.wait_until_ready(5)
        assert wait_for(lambda: os.path.exists(path), 3)
    own_server.stop()
    script = (
        "import json, sys\n"
        "from pitcrew import Client\n"
        f"c = Client({own_server.url!r}, {sdk_key!r}, cache_path={path!r}, events=False)\n"
        "print(json.dumps([c.is_ready(), c.status()['source'],"
        " c.variation('cached-flag', {'id': 'u'}, -1)]))\n"
        "c.close(0.5)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         check=True)
    assert json.loads(out.stdout) == [True, "cache", 99]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_evaluates_and_delivers_its_own_events(live_server, admin, sdk_key):
    create_flag(admin, "fork-flag")
    client = Client(live_server.url, sdk_key, flush_interval=60)
    try:
        assert client.wait_until_ready(5)
        for i in range(5):
            client.track("fork-parent", {"id": f"p{i}"})
        pid = os.fork()
        if pid == 0:  # the child: its own threads, queue and connections
            ok = False
            try:
                ok = (client.variation("fork-flag", {"id": "c"}, None) is True
                      and client.stats()["queued"] == 0)
                for i in range(7):
                    client.track("fork-child", {"id": f"c{i}"})
                client.close()
                ok = ok and client.stats()["sent"] == 7
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert count("event = 'fork-child'") == 7
        assert client.flush(5)
        assert count("event = 'fork-parent'") == 5
        assert client.stats()["sent"] == 5
    finally:
        client.close()
