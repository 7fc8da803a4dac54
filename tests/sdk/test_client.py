"""SDK client API (docs/sdk.md): readiness, bootstrap, typed variants, cache file,
atomic swaps, close() bounds. Uses a stub of the /sdk/v1 endpoints on a loopback port;
tests/test_sdk_integration.py runs the same client against the real service."""

import json
import logging
import os
import socket
import threading
import time

import pytest

from pitcrew import Client, EvaluationResult, Reason
from pitcrew.store import key_fingerprint, read_cache, write_cache
from tests.sdk.support import (
    StubService,
    bool_flag,
    experiment_ruleset,
    flag,
    ruleset,
    stub_client,
    three_rule_flag,
    wait_for,
)


@pytest.fixture
def stub():
    with StubService(ruleset([bool_flag("f"), three_rule_flag()])) as s:
        yield s


def unreachable_url():
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_not_ready_serves_the_default_with_reason():
    start = time.monotonic()
    client = Client(unreachable_url(), "k", events=False)
    try:
        assert time.monotonic() - start < 0.5  # construction never waits for the network
        assert client.variation("f", {"id": "u"}, "dflt") == "dflt"
        r = client.variation_detail("f", {"id": "u"}, 7)
        assert (r.value, r.reason, r.variation) == (7, Reason.CLIENT_NOT_READY, None)
        assert client.is_ready() is False
        assert client.wait_until_ready(0.2) is False
        assert client.enabled("f", {"id": "u"}) is False
        assert client.status()["ready"] is False
    finally:
        client.close()


def test_ready_after_first_fetch(stub):
    with stub_client(stub) as client:
        assert client.wait_until_ready(3)
        assert client.is_ready()
        assert client.variation("f", {"id": "u"}, False) is True
        r = client.variation_detail("f", {"id": "u"}, False)
        assert isinstance(r, EvaluationResult)
        assert (r.value, r.variation, r.reason) == (True, "on", Reason.FALLTHROUGH)
        assert client.status()["source"] == "service"
        assert client.status()["version"] == 1


def test_invalid_url_and_key_types_raise_at_construction():
    with pytest.raises(ValueError):
        Client("ftp://x", "k")
    with pytest.raises(TypeError):
        Client(None, "k")


def test_bootstrap_serves_before_the_service_answers():
    client = Client(unreachable_url(), "k", bootstrap=ruleset([bool_flag("f")]), events=False)
    try:
        assert client.is_ready()
        assert client.variation("f", {"id": "u"}, False) is True
        assert client.status()["source"] == "bootstrap"
    finally:
        client.close()


def test_invalid_bootstrap_is_ignored(caplog):
    client = Client(unreachable_url(), "k", bootstrap=["not", "a", "ruleset"], events=False)
    try:
        assert not client.is_ready()
        assert client.variation("f", {}, 3) == 3
    finally:
        client.close()


def test_typed_variations_and_wrong_type():
    rs = ruleset([
        bool_flag("b"),
        flag("s", "string", {"a": "alpha", "b": "beta"}),
        flag("n", "number", {"one": 1, "half": 0.5}),
        flag("j", "json", {"cfg": {"limits": [1, 2]}}),
    ])
    client = Client(unreachable_url(), "k", bootstrap=rs, events=False)
    try:
        ctx = {"id": "u"}
        assert client.bool_variation("b", ctx, False) is True
        assert client.string_variation("s", ctx, "x") == "alpha"
        assert client.number_variation("n", ctx, 0) == 1
        assert client.json_variation("j", ctx, None) == {"limits": [1, 2]}
        # kind mismatches: the default, reason WRONG_TYPE
        assert client.bool_variation("s", ctx, False) is False
        assert client.string_variation("b", ctx, "x") == "x"
        assert client.number_variation("j", ctx, -1) == -1
        assert client.json_variation("n", ctx, "d") == "d"
        r = client.variation_detail("s", ctx, False, kind="boolean")
        assert (r.value, r.reason) == (False, Reason.WRONG_TYPE)
        assert client.variation_detail("b", ctx, 0, kind="nonsense").reason == Reason.WRONG_TYPE
        # unknown flag: FLAG_NOT_FOUND, not WRONG_TYPE
        assert client.variation_detail("zz", ctx, 1, kind="number").reason == Reason.FLAG_NOT_FOUND
        assert client.enabled("b", ctx) is True
        assert client.enabled("s", ctx) is False
    finally:
        client.close()


