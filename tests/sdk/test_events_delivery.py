"""Delivery that scales (docs/sdk-events.md): several batches in flight on separate
connections, batch ids fixed before the first attempt, drop reasons and a rate-limited
log line, and the on-disk spool (service down, restart of the host process, fork),
against the stub service. The kill -9 test against the real service is in
tests/service/test_sdk_spool.py."""

import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from pitcrew import Client
from pitcrew.events import MAX_IN_FLIGHT
from pitcrew.events import delivery as delivery_module
from tests.sdk.support import StubService, experiment_ruleset, stub_client, wait_for


@pytest.fixture
def stub():
    with StubService(experiment_ruleset()) as s:
        yield s


def test_batches_go_out_side_by_side_on_separate_connections(stub):
    stub.events_delay = 0.3
    with stub_client(stub, flush_interval=60, max_queue=20000) as client:
        assert client.wait_until_ready(3)
        before = stub.connections
        for i in range(8000):
            client.track("e", {"id": f"u{i}"})
        assert client.flush(10)
        assert len(stub.stored) == 8000
        assert stub.posts_max_active == MAX_IN_FLIGHT
        assert stub.connections - before >= MAX_IN_FLIGHT  # keep-alive: one per sender
        assert client.stats()["dropped"] == 0


def test_every_body_has_a_batch_id_kept_across_retries(stub, monkeypatch):
    monkeypatch.setattr(delivery_module, "RETRY_BASE", 0.05)
    stub.events_script.extend([(500, {}, b""), ("store_and_close",)])
    with stub_client(stub, flush_interval=60) as client:
        assert client.wait_until_ready(3)
        for i in range(10):
            client.track("e", {"id": f"u{i}"})
        assert client.flush(5)
    ids = [b["batch"] for b in stub.batches]
    assert all(uuid.UUID(i).version == 4 for i in ids)
    # the batch stored without an answer came again, same batch id and same event ids
    assert len(ids) == 2 and ids[0] == ids[1]
    assert [e["id"] for e in stub.batches[0]["events"]] == [e["id"] for e in stub.batches[1]["events"]]
    assert len(stub.stored) == 10


def test_drops_are_counted_by_reason_and_logged_once_per_interval(stub, caplog):
    stub.stop()
    with caplog.at_level(logging.WARNING, logger="pitcrew"):
        client = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=0.05,
                        max_queue=50, timeout=0.5)
        try:
            for i in range(200):
                client.track("e", {"id": f"u{i}"})
            assert wait_for(lambda: any("dropped" in r.getMessage() for r in caplog.records), 3)
            for i in range(200):
                client.track("e", {"id": f"v{i}"})
            time.sleep(0.3)
            stats = client.stats()
        finally:
            client.close(0.2)
    assert stats["dropped_by_reason"]["queue_full"] == stats["dropped"] >= 300
    assert len([r for r in caplog.records if "events dropped" in r.getMessage()]) == 1
    after = client.stats()
    client.track("late", {"id": "u"})
    assert client.stats()["dropped_by_reason"]["closed"] == 1 and after["dropped"] + 1 == client.stats()["dropped"]


def spool_files(path):
    return sorted(f for _, _, files in os.walk(path) for f in files if f.endswith(".batch"))


def test_spool_keeps_everything_while_the_service_is_down_then_delivers_once(tmp_path):
    stub = StubService(experiment_ruleset())
    stub.start()
    port = stub.port
    stub.stop()  # down
    spool = tmp_path / "spool"
    client = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=0.05,
                    max_queue=1000, timeout=0.5, spool_path=str(spool))
    try:
        for i in range(5000):
            client.track("e", {"id": f"u{i}"})
            if i % 200 == 0:
                time.sleep(0.01)  # a queue 5x smaller than what is tracked: the spool takes it
        assert wait_for(lambda: client.stats()["spooled"] == 5000, 20), client.stats()
        stats = client.stats()
        assert stats["dropped"] == 0 and stats["queued"] == 5000
        assert spool_files(spool)
        stub.start(port)  # back
        assert client.flush(20)
        assert len(stub.stored) == 5000 and len(stub.events) == 5000
        assert client.stats()["spooled"] == 0 and spool_files(spool) == []
    finally:
        client.close(1)
        stub.stop()


