"""The client's parts implement the narrow interfaces of pitcrew.interfaces, and the client
uses nothing else of them: a fake event sink that implements only EventSink receives
everything (so the interface is complete and the client does not reach past it)."""

import threading

from pitcrew import Client
from pitcrew.datasource import DataSource
from pitcrew.events import EventProcessor
from pitcrew.interfaces import DataSource as DataSourceInterface
from pitcrew.interfaces import DataStore, EventSink
from pitcrew.store import RulesetStore
from pitcrew.transport import Transport
from tests.sdk.support import experiment_ruleset


def test_implementations_conform():
    assert isinstance(RulesetStore(), DataStore)
    ds = DataSource(Transport("http://127.0.0.1:9", "k"), RulesetStore(), poll_interval=1, stream=False,
                    cache_path=None, fingerprint="x")
    assert isinstance(ds, DataSourceInterface)
    assert isinstance(EventProcessor(lambda: Transport("http://127.0.0.1:9", "k")), EventSink)


class RecordingSink:
    """Implements EventSink and nothing more."""

    def __init__(self):
        self.counters = {}
        self.exposures, self.tracks, self.calls = [], [], []
        self._started = False
        self.lock = threading.Lock()

    def counter(self, key):
        import itertools

        return self.counters.setdefault(key, itertools.count())

    def exposure(self, result, compiled, context):
        self.exposures.append((result.experiment, result.unit, result.variation))

    def holdout_exposure(self, holdout):
        self.exposures.append(holdout[:3])

    def track(self, event, context, value, unit_attrs):
        self.tracks.append((event, context["id"], value))
        return True

    @property
    def started(self):
        return self._started

    def start(self):
        self._started = True

    def flush(self, timeout):
        self.calls.append("flush")
        return True

    def close(self, timeout):
        self.calls.append("close")
        return True

    def after_fork(self):
        self.calls.append("after_fork")

    def stats(self):
        return {"sent": 0}


def test_client_talks_to_its_event_sink_only_through_the_interface():
    sink = RecordingSink()
    assert isinstance(sink, EventSink)
    client = Client("http://127.0.0.1:9", "k", bootstrap=experiment_ruleset(), events=False,
                    poll_interval=3600)
    client._events, client._counts = sink, sink.counters  # swap the part in
    try:
        r = client.variation_detail("exp-flag", {"id": "u1"}, None)
        client.variation("exp-flag", {"id": "u1"}, None)
        client.track("buy", {"id": "u1"}, 3)
        assert client.flush(1)
        assert client.stats() == {"sent": 0}
    finally:
        client.close(0.1)
    assert sink.exposures == [("exp", "u1", r.variation)] * 2
    assert sink.tracks == [("buy", "u1", 3)]
    assert sink.calls == ["flush", "close"]
    assert sum(next(c) for c in sink.counters.values()) == 2  # one next() per evaluation, +0 reads