def test_json_values_cannot_corrupt_the_ruleset():
    client = Client(unreachable_url(), "k", events=False,
                    bootstrap=ruleset([flag("j", "json", {"cfg": {"limits": [1, 2]}})]))
    try:
        v = client.variation("j", {"id": "u"}, None)
        v["limits"].append(3)
        v["new"] = True
        client.variation_detail("j", {"id": "u"}).value["limits"].clear()
        client.json_variation("j", {"id": "u"})["limits"].clear()
        assert client.variation("j", {"id": "u"}, None) == {"limits": [1, 2]}
    finally:
        client.close()


def test_results_are_private_copies():
    client = Client(unreachable_url(), "k", events=False, bootstrap=ruleset([bool_flag("f")]))
    try:
        r = client.variation_detail("f", {"id": "u"}, None)
        r.value = "tampered"
        r.variation = "x"
        assert client.variation_detail("f", {"id": "u"}, None).value is True
        assert client.variation("f", {"id": "u"}, None) is True
    finally:
        client.close()


def test_no_errors_logged_for_a_normal_start(caplog):
    with caplog.at_level(logging.ERROR, logger="pitcrew"):
        client = Client(unreachable_url(), "k", bootstrap=ruleset([bool_flag("f")]))
        client.close(0.2)
    assert caplog.records == []


def test_all_flags():
    client = Client(unreachable_url(), "k", events=False,
                    bootstrap=ruleset([bool_flag("a"), flag("s", "string", {"x": "y"})]))
    try:
        assert client.all_flags({"id": "u"}) == {"a": True, "s": "y"}
    finally:
        client.close()


def test_cache_file_written_atomically_and_used_after_restart(stub, tmp_path):
    path = str(tmp_path / "sub" / "ruleset.json")
    with stub_client(stub, cache_path=path) as client:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: os.path.exists(path))
    cached = read_cache(path)
    assert cached is not None and cached[0]["version"] == 1
    assert cached[1] == '"1"'
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]
    stub.stop()
    # "restart" while the service is down: the cached ruleset is served at once
    client = Client(stub.url, stub.sdk_key, cache_path=path, events=False, poll_interval=0.2)
    try:
        assert client.is_ready()
        assert client.status()["source"] == "cache"
        assert client.variation("f", {"id": "u"}, False) is True
    finally:
        client.close()


def test_cache_etag_is_revalidated(stub, tmp_path):
    path = str(tmp_path / "ruleset.json")
    with stub_client(stub, cache_path=path) as client:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: os.path.exists(path))
    with stub_client(stub, cache_path=path, events=False) as client:
        assert wait_for(lambda: client.status()["source"] == "service")
    assert ("GET", "/sdk/v1/config", 304) in stub.requests


def test_corrupt_cache_file_is_ignored(tmp_path, caplog):
    path = tmp_path / "ruleset.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pitcrew"):
        client = Client(unreachable_url(), "k", cache_path=str(path), events=False)
    try:
        assert not client.is_ready()
        assert "unreadable cache" in caplog.text
    finally:
        client.close()


