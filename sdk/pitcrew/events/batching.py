"""Batches: event tuples -> one request body with every id fixed, ready to (re)send.

A batch is built once, before its first attempt: each event gets a random
UUID and the batch a UUID of its own (``"batch"``), then the JSON body is
gzipped. Retries resend the same bytes, so the service recognises events it
already stored (duplicates, never new rows) and can recognise the batch. A
body stays within the service's limits (1000 events, 1 MiB of JSON).

Gzip runs at level 1: on event JSON it keeps most of level 6's ratio at a
third of its CPU, so the events thread is not the bottleneck.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zlib

from ..wire import BATCH_ID_KEY, EXPOSURE, MAX_BATCH_BYTES, MAX_BATCH_EVENTS

__all__ = ["Batch", "build_batch", "split_batch"]

GZIP_LEVEL = 1
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_EMPTY_BODY = 64  # {"batch":"<36>","events":[],"evaluations":[]}


class Batch:
    """One request: ``body`` (gzipped JSON) or, when spooled, the ``path`` holding it."""

    __slots__ = ("id", "body", "path", "count", "first_seq", "attempt")

    def __init__(self, batch_id: str, body: bytes | None, count: int, first_seq: int,
                 path: str | None = None):
        self.id = batch_id
        self.body = body
        self.path = path
        self.count = count  # events in the batch
        self.first_seq = first_seq  # oldest queue sequence number in it (0: from a spool)
        self.attempt = 0

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.count} events seq>={self.first_seq}>"


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, from one read of the OS's random source."""
    raw = os.urandom(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i:i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return out


def seeded_ids(seed: bytes, start: int, n: int) -> list[str]:
    """``n`` UUID strings derived from a random 16-byte ``seed`` and positions ``start``...:
    the same seed and position always give the same id (spilled events keep their ids
    however often their file is converted), different seeds give unrelated ids."""
    base = int.from_bytes(seed, "big")
    out = []
    for i in range(start, start + n):
        h = f"{(base + i * 0x9E3779B97F4A7C15) & ((1 << 128) - 1):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return out


class _Clock:
    """iso_ts() with the seconds part cached: events of one batch share most of their seconds."""

    __slots__ = ("sec", "prefix")

    def __init__(self):
        self.sec = -1
        self.prefix = ""

    def __call__(self, t: float) -> str:
        ms = int(t * 1000)
        sec, ms = divmod(ms, 1000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self.prefix}.{ms:03d}Z"


def _event(item, event_id: str, ts) -> dict:
    _seq, kind, t, unit, experiment, variation, event, value, attrs = item
    ev = {"id": event_id, "type": kind, "ts": ts(t), "unit": unit}
    if kind == EXPOSURE:
        ev["experiment"] = experiment
        ev["variation"] = variation
    else:
        ev["event"] = event
        if value is not None:
            ev["value"] = value
    if attrs:
        ev["attributes"] = attrs
    return ev


def compress(body: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(body) + c.flush()


def _body(batch_id: str, events: list[bytes], summary: list[bytes]) -> bytes:
    return (b'{"' + BATCH_ID_KEY.encode() + b'":"' + batch_id.encode() + b'","events":['
            + b",".join(events) + b'],"evaluations":[' + b",".join(summary) + b"]}")


def build_batch(items: list, summary: list[dict], limit: int = MAX_BATCH_EVENTS, seed=None):
    """``(batch or None, leftover items, leftover summary, unencodable count)``.

    Takes at most ``limit`` items and as much as fits in 1 MiB; what does not
    fit is returned for the next batch. An event that alone exceeds 1 MiB, or
    cannot be encoded, is counted and left out.
    """
    taken = items[:limit]
    if seed is None:
        ids = new_ids(len(taken))
        batch_id = str(uuid.uuid4())
    else:  # (seed bytes, position of items[0]): ids that a re-conversion reproduces
        ids = seeded_ids(seed[0], seed[1], len(taken))
        batch_id = seeded_ids(seed[0], (1 << 40) + seed[1], 1)[0]
    ts = _Clock()
    # Fast path: the whole body in one encoder call (events are ~200 bytes: 1000 of them
    # stay far below 1 MiB); per-event encoding below only when it does not fit or fails.
    try:
        events = [_event(item, ids[i], ts) for i, item in enumerate(taken)]
        body = _dumps({BATCH_ID_KEY: batch_id, "events": events, "evaluations": summary}).encode()
        if taken and len(body) <= MAX_BATCH_BYTES:
            rest = items[len(taken):]
            return Batch(batch_id, compress(body), len(taken), taken[0][0]), rest, [], 0
    except (TypeError, ValueError):
        pass
    parts: list[bytes] = []
    size = _EMPTY_BODY
    bad = 0
    first_seq = None
    stop = len(taken)
    for i, item in enumerate(taken):
        try:
            b = _dumps(_event(item, ids[i], ts)).encode()
        except (TypeError, ValueError):
            bad += 1
            continue
        if size + len(b) + 1 > MAX_BATCH_BYTES:
            if not parts:
                bad += 1  # alone larger than a request may be
                continue
            stop = i
            break
        parts.append(b)
        size += len(b) + 1
        if first_seq is None:
            first_seq = item[0]
    rest = taken[stop:] + items[len(taken):]
    used = []
    for j, entry in enumerate(summary):
        e = _dumps(entry).encode()
        if size + len(e) + 1 > MAX_BATCH_BYTES and (parts or used):
            summary = summary[j:]
            break
        used.append(e)
        size += len(e) + 1
    else:
        summary = []
    if not parts and not used:
        return None, rest, summary, bad
    body = compress(_body(batch_id, parts, used))
    return Batch(batch_id, body, len(parts), first_seq or 0), rest, summary, bad


def split_batch(body: bytes) -> list[bytes]:
    """Two bodies with the events of a gzipped body split in halves (after a 413).

    Event ids are kept (a half the service already stored counts as
    duplicates); each half gets a new batch id; evaluations go with the first.
    """
    doc = json.loads(zlib.decompress(body, 47))
    events = doc.get("events") or []
    half = max(1, len(events) // 2)
    out = []
    for part, evals in ((events[:half], doc.get("evaluations") or []), (events[half:], [])):
        if part or evals:
            batch_id = str(uuid.uuid4())
            out.append(compress(_body(batch_id, [_dumps(e).encode() for e in part],
                                      [_dumps(e).encode() for e in evals])))
    return out


def body_count(body: bytes) -> int:
    """Events in a gzipped body (for a spool file whose name lost its count)."""
    try:
        return len(json.loads(zlib.decompress(body, 47)).get("events") or [])
    except (ValueError, zlib.error, AttributeError):
        return 0
