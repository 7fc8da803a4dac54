"""The edge: an asyncio process serving /sdk/v1 from memory in front of the service.

What it answers itself, from memory (docs/delivery.md):

* ``GET /sdk/v1/config`` and ``GET /sdk/v1/stream`` for a key it has
  validated, with the service's own handlers (:mod:`pitcrew_edge.sdk_asgi`);
* ``POST /sdk/v1/evaluate`` when the body is certainly valid and no result
  puts the unit in an experiment (then the service must log the exposure).

Evaluations it answers are counted per environment and forwarded in bulk
as the ``evaluations`` summary of a ``POST /sdk/v1/events`` batch every
``evaluation_flush`` seconds and at shutdown (:mod:`pitcrew_edge.evaluations`),
so flags evaluated only through an edge are not taken for unused.

Everything else (refused or malformed credentials, other methods, invalid
bodies, ``/sdk/v1/events``, a client ahead of the edge's memory) is
forwarded to the upstream as it came and its answer relayed as it went, so
errors and acknowledgements are the service's own bytes. Events are
therefore acknowledged (202) only once the upstream has committed them.

Per environment the edge follows one upstream ``/sdk/v1/stream``, refetches
the ruleset when it announces a new version, and wakes its own streams;
while the upstream is down it keeps serving the last ruleset and reconnects
with jittered exponential backoff. Every key in use is re-validated every
``key_revalidate`` seconds, so a revoked key loses its streams within that
bound plus the service's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from pitcrew.evaluation import compile_ruleset, evaluate
from pitcrew.transport import is_retryable

from . import protocol, sdk_asgi
from .evaluations import EvaluationCounts, Tally
from .hub import Hub
from .settings import Settings

log = logging.getLogger("pitcrew.edge")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host"})
DROP_FROM_UPSTREAM = HOP_BY_HOP | {b"date", b"server", b"x-request-id"}
RETRY_AFTER = b"2"
UNAVAILABLE = "The Pitcrew service behind this edge is unreachable; retry later."
STREAM_READ_TIMEOUT = 45.0  # > 2 x the service's 15 s keep-alive
BACKOFF_BASE = 0.5
BACKOFF_MAX = 10.0
SHUTDOWN_FLUSH = 5.0  # seconds the last forward of evaluation counts may take at shutdown


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(failures - 1, 0)) * (0.5 + random.random() / 2)


@dataclass
class Ruleset:
    version: int
    body: bytes
    etag: str
    _compiled: object = field(default=None, repr=False)

    @property
    def compiled(self):
        if self._compiled is None:
            self._compiled = compile_ruleset(json.loads(self.body))
        return self._compiled


@dataclass
class Key:
    secret: str
    digest: str
    environment: str
    pinned: bool = False
    streams: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Environment:
    key: str
    ruleset: Ruleset | None = None
    connected: bool = False
    follower: asyncio.Task | None = None
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)


class Edge:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_environment()
        self.hub = Hub(heartbeat=self.settings.heartbeat, max_streams=self.settings.max_streams)
        self.keys: dict[str, Key] = {}
        self.environments: dict[str, Environment] = {}
        self.refusals: dict[str, tuple[float, int, list, bytes]] = {}
        self._admitting: dict[str, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self.client: httpx.AsyncClient | None = None
        self.stream_client: httpx.AsyncClient | None = None
        self.upstream_ok = False
        self._init_metrics()
        self.evaluations = EvaluationCounts(self.settings.evaluation_entries, self.m_evaluations,
                                            self.m_evaluations_dropped)
        self._flushing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._flusher: asyncio.Task | None = None

    # ------------------------------------------------------------------ metrics

    def _init_metrics(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.m_requests = Counter("pitcrew_edge_requests_total", "Requests answered", ["route", "source", "status"],
                                  registry=registry)
        self.m_upstream = Counter("pitcrew_edge_upstream_requests_total", "Requests to the upstream",
                                  ["kind", "outcome"], registry=registry)
        streams = Gauge("pitcrew_edge_open_streams", "Open SDK streams", registry=registry)
        streams.set_function(lambda: self.hub.open_streams)
        envs = Gauge("pitcrew_edge_environments", "Environments served", registry=registry)
        envs.set_function(lambda: len(self.environments))
        keys = Gauge("pitcrew_edge_sdk_keys", "SDK keys validated and in use", registry=registry)
        keys.set_function(lambda: len(self.keys))
        connected = Gauge("pitcrew_edge_upstream_streams_connected", "Upstream streams connected",
                          registry=registry)
        connected.set_function(lambda: sum(1 for env in self.environments.values() if env.connected))
        self._counters: dict = {}
        self.m_evaluations = Counter("pitcrew_edge_flag_evaluations_total",
                                     "Flag evaluations answered by the edge", ["environment"], registry=registry)
        self.m_evaluations_forwarded = Counter("pitcrew_edge_flag_evaluations_forwarded_total",
                                               "Flag evaluations answered by the edge and accepted upstream",
                                               registry=registry)
        self.m_evaluations_dropped = Counter("pitcrew_edge_flag_evaluations_dropped_total",
                                             "Flag evaluations answered by the edge and never forwarded "
                                             "(key limit, refused upstream)", registry=registry)

    def count(self, route: str, source: str, status: int) -> None:
        child = self._counters.get((route, source, status))
        if child is None:
            child = self._counters[(route, source, status)] = self.m_requests.labels(route, source, str(status))
        child.inc()

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        s = self.settings
        timeout = httpx.Timeout(s.upstream_timeout)
        self.client = httpx.AsyncClient(base_url=s.upstream, timeout=timeout, limits=httpx.Limits(
            max_connections=s.upstream_connections, max_keepalive_connections=s.upstream_connections))
        self.stream_client = httpx.AsyncClient(base_url=s.upstream, timeout=httpx.Timeout(
            s.upstream_timeout, read=STREAM_READ_TIMEOUT), limits=httpx.Limits(max_connections=None))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._revalidate_loop()))
        self._flusher = loop.create_task(self._evaluations_loop())
        for secret in s.sdk_keys:
            self._tasks.append(loop.create_task(self._admit_pinned(secret)))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for env in self.environments.values():
            if env.follower is not None:
                env.follower.cancel()
        self.hub.close()
        if self._flusher is not None:  # not cancelled: it flushes once more and returns
            self._stopping.set()
            done, _ = await asyncio.wait({self._flusher}, timeout=SHUTDOWN_FLUSH)
            if not done:
                self._flusher.cancel()
                log.warning("edge: evaluation counts not forwarded at shutdown (upstream too slow)")
        for client in (self.client, self.stream_client):
            if client is not None:
                await client.aclose()

    async def _admit_pinned(self, secret: str) -> None:
        failures = 0
        while True:
            result = await self.admit(secret)
            if isinstance(result, Key):
                result.pinned = True
                return
            if isinstance(result, tuple):
                log.error("edge: EDGE_SDK_KEYS holds a key the service refuses (HTTP %s)", result[0])
                return
            failures += 1
            await asyncio.sleep(backoff(failures))

    def ready(self) -> bool:
        pinned = {hashlib.sha256(k.encode()).hexdigest() for k in self.settings.sdk_keys}
        if not pinned <= set(self.keys):
            return False
        return all(env.ruleset is not None for env in self.environments.values())

    # ------------------------------------------------------------------ keys

    def _refusal(self, digest: str):
        found = self.refusals.get(digest)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self.refusals[digest]
            return None
        return found[1:]

    async def admit(self, secret: str) -> Key | tuple | None:
        """The validated key, a cached refusal ``(status, headers, body)``, or None (upstream down)."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
        key = self.keys.get(digest)
        if key is not None:
            key.last_used = time.monotonic()
            return key
        refusal = self._refusal(digest)
        if refusal is not None:
            return refusal
        pending = self._admitting.get(digest)
        if pending is None:
            pending = self._admitting[digest] = asyncio.ensure_future(self._validate(secret, digest))
            pending.add_done_callback(lambda _f: self._admitting.pop(digest, None))
        return await asyncio.shield(pending)

    async def _validate(self, secret: str, digest: str):
        try:
            response = await self.client.get(protocol.CONFIG_PATH, headers={"Authorization": f"Bearer {secret}"})
        except httpx.HTTPError:
            self.m_upstream.labels("validate", "unreachable").inc()
            return None
        self.m_upstream.labels("validate", str(response.status_code)).inc()
        if response.status_code == 200:
            body = response.content
            document = json.loads(body)
            environment = document["environment"]
            env = self.environments.get(environment)
            if env is None:
                env = self.environments[environment] = Environment(environment)
            self._offer(env, Ruleset(document["version"], body, response.headers["etag"]))
            key = self.keys[digest] = Key(secret, digest, environment)
            self._follow(env)
            return key
        if 400 <= response.status_code < 500:
            headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_FROM_UPSTREAM]
            refusal = (response.status_code, headers, response.content)
            if len(self.refusals) > 10000:
                self.refusals.clear()
            self.refusals[digest] = (time.monotonic() + self.settings.refusal_ttl, *refusal)
            return refusal
        return None

    def _forget(self, key: Key, refusal: tuple | None = None) -> None:
        self.keys.pop(key.digest, None)
        if refusal is not None:
            self.refusals[key.digest] = (time.monotonic() + self.settings.refusal_ttl, *refusal)
        self.hub.wake(key.environment)

    async def _revalidate_loop(self) -> None:
        """Ask the upstream about every key in use, every ``key_revalidate`` seconds."""
        limit = asyncio.Semaphore(16)

        async def check(key: Key) -> None:
            async with limit:
                env = self.environments.get(key.environment)
                headers = {"Authorization": f"Bearer {key.secret}"}
                if env is not None and env.ruleset is not None:
                    headers["If-None-Match"] = env.ruleset.etag
                try:
                    response = await self.client.get(protocol.CONFIG_PATH, headers=headers)
                except httpx.HTTPError:
                    self.upstream_ok = False
                    return
                self.upstream_ok = response.status_code < 500
                if response.status_code in (401, 403):
                    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_FROM_UPSTREAM]
                    self._forget(key, (response.status_code, headers, response.content))
                elif response.status_code == 200 and env is not None:
                    document = json.loads(response.content)
                    self._offer(env, Ruleset(document["version"], response.content, response.headers["etag"]))

        while True:
            started = time.monotonic()
            now = started
            for key in list(self.keys.values()):
                if not key.pinned and key.streams == 0 and now - key.last_used > self.settings.key_idle:
                    self.keys.pop(key.digest, None)
            for name in list(self.environments):
                if not any(k.environment == name for k in self.keys.values()):
                    self._drop_environment(name)
            await asyncio.gather(*(check(key) for key in list(self.keys.values())), return_exceptions=True)
            await asyncio.sleep(max(self.settings.key_revalidate - (time.monotonic() - started), 0.05))

    # ------------------------------------------------------------------ rulesets

    def _offer(self, env: Environment, ruleset: Ruleset) -> None:
        """Take ``ruleset`` if it is newer than the one held; wake the environment's streams."""
        if env.ruleset is None or ruleset.version > env.ruleset.version:
            env.ruleset = ruleset
            self.hub.wake(env.key)

    def _drop_environment(self, name: str) -> None:
        env = self.environments.pop(name, None)
        if env is not None and env.follower is not None:
            env.follower.cancel()
        for key in [k for k in self.keys.values() if k.environment == name]:
            self.keys.pop(key.digest, None)
        self.hub.wake(name)

    def _follow(self, env: Environment) -> None:
        if env.follower is None or env.follower.done():
            env.follower = asyncio.get_running_loop().create_task(self._follow_upstream(env))

    def _key_for(self, environment: str) -> Key | None:
        for key in self.keys.values():
            if key.environment == environment:
                return key
        return None

    async def refresh(self, env: Environment) -> None:
        """Fetch the environment's ruleset if the upstream has a newer one."""
        async with env.refreshing:
            key = self._key_for(env.key)
            if key is None:
                return
            headers = {"Authorization": f"Bearer {key.secret}"}
            if env.ruleset is not None:
                headers["If-None-Match"] = env.ruleset.etag
            try:
                response = await self.client.get(protocol.CONFIG_PATH, headers=headers)
            except httpx.HTTPError:
                self.m_upstream.labels("config", "unreachable").inc()
                return
            self.m_upstream.labels("config", str(response.status_code)).inc()
            if response.status_code == 200:
                document = json.loads(response.content)
                self._offer(env, Ruleset(document["version"], response.content, response.headers["etag"]))
            elif response.status_code in (401, 403):
                headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_FROM_UPSTREAM]
                self._forget(key, (response.status_code, headers, response.content))

    async def _follow_upstream(self, env: Environment) -> None:
        """One upstream stream for the environment, for as long as the edge serves it."""
        failures = 0
        while self.environments.get(env.key) is env:
            key = self._key_for(env.key)
            if key is None:
                return
            try:
                async with self.stream_client.stream(
                        "GET", protocol.STREAM_PATH, headers={"Authorization": f"Bearer {key.secret}"}) as response:
                    if response.status_code != 200:
                        self.m_upstream.labels("stream", str(response.status_code)).inc()
                        await response.aread()
                        if response.status_code in (401, 403):
                            await self.refresh(env)  # learns the refusal, forgets the key
                        raise ConnectionError(f"HTTP {response.status_code}")
                    self.m_upstream.labels("stream", "200").inc()
                    env.connected = True
                    self.upstream_ok = True
                    failures = 0
                    async for event, data in _sse(response.aiter_lines()):
                        if event == "config":
                            version = json.loads(data).get("version")
                            if env.ruleset is None or version != env.ruleset.version:
                                await self.refresh(env)
                        elif event == "error":
                            reason = json.loads(data).get("error")
                            if reason == "environment deleted":
                                self._drop_environment(env.key)
                                return
                            await self.refresh(env)  # e.g. this key was revoked
            except (httpx.HTTPError, ConnectionError, ValueError):
                pass
            finally:
                env.connected = False
            failures += 1
            await self.refresh(env)  # poll while the stream is down, so no change is missed
            await asyncio.sleep(backoff(failures))

    # ------------------------------------------------------------------ streams

    def stream_state(self, digest: str, environment: str) -> int | str:
        env = self.environments.get(environment)
        if env is None or env.ruleset is None:
            return "environment deleted"
        key = self.keys.get(digest)
        if key is None:
            return "key revoked"
        return env.ruleset.version

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def handle(self, scope, receive, send) -> None:
        path = scope["path"]
        method = scope["method"]
        if not path.startswith("/sdk/"):
            await self.handle_own(path, method, scope, send)
            return
        rid = sdk_asgi.request_id(scope)
        secret = protocol.bearer(sdk_asgi.header(scope, b"authorization"))
        local = (method == "GET" and path in (protocol.CONFIG_PATH, protocol.STREAM_PATH)) or (
            method == "POST" and path == protocol.EVALUATE_PATH)
        if secret is None or not local:
            await self.proxy(scope, receive, send, rid)
            return
        admitted = await self.admit(secret)
        if admitted is None:
            self.count(path, "edge", 503)
            await sdk_asgi.send_error(send, 503, "unavailable", UNAVAILABLE, rid, [(b"retry-after", RETRY_AFTER)])
            return
        if isinstance(admitted, tuple):
            status, headers, body = admitted
            self.count(path, "refusal", status)
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"x-request-id", rid.encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        env = self.environments.get(admitted.environment)
        if env is None or env.ruleset is None:
            await self.proxy(scope, receive, send, rid)
            return
        if path == protocol.CONFIG_PATH:
            if_none_match = sdk_asgi.header(scope, b"if-none-match")
            newest = protocol.newest_version(if_none_match)
            if newest is not None and newest > env.ruleset.version:
                await self.proxy(scope, receive, send, rid)  # the client is ahead of this edge
                return
            status = await sdk_asgi.serve_config(send, env.ruleset, if_none_match, rid)
            self.count(path, "edge", status)
        elif path == protocol.STREAM_PATH:
            admitted.streams += 1
            try:
                digest, name = admitted.digest, env.key
                status = await sdk_asgi.serve_stream(receive, send, hub=self.hub, environment=name, rid=rid,
                                                     state=lambda: self.stream_state(digest, name))
            finally:
                admitted.streams -= 1
                admitted.last_used = time.monotonic()
            self.count(path, "edge", status)
        else:
            await self.evaluate(scope, receive, send, rid, env, admitted)

    async def evaluate(self, scope, receive, send, rid: str, env: Environment, key: Key) -> None:
        body, complete = await _read_body(receive, self.settings.max_body)
        content_type = (sdk_asgi.header(scope, b"content-type") or "").split(";")[0].strip().lower()
        parsed = protocol.parse_evaluate(body) if complete and content_type == "application/json" else None
        if parsed is None:
            await self.proxy(scope, receive, send, rid, body, more=not complete)
            return
        context, keys = parsed
        compiled = env.ruleset.compiled
        if keys is None:
            keys = list(compiled.flag_keys)
        results = {key: evaluate(compiled, key, context, None) for key in keys}
        if any(result.in_experiment or result.holdout is not None for result in results.values()):
            # The service logs the exposures (experiments' and holdouts', with its own ids); it answers.
            if await self.proxy(scope, receive, send, rid, body, more=False, fallback=False):
                return
        await sdk_asgi.send_response(send, 200, [(b"content-type", b"application/json"),
                                                 (b"x-request-id", rid.encode())],
                                     protocol.evaluate_body(results))
        self.count(protocol.EVALUATE_PATH, "edge", 200)
        self.evaluations.count(env.key, key.secret, results)  # in memory; forwarded by the flush

    # ------------------------------------------------------------------ evaluation counts

    async def _evaluations_loop(self) -> None:
        """A flush every ``evaluation_flush`` seconds, and a last one once stopping is set
        (also when it was set during a flush: counts made meanwhile go too)."""
        while True:
            stop = self._stopping.is_set()
            if not stop:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.settings.evaluation_flush)
                    stop = True
                except TimeoutError:
                    pass
            try:
                await self.flush_evaluations()
            except Exception:  # never let the loop die: the counts stay for the next flush
                log.exception("edge: forwarding evaluation counts failed")
            if stop:
                return

    async def flush_evaluations(self) -> None:
        """Forward every environment's counts: the batch still pending first (same id, same
        bytes), then new batches from the carry; an environment stops at its first failure."""
        async with self._flushing:
            counts = self.evaluations
            for name, tally in list(counts.tallies.items()):
                # In a thread (tens of ms for thousands of keys), as the SDK takes its summary
                # beside the threads that count; the flusher is never cancelled mid-take but
                # at exit, so no two takes of a tally overlap.
                await asyncio.to_thread(counts.take, tally)
                while (batch := await counts.next_batch(tally)) is not None:
                    if not await self._send_evaluations(tally, batch):
                        break
                if name not in self.environments and counts.tallies.get(name) is tally:
                    counts.take(tally)
                    if tally.pending is None and not tally.carry:
                        del counts.tallies[name]  # no longer served, everything delivered

    async def _send_evaluations(self, tally: Tally, batch) -> bool:
        """POST one batch; True when its fate is settled (accepted, or refused for good)."""
        key = self._key_for(tally.environment)
        if key is not None:
            tally.secret = key.secret
        headers = {"Authorization": f"Bearer {tally.secret}", "Content-Type": "application/json",
                   "Content-Encoding": "gzip"}
        try:
            response = await self.client.post(protocol.EVENTS_PATH, content=batch.body, headers=headers)
        except httpx.HTTPError:
            self.m_upstream.labels("evaluations", "unreachable").inc()
            return False
        status = response.status_code
        self.m_upstream.labels("evaluations", str(status)).inc()
        if 200 <= status < 300:
            self.m_evaluations_forwarded.inc(self.evaluations.delivered(tally))
            return True
        if is_retryable(status):
            return False  # resent as it is by the next flush
        if status in (401, 403):
            for other in self.keys.values():  # this key was just revoked? Another of the environment
                if other.environment == tally.environment and other.secret != tally.secret:
                    tally.secret = other.secret
                    return False  # the next flush resends the batch with it
            dropped = self.evaluations.forget(tally.environment)
            log.warning("edge: the upstream refuses evaluation counts of environment %s (HTTP %s); "
                        "%s evaluations dropped", tally.environment, status, dropped)
            return False
        dropped = self.evaluations.delivered(tally)
        self.m_evaluations_dropped.inc(dropped)
        log.warning("edge: the upstream refused a batch of evaluation counts (HTTP %s): %s evaluations "
                    "dropped: %s", status, dropped, response.text[:300])
        return True

    async def proxy(self, scope, receive, send, rid: str, prefix: bytes = b"", more: bool = True,
                    fallback: bool = True) -> bool:
        """Forward the request to the upstream and relay its answer; False if unreachable
        (after answering 503 when ``fallback``)."""
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and k != b"x-request-id"]
        headers.append((b"x-request-id", rid.encode()))
        has_body = scope["method"] not in ("GET", "HEAD") or any(
            k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        content = None
        if has_body:
            if more:
                async def chunks():
                    if prefix:
                        yield prefix
                    while True:
                        message = await receive()
                        if message["type"] != "http.request":
                            return
                        yield message.get("body", b"")
                        if not message.get("more_body"):
                            return
                content = chunks()
            else:
                content = prefix
        url = scope["path"] + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
        kind = scope["path"].rsplit("/", 1)[-1]
        try:
            request = self.client.build_request(scope["method"], url, headers=headers, content=content)
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            self.m_upstream.labels(kind, "unreachable").inc()
            if fallback:
                self.count(scope["path"], "edge", 503)
                await sdk_asgi.send_error(send, 503, "unavailable", UNAVAILABLE, rid,
                                          [(b"retry-after", RETRY_AFTER)])
            return False
        try:
            self.m_upstream.labels(kind, str(response.status_code)).inc()
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_FROM_UPSTREAM]
            out.append((b"x-request-id", rid.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.count(scope["path"], "upstream", response.status_code)
        except httpx.HTTPError:
            pass  # the upstream broke off mid-answer; the client sees a truncated response
        finally:
            await response.aclose()
        return True

    async def handle_own(self, path: str, method: str, scope, send) -> None:
        rid = sdk_asgi.request_id(scope)
        json_type = [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
        if path == "/healthz" and method in ("GET", "HEAD"):
            await sdk_asgi.send_response(send, 200, json_type, protocol.json_body({"status": "ok"}))
        elif path == "/readyz" and method in ("GET", "HEAD"):
            ready = self.ready()
            body = {"status": "ok" if ready else "unavailable", "environments": {
                name: (env.ruleset.version if env.ruleset else None) for name, env in self.environments.items()},
                "upstream": "ok" if self.upstream_ok else "unreachable"}
            await sdk_asgi.send_response(send, 200 if ready else 503, json_type, protocol.json_body(body))
        elif path == "/metrics" and method in ("GET", "HEAD"):
            await sdk_asgi.send_response(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                                         generate_latest(self.registry))
        else:
            await sdk_asgi.send_error(send, 404, "not_found", "The requested URL was not found on this edge.", rid)


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` + 1 bytes of the request body; (body, complete)."""
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), True
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(parts), True
        if size > limit:
            return b"".join(parts), False


async def _sse(lines):
    """(event, data) for each Server-Sent Event in an async iterator of lines."""
    event, data = None, []
    async for line in lines:
        if not line:
            if data or event is not None:
                yield (event or "message"), "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def create_app(settings: Settings | None = None) -> Edge:
    return Edge(settings)