def test_cache_of_another_service_or_key_is_not_loaded(stub, tmp_path, caplog):
    """A cache file written with another URL or key holds another environment's flags: it is
    not served, not even while the service is unreachable; with the same URL and key it is."""
    path = str(tmp_path / "ruleset.json")
    with stub_client(stub, cache_path=path, events=False) as writer:
        assert writer.wait_until_ready(3)
        assert wait_for(lambda: os.path.exists(path))
    stub.stop()  # its port is closed now: nothing answers
    other_key, other_url = "pc_sdk_staging_secret", unreachable_url()
    for url, key in ((stub.url, other_key), (other_url, stub.sdk_key)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pitcrew"):
            client = Client(url, key, cache_path=path, events=False, poll_interval=300)
        try:
            assert not client.is_ready()
            detail = client.variation_detail("f", {"id": "u"}, "default")
            assert (detail.value, detail.reason) == ("default", Reason.CLIENT_NOT_READY)
            assert client.status()["source"] is None
        finally:
            client.close()
        refused = [r for r in caplog.records if "another service URL or SDK key" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.WARNING
        assert path in refused[0].getMessage()
        assert other_key not in caplog.text and stub.sdk_key not in caplog.text
    # the same URL and key: served from the file while the service is down
    client = Client(stub.url, stub.sdk_key, cache_path=path, events=False, poll_interval=300)
    try:
        assert client.is_ready() and client.status()["source"] == "cache"
        assert client.variation("f", {"id": "u"}, False) is True
    finally:
        client.close()


def test_refused_cache_file_is_replaced_by_the_first_fetch(stub, tmp_path):
    path = str(tmp_path / "ruleset.json")
    other = ruleset([bool_flag("f", enabled=False)], version=40, environment="staging")
    write_cache(path, json.dumps(other).encode(), '"40"', key_fingerprint(stub.url, "pc_sdk_other"))
    with stub_client(stub, cache_path=path, events=False) as client:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: read_cache(path, key_fingerprint(stub.url, stub.sdk_key)) is not None)
        assert client.status()["version"] == 1 and client.status()["environment"] == "production"
    assert read_cache(path)[0]["version"] == 1


@pytest.mark.parametrize("header", [
    {"format": 1, "etag": '"3"'},  # no fingerprint
    {"format": 0, "etag": '"3"', "fingerprint": "FP"},  # another format
    {"etag": '"3"', "fingerprint": "FP"},  # no format
])
def test_cache_file_of_another_format_or_without_fingerprint_is_refused(tmp_path, caplog, header):
    url = unreachable_url()
    path = tmp_path / "ruleset.json"
    doc = dict(header, ruleset=ruleset([bool_flag("f")], version=3))
    if doc.get("fingerprint") == "FP":
        doc["fingerprint"] = key_fingerprint(url, "k")
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="pitcrew"):
        client = Client(url, "k", cache_path=str(path), events=False, poll_interval=300)
    try:
        assert not client.is_ready()
        assert f"ignoring cache file {path}" in caplog.text
    finally:
        client.close()


def test_cache_newer_than_bootstrap_wins(tmp_path):
    path = str(tmp_path / "c.json")
    url = unreachable_url()
    write_cache(path, json.dumps(ruleset([bool_flag("f", off="off", enabled=False)], version=9)).encode(),
                '"9"', key_fingerprint(url, "k"))
    client = Client(url, "k", cache_path=path, events=False,
                    bootstrap=ruleset([bool_flag("f")], version=3))
    try:
        assert client.status()["version"] == 9
        assert client.variation("f", {"id": "u"}, None) is False
    finally:
        client.close()


def test_readers_never_see_half_an_update(stub):
    """Flag b requires flag a to serve vN in ruleset N: a reader mixing two rulesets would
    see PREREQUISITE_FAILED. Rulesets are swapped while 4 threads evaluate."""

    def rs(n):
        values = {f"v{i}": i for i in range(4)}
        a = flag("a", "number", values, serve={"variation": f"v{n % 4}"}, version=n)
        b = bool_flag("b", prerequisites=[{"flag": "a", "variation": f"v{n % 4}"}], version=n)
        return ruleset([a, b], version=n)

    stub.set_ruleset(rs(1))
    client = stub_client(stub, events=False, stream=True)
    try:
        assert client.wait_until_ready(3)
        bad = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                r = client.variation_detail("b", {"id": "u"}, None)
                if r.reason != Reason.FALLTHROUGH:
                    bad.append(r)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for n in range(2, 12):
            stub.set_ruleset(rs(n))
            assert wait_for(lambda n=n: client.status()["version"] == n, 3)
        stop.set()
        for t in threads:
            t.join()
        assert bad == []
    finally:
        client.close()


