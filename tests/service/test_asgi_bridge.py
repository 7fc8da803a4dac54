"""service.asgi.FlaskBridge: the Flask app in threads behind the event loop (docs/delivery.md)."""

import asyncio
import threading
import time

import pytest

from service import asgi


def scope(method="GET", headers=()):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": "/x", "raw_path": b"/x", "query_string": b"a=1", "root_path": "",
            "headers": [(b"host", b"test"), *headers], "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


def receiver(chunks):
    """An ASGI receive giving ``chunks`` as the request body, noting on which thread it ran."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    threads = []

    async def receive():
        threads.append(threading.current_thread())
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive, threads


def run(bridge, scope_, receive, send):
    async def main():
        await bridge(scope_, receive, send)

    asyncio.run(main())


def test_a_small_response_is_start_body_end():
    def app(environ, start_response):
        assert environ["QUERY_STRING"] == "a=1" and environ["PATH_INFO"] == "/x"
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-A", "b")])
        return [b"hello"]

    sent = []

    async def send(message):
        sent.append(message)

    receive, _ = receiver([b""])
    run(asgi.FlaskBridge(app, 2), scope(), receive, send)
    assert sent == [
        {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain"), (b"x-a", b"b")]},
        {"type": "http.response.body", "body": b"hello", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_small_bodies_are_read_on_the_loop_large_ones_by_the_thread():
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    async def send(message):
        pass

    small = [b'{"a":', b"1}"]
    receive, threads = receiver(small)
    run(asgi.FlaskBridge(app, 2), scope("POST", [(b"content-length", b"7")]), receive, send)
    assert seen["body"] == b'{"a":1}'
    assert all(t is threading.main_thread() for t in threads)  # no thread waited for the client

    large = [b"x" * 40_000, b"y" * 40_000, b"z" * 40_000]
    receive, threads = receiver(large)
    declared = str(sum(map(len, large))).encode()
    run(asgi.FlaskBridge(app, 2), scope("POST", [(b"content-length", declared)]), receive, send)
    assert seen["body"] == b"".join(large)


def test_a_streamed_response_reaches_the_client_chunk_by_chunk():
    first_sent = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/csv")])

        def rows():
            yield b"a\n"
            # The next row is produced only once the first one is out.
            assert first_sent.wait(5), "first chunk held back"
            yield b"b\n"
        return rows()

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if message["body"] == b"a\n":
                first_sent.set()

    receive, _ = receiver([b""])
    run(asgi.FlaskBridge(app, 2), scope(), receive, send)
    assert b"".join(bodies) == b"a\nb\n"


def test_a_slow_client_holds_the_thread_back_and_bounds_memory():
    produced = []
    chunk = b"x" * (64 * 1024)

    def app(environ, start_response):
        start_response("200 OK", [])

        def body():
            for i in range(40):
                produced.append(i)
                yield chunk
        return body()

    sent_bytes = []
    ahead = []

    async def send(message):
        if message["type"] == "http.response.body":
            await asyncio.sleep(0.005)  # a slow client
            sent_bytes.append(len(message["body"]))
            ahead.append(len(produced) * len(chunk) - sum(sent_bytes))

    receive, _ = receiver([b""])
    run(asgi.FlaskBridge(app, 2), scope(), receive, send)
    assert sum(sent_bytes) == 40 * len(chunk)
    assert max(ahead) <= asgi.SEND_HIGH_WATER + 2 * len(chunk)


def test_errors_in_the_app_reach_the_server():
    def app(environ, start_response):
        raise RuntimeError("boom")

    async def send(message):
        pass

    receive, _ = receiver([b""])
    with pytest.raises(RuntimeError, match="boom"):
        run(asgi.FlaskBridge(app, 2), scope(), receive, send)


def test_a_cancelled_request_stops_its_thread():
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])

        def body():
            try:
                while True:
                    yield b"x" * 65536
            finally:
                closed.set()
        return body()

    async def send(message):
        await asyncio.sleep(3600)  # a client that never reads

    async def main():
        receive, _ = receiver([b""])
        task = asyncio.ensure_future(asgi.FlaskBridge(app, 2)(scope(), receive, send))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed.wait(5)


def test_one_slow_request_does_not_stall_the_others():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.5)
        start_response("200 OK", [])
        return [b"ok"]

    async def main():
        bridge = asgi.FlaskBridge(app, 4)
        done = []

        async def one(path):
            async def send(message):
                pass
            receive, _ = receiver([b""])
            await bridge({**scope(), "path": path}, receive, send)
            done.append(path)
        await asyncio.gather(one("/slow"), *(one("/fast") for _ in range(10)))
        return done

    done = asyncio.run(main())
    assert done[-1] == "/slow" and len(done) == 11


def test_an_error_after_the_answer_is_logged(caplog):
    class Body:
        def __iter__(self):
            yield b"ok"

        def close(self):
            raise RuntimeError("closing failed")

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    sent = []

    async def send(message):
        sent.append(message)

    receive, _ = receiver([b""])
    run(asgi.FlaskBridge(app, 2), scope(), receive, send)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    for _ in range(50):
        if "closing failed" in caplog.text:
            break
        time.sleep(0.02)
    assert "closing failed" in caplog.text
