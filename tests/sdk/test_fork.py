"""Fork safety against a stub service: a forked child gets its own threads, queue and
connections; it evaluates and delivers its own events; the parent's queued events are
delivered once, by the parent. (Against the real service: tests/test_sdk_integration.py.)"""

import multiprocessing
import os
import stat
import time

import pytest

from tests.sdk.support import StubService, experiment_ruleset, stub_client, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def fork_child(fn) -> int:
    """Fork and run ``fn()`` in the child (exit status 0 when it returns true); return the pid."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            code = 0 if fn() else 2
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid, timeout=15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("child did not finish")


def run_in_child(fn, timeout=15.0) -> int:
    return wait_child(fork_child(fn), timeout)


@pytest.fixture
def stub():
    with StubService(experiment_ruleset()) as s:
        yield s


def test_fork_child_restarts_threads_and_delivers_its_own_events(stub):
    client = stub_client(stub, flush_interval=60)
    try:
        assert client.wait_until_ready(3)
        for i in range(5):
            client.track("parent-event", {"id": f"p{i}"})  # queued, not yet sent
        parent_threads = (client._datasource._thread, client._events._thread)

        def child():
            assert client._events.stats()["queued"] == 0  # the parent's queue stays the parent's
            assert client._datasource._thread is not parent_threads[0]
            assert client._datasource.alive
            assert client.variation("exp-flag", {"id": "c1"}, None) is not None
            for i in range(3):
                client.track("child-event", {"id": f"c{i}"})
            client.close()
            return client.stats()["sent"] == 4

        assert run_in_child(child) == 0
        assert client.flush(3)
        events = list(stub.stored.values())
        assert sorted(e["unit"] for e in events if e.get("event") == "parent-event") == [f"p{i}" for i in range(5)]
        assert sorted(e["unit"] for e in events if e.get("event") == "child-event") == ["c0", "c1", "c2"]
        assert [e["unit"] for e in events if e["type"] == "exposure"] == ["c1"]
        assert len(stub.events) == len(stub.stored)  # nothing sent twice
        # the parent is unaffected
        assert client._datasource.alive and client._datasource._thread is parent_threads[0]
    finally:
        client.close()


def test_child_syncs_the_ruleset_on_its_own(stub):
    client = stub_client(stub, stream=True, events=False)
    try:
        assert client.wait_until_ready(3)
        assert wait_for(lambda: client.status()["stream_connected"], 2)

        inherited = client._datasource._transport._stream_sock.fileno()

        def child():
            # the parent's stream connection is not held open by the child
            if stat.S_ISSOCK(os.fstat(inherited).st_mode):
                return False
            # a new data source thread with its own stream connection sees version 2
            return wait_for(lambda: client.status()["version"] == 2, 5)

        pid = fork_child(child)
        time.sleep(0.3)
        stub.bump()
        assert wait_child(pid) == 0
        assert wait_for(lambda: client.status()["version"] == 2, 2)
    finally:
        client.close()


def _mp_worker(client, units):
    for u in units:
        client.track("mp-event", {"id": u})
    # no close(): the multiprocessing exit hook delivers


def test_multiprocessing_children_deliver_on_exit(stub):
    client = stub_client(stub, flush_interval=60)
    try:
        assert client.wait_until_ready(3)
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_mp_worker, args=(client, [f"m{i}-{j}" for j in range(4)]))
                 for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(15)
            assert p.exitcode == 0
        assert wait_for(lambda: len([e for e in stub.stored.values() if e.get("event") == "mp-event"]) == 8, 5)
    finally:
        client.close()