def test_close_returns_in_time_when_the_network_hangs():
    """A server that accepts connections and never answers, and a DNS lookup that never returns."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        client = Client(url, "k", bootstrap=experiment_ruleset(), timeout=30, flush_interval=0.05)
        for i in range(50):
            client.variation("exp-flag", {"id": f"u{i}"}, False)
            client.track("buy", {"id": f"u{i}"})
        time.sleep(0.3)  # both threads are now blocked reading from the silent server
        start = time.monotonic()
        client.close(timeout=0.5)
        assert time.monotonic() - start < 1.0
    finally:
        silent.close()


def test_close_returns_in_time_when_dns_hangs(monkeypatch):
    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host, *args, **kw):
        if host == "dns-hangs.invalid":
            release.wait(20)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        client = Client("http://dns-hangs.invalid", "k", bootstrap=experiment_ruleset(), timeout=30,
                        flush_interval=0.05)
        client.track("buy", {"id": "u"})
        time.sleep(0.2)
        start = time.monotonic()
        client.close(timeout=0.5)
        assert time.monotonic() - start < 1.0
    finally:
        release.set()


def test_threads_per_client_datasource_events_and_senders_on_demand(stub):
    """A data source thread, an events thread, and senders: one at low load (at most
    MAX_IN_FLIGHT under load, see test_events)."""
    before = set(threading.enumerate())
    clients = [stub_client(stub, stream=s) for s in (False, True)]
    try:
        for c in clients:
            assert c.wait_until_ready(3)
            c.track("x", {"id": "u"})
            assert c.flush(3)
        new = [t for t in threading.enumerate() if t.name.startswith("pitcrew") and t not in before]
        names = sorted(t.name for t in new)
        assert names == ["pitcrew-datasource"] * 2 + ["pitcrew-events"] * 2 + ["pitcrew-events-send"] * 2
        assert all(t.daemon for t in new)
    finally:
        for c in clients:
            c.close()


def test_logs_through_pitcrew_logger_and_never_prints(capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="pitcrew"):
        client = Client(unreachable_url(), "k", poll_interval=0.05, flush_interval=0.05)
        client.track("e", {"id": "u"})
        time.sleep(0.3)
        client.close(0.5)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert all(r.name == "pitcrew" for r in caplog.records)
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_context_manager_closes(stub):
    with stub_client(stub) as client:
        assert client.wait_until_ready(3)
    assert client._closed
    assert not client._datasource.alive
    # still serves the last ruleset after close, and never raises
    assert client.variation("f", {"id": "u"}, False) is True
    client.track("after-close", {"id": "u"})
    client.close()


def test_nothing_blocks_an_asyncio_event_loop():
    """Construction, variation and track inside a running loop never stall it, even when the
    service accepts connections and never answers."""
    import asyncio

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"

    async def main():
        lags = []
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append(time.monotonic() - t - 0.005)

        tick = asyncio.create_task(ticker())
        start = time.monotonic()
        client = Client(url, "k", bootstrap=experiment_ruleset(), timeout=10, flush_interval=0.01)
        assert time.monotonic() - start < 0.05
        for i in range(3000):
            client.variation("exp-flag", {"id": f"u{i}"}, None)
            client.track("e", {"id": f"u{i}"})
            if i % 100 == 0:
                await asyncio.sleep(0)
        assert client.wait_until_ready(0)  # bootstrap: ready without waiting
        await asyncio.to_thread(client.close, 0.3)
        stop.set()
        await tick
        return max(lags)

    try:
        assert asyncio.run(main()) < 0.1
    finally:
        silent.close()