def test_a_restarted_process_resends_what_the_spool_kept(tmp_path, stub):
    spool = tmp_path / "spool"
    port = stub.port
    stub.stop()
    script = textwrap.dedent(f"""
        from pitcrew import Client
        from tests.sdk.support import experiment_ruleset
        client = Client("http://127.0.0.1:{port}", {stub.sdk_key!r}, bootstrap=experiment_ruleset(),
                        flush_interval=0.05, timeout=0.3, spool_path={str(spool)!r})
        for i in range(1500):
            client.track("restart-event", {{"id": f"u{{i}}"}})
        client.close(0.5)  # the service is down: the events stay on disk
        print(client.stats()["spooled"], client.stats()["failed"])
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         timeout=60, cwd=os.getcwd())
    assert out.stdout.split() == ["1500", "0"]
    assert spool_files(spool)
    stub.start(port)
    client = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=60,
                    spool_path=str(spool))
    try:
        assert wait_for(lambda: len(stub.stored) == 1500, 10)
        assert client.flush(5) and spool_files(spool) == []
    finally:
        client.close()
    assert sorted(e["unit"] for e in stub.stored.values()) == sorted(f"u{i}" for i in range(1500))
    assert len(stub.events) == 1500


def test_two_processes_never_share_a_spool_slot(tmp_path, stub):
    spool = tmp_path / "spool"
    a = stub_client(stub, spool_path=str(spool), flush_interval=60)
    b = stub_client(stub, spool_path=str(spool), flush_interval=60)
    try:
        a.track("e", {"id": "a"})
        b.track("e", {"id": "b"})
        assert a.flush(3) and b.flush(3)
        assert sorted(os.listdir(spool)) == ["slot-0", "slot-1"]
        assert sorted(e["unit"] for e in stub.stored.values()) == ["a", "b"]
        assert len(stub.events) == 2
    finally:
        a.close()
        b.close()


def test_track_stays_cheap_with_a_spool(tmp_path, stub):
    with stub_client(stub, spool_path=str(tmp_path / "s"), flush_interval=60, max_queue=100_000) as c:
        contexts = [{"id": f"u{i}"} for i in range(20000)]
        start = time.perf_counter()
        for ctx in contexts:
            c.track("e", ctx)
        per_call = (time.perf_counter() - start) / len(contexts)
        assert per_call < 50e-6  # ~1-2 us measured (benchmarks/bench_sdk.py); bound proves no I/O
        assert c.flush(10)
        assert len(stub.stored) == 20000


def test_a_burst_spills_to_disk_without_drops_and_a_restart_delivers_it_once(tmp_path):
    stub = StubService(experiment_ruleset())
    stub.start()
    port = stub.port
    stub.stop()  # down for the burst
    spool = tmp_path / "spool"
    client = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=0.05,
                    timeout=0.5, spool_path=str(spool))
    n = 60000
    for i in range(n):  # ~300,000 events/s, six times max_queue: spilled to disk raw
        client.track("burst", {"id": f"u{i}"})
        if i % 1000 == 999:
            time.sleep(0.003)  # a host thread does other work (and I/O) now and then
    assert wait_for(lambda: client.stats()["spooled"] == n, 10), client.stats()
    assert client.stats()["dropped"] == 0
    files = [f for _, _, names in os.walk(spool) for f in names]
    # spilled raw during the burst: raw files, or the batch files converted from them
    assert any(f.endswith(".raw") or "." in f.split("-")[0] for f in files), files
    client.close(0.3)  # still down: everything stays on disk
    stub.start(port)
    again = Client(stub.url, stub.sdk_key, bootstrap=experiment_ruleset(), flush_interval=60,
                   spool_path=str(spool))
    try:
        assert wait_for(lambda: len(stub.stored) == n, 30), len(stub.stored)
        assert again.flush(10)
    finally:
        again.close()
    assert len(stub.events) == n  # each event sent once
    assert sorted(int(e["unit"][1:]) for e in stub.stored.values()) == list(range(n))


def test_converting_a_spilled_file_again_gives_the_same_bodies():
    """A crash in the middle of converting a raw file: redoing it must not create new ids."""
    from pitcrew.events.batching import build_batch

    items = [(i, "track", 1.7e9 + i, f"u{i}", None, None, "e", None, {"unit_type": "id"})
             for i in range(2500)]
    seed = os.urandom(16)

    def convert():
        out, pos, rest = [], 0, items
        while rest:
            batch, left, _, _ = build_batch(rest, [], 1000, seed=(seed, pos))
            pos += len(rest) - len(left)
            rest = left
            out.append(batch.body)
        return out

    first, second = convert(), convert()
    assert first == second and len(first) == 3
    other = build_batch(items, [], 1000, seed=(os.urandom(16), 0))[0].body
    assert other != first[0]


def test_raw_files_left_by_a_crash_are_converted_and_sent_once(tmp_path, stub):
    """A process killed right after spilling a burst leaves .raw files (and maybe part of a
    conversion): the next process converts them with the same ids and sends each event once."""
    import marshal

    from pitcrew.events.batching import build_batch
    from pitcrew.events.spool import Spool

    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir))
    assert spool.open() == []
    items = [(i + 1, "track", time.time(), f"u{i}", None, None, "spilled", None, {"unit_type": "id"})
             for i in range(2500)]
    seed = os.urandom(16)
    raw = spool.write_raw(marshal.dumps((seed, items)), len(items))
    # the crash came after the first converted part was written (and maybe sent)
    part, _, _, _ = build_batch(items, [], 1000, seed=(seed, 0))
    spool.write_part(raw, 0, part.body, part.count)
    spool.close()  # the process is gone: its slot is free
    client = stub_client(stub, spool_path=str(spool_dir), flush_interval=60)
    try:
        assert wait_for(lambda: len(stub.stored) == 2500, 10), len(stub.stored)
        assert client.flush(5)
    finally:
        client.close()
    assert len(stub.events) == 2500
    assert sorted(int(e["unit"][1:]) for e in stub.stored.values()) == list(range(2500))
    first_ids = {e["id"] for e in __import__("json").loads(
        __import__("zlib").decompress(part.body, 47))["events"]}
    assert first_ids <= set(stub.stored)  # the redone conversion kept the ids
    assert spool_files(spool_dir) == []
