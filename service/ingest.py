"""Event ingestion: validate SDK event batches cheaply, store them in bulk.

The hot path of the service (``POST /sdk/v1/events``). Validation is hand
written (no marshmallow per event) and each event is checked on its own, so
one bad event never costs the others (partial acceptance). Storage is one
transaction per batch:

* PostgreSQL: ``COPY`` into a per-connection temporary table, then
  ``INSERT INTO events SELECT ... ON CONFLICT (environment_id, client_id)
  DO NOTHING``; the rows the INSERT reports are the new ones, the rest are
  duplicates.
* SQLite: ``executemany`` of ``INSERT OR IGNORE``.

Idempotency is by the event's ``id`` (a UUID) within its environment (the
primary key is ``(environment_id, client_id)``): replaying a batch stores
nothing twice and reports every event as a duplicate, and an id used in one
environment never makes another environment's event a duplicate. Ids the
server derives itself (exposures of remote evaluation) come from
:func:`server_event_id`, an HMAC under the server's secret key, so nobody
can pre-empt them. Per-flag evaluation
counts (``evaluations``) are summed into ``flag_evaluations`` per UTC day,
and ``flag_usage`` keeps when each flag was first and last evaluated per
environment, in the same transaction; they are validated leniently (bad
entries are skipped). A batch carrying a ``"batch"`` id (a UUID the SDK
fixes before the first attempt and reuses on retries) has its evaluations
counted once: the id is recorded in ``evaluation_batches`` in the same
transaction, and a batch whose id is there already adds no counts (its
events deduplicate by their own ids). Ids are kept ``BATCH_RETENTION``
(48 h; the worker prunes them). A batch without an id is counted every
time it arrives. Remote evaluations (``POST /sdk/v1/evaluate``) are
counted by :func:`count_remote`.

No HTTP here: the HTTP layer (``service/sdk_api/events.py``) decodes the
body and calls :func:`ingest`, which writes through Flask-SQLAlchemy's
``db.session`` (so it runs inside an application context).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from pitcrew.events.summary import served_counts
from pitcrew.wire import EXPOSURE, MAX_EVALUATION_ENTRIES, TRACK

from .domain import limits
from .extensions import db
from .models import EvaluationBatch, FlagEvaluation, FlagUsage

MAX_EVENTS = limits.EVENTS_PER_BATCH
MAX_FUTURE = timedelta(hours=1)
MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
MAX_UNIT = limits.UNIT_CHARS
MAX_KEY = limits.KEY_CHARS
MAX_EVENT_KEY = limits.EVENT_KEY_CHARS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIN_TS_US = (MIN_TS - _EPOCH) // _US
_COLUMNS = ("client_id", "environment_id", "type", "ts", "unit", "unit_type",
            "experiment", "variation", "event", "value", "attributes")
_COLUMN_LIST = ", ".join(_COLUMNS)
_TEMP_TABLE = "pc_events_in"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# An escaped NUL (\u0000) in encoded JSON: an odd number of backslashes before "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000").search
_fromisoformat = datetime.fromisoformat
_isfinite = math.isfinite
BATCH_RETENTION = timedelta(hours=48)  # set from EVALUATION_BATCH_RETENTION_HOURS by create_app
MAX_BATCH_ID = 100


class BatchError(ValueError):
    """The batch as a whole is unusable (not an object, too many events, ...)."""

    def __init__(self, message: str, details: dict | None = None, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.too_large = too_large


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


class _Invalid(Exception):
    pass


def server_event_id(secret_key: str | bytes, *parts) -> str:
    """A UUID-shaped event id derived from ``parts`` by HMAC-SHA256 under the server's secret key.

    The same parts always give the same id (so a repeated server-side
    exposure deduplicates like an SDK replay), but without the secret nobody
    can compute, and so pre-empt, the id of a future event. The message
    starts with its purpose, so these MACs never double as another use of
    the key (it is also Flask's SECRET_KEY).
    """
    key = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    message = json.dumps(["pitcrew:event-id", *(str(p) for p in parts)], ensure_ascii=False)
    digest = hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _storable(value: str, name: str) -> str:
    """Reject what the databases cannot store as text: NUL and lone surrogates (valid JSON escapes)."""
    if "\x00" in value:
        raise _Invalid(f"{name}: must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid(f"{name}: must be valid Unicode (no lone surrogates)") from None
    return value


def _text(event: dict, name: str, limit: int) -> str:
    value = event.get(name)
    if value.__class__ is not str or not value or len(value) > limit:
        raise _Invalid(f"{name}: must be a non-empty string of at most {limit} characters")
    return _storable(value, name)


def _client_id(raw) -> str:
    """The canonical text of a UUID (fast path for the usual lower-case form)."""
    if raw.__class__ is not str:
        raise _Invalid("id: must be a UUID string")
    if _CANONICAL_UUID(raw) is not None:
        return raw
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise _Invalid("id: must be a UUID string") from None


def _row(event, environment_id: int, now_us: int) -> tuple:
    """One validated row in ``_COLUMNS`` order; raises _Invalid with the reason."""
    if event.__class__ is not dict:
        raise _Invalid("must be an object")
    client_id = _client_id(event.get("id"))

    raw_ts = event.get("ts")
    if raw_ts.__class__ is not str:
        raise _Invalid("ts: must be an ISO 8601 timestamp string")
    try:
        moment = _fromisoformat(raw_ts)
    except ValueError:
        raise _Invalid("ts: must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = (moment - _EPOCH) // _US
    if ts > now_us:
        raise _Invalid("ts: is more than 1 hour in the future")
    if ts < _MIN_TS_US:
        raise _Invalid("ts: is before 2000-01-01")

    unit = event.get("unit")
    if unit.__class__ is not str or not unit or len(unit) > MAX_UNIT:
        if unit.__class__ is int and -10**100 < unit < 10**100:
            unit = str(unit)
        else:
            raise _Invalid(f"unit: must be a non-empty string of at most {MAX_UNIT} characters")
    else:
        _storable(unit, "unit")

    attributes = event.get("attributes")
    unit_type = "id"
    if attributes is not None:
        if attributes.__class__ is not dict:
            raise _Invalid("attributes: must be an object")
        if "unit_type" in attributes:
            # Stored in its own column, not again in the JSON.
            attributes = attributes.copy()
            unit_type = attributes.pop("unit_type")
            if unit_type.__class__ is not str or not unit_type or len(unit_type) > MAX_KEY:
                raise _Invalid(f"attributes.unit_type: must be a non-empty string of at most {MAX_KEY} characters")
            _storable(unit_type, "attributes.unit_type")
        if attributes:
            attributes = _encode(attributes)  # control characters come out escaped
            if "\\u0000" in attributes and _NUL_ESCAPE(attributes):
                # Stored, but PostgreSQL could never read it back as text.
                raise _Invalid("attributes: must not contain NUL characters")
            if not attributes.isascii():
                _storable(attributes, "attributes")
        else:
            attributes = None

    kind = event.get("type")
    if kind == EXPOSURE:
        return (client_id, environment_id, EXPOSURE, ts, unit, unit_type,
                _text(event, "experiment", MAX_KEY), _text(event, "variation", MAX_KEY),
                None, None, attributes)
    if kind == TRACK:
        name = _text(event, "event", MAX_EVENT_KEY)
        value = event.get("value")
        if value is not None:
            cls = value.__class__
            if cls is int:
                value = float(value)  # OverflowError for huge ints: rejected by validate()
            elif cls is not float:
                raise _Invalid("value: must be a number")
            if not _isfinite(value):
                raise _Invalid("value: must be a finite number")
        return (client_id, environment_id, TRACK, ts, unit, unit_type, None, None, name, value, attributes)
    raise _Invalid("type: must be 'exposure' or 'track'")


def validate(events, environment_id: int, now: datetime | None = None) -> tuple[list[tuple], list[dict]]:
    """Split ``events`` into storable rows and ``[{index, error}]`` rejections."""
    now_us = to_micros((now or datetime.now(UTC)) + MAX_FUTURE)
    rows: list[tuple] = []
    rejected: list[dict] = []
    append = rows.append
    for index, event in enumerate(events):
        try:
            append(_row(event, environment_id, now_us))
        except _Invalid as exc:
            rejected.append({"index": index, "error": str(exc)})
        except OverflowError:
            rejected.append({"index": index, "error": "out of range (a timestamp or value too large)"})
        except (TypeError, ValueError, RecursionError) as exc:
            # Inputs the checks above do not name (e.g. NaN inside attributes).
            rejected.append({"index": index, "error": f"invalid event ({exc})"[:300]})
    return rows, rejected


def batch_id(body) -> str | None:
    """The batch's ``"batch"`` id when it is a usable one (a non-empty string of at most 100
    characters); anything else counts as no id (the batch is then counted as it comes)."""
    value = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value or len(value) > MAX_BATCH_ID or not value.isprintable():
        return None
    return value


def parse_batch(body) -> tuple[list, list]:
    """The ``events`` and ``evaluations`` lists of a decoded batch body."""
    if not isinstance(body, dict):
        raise BatchError("The body must be an object with an 'events' list.", {"_body": ["Must be an object."]})
    events = body.get("events")
    if events is None:
        events = []
    evaluations = body.get("evaluations") or []
    if not isinstance(events, list):
        raise BatchError("'events' must be a list.", {"events": ["Must be a list."]})
    if len(events) > MAX_EVENTS:
        raise BatchError(f"A batch holds at most {MAX_EVENTS} events, not {len(events)}.",
                         {"events": [f"At most {MAX_EVENTS} events per batch."]}, too_large=True)
    if not isinstance(evaluations, list):
        evaluations = []
    return events, evaluations


def ingest(body, environment_id: int, now: datetime | None = None, *, remote: dict | None = None) -> IngestResult:
    """Validate and store a decoded batch; commits once. Raises BatchError for unusable batches.

    ``remote``: the results of a remote evaluation (``{flag: EvaluationResult}``),
    counted in the same transaction (:func:`count_remote`)."""
    events, evaluations = parse_batch(body)
    rows, rejected = validate(events, environment_id, now)
    inserted, after_commit = _store(rows) if rows else (0, None)
    counts, seen = _evaluation_counts(evaluations, now)
    batch = batch_id(body)
    if counts and (batch is None or _first_time(environment_id, batch, now)):
        _store_evaluations(environment_id, counts, seen, now)
    if remote:
        count_remote(environment_id, remote, now)
    db.session.commit()
    if after_commit is not None:
        after_commit()
    return IngestResult(accepted=inserted, duplicates=len(rows) - inserted, rejected=rejected)


# --------------------------------------------------------------------------- storage


def _store(rows: list[tuple]):
    """Insert rows in the session's transaction: (rows inserted, callback to run after commit)."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        return _store_postgresql(connection, rows)
    return _store_generic(connection, rows), None


def _store_postgresql(connection, rows: list[tuple]):
    fairy = connection.connection  # pool proxy; .info lives as long as the DBAPI connection
    after_commit = None
    with fairy.driver_connection.cursor() as cursor:
        if not fairy.info.get(_TEMP_TABLE):
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP_TABLE} "
                           f"(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")

            def after_commit():  # a rollback would have dropped the table again
                fairy.info[_TEMP_TABLE] = True

        with cursor.copy(f"COPY {_TEMP_TABLE} ({_COLUMN_LIST}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)
        cursor.execute(f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_TEMP_TABLE} "
                       f"ON CONFLICT (environment_id, client_id) DO NOTHING")
        return cursor.rowcount, after_commit


def _store_generic(connection, rows: list[tuple]) -> int:
    raw = connection.connection.driver_connection
    placeholders = ", ".join("?" for _ in _COLUMNS)
    cursor = raw.cursor()
    try:
        # sa.Uuid stores 32 hex digits on SQLite; keep the same form.
        cursor.executemany(f"INSERT OR IGNORE INTO events ({_COLUMN_LIST}) VALUES ({placeholders})",
                           [(r[0].replace("-", ""),) + r[1:] for r in rows])
        return cursor.rowcount
    finally:
        cursor.close()


# --------------------------------------------------------------------------- evaluations


def _evaluation_counts(evaluations: list, now: datetime | None) -> tuple[dict, dict]:
    """({(flag, variation, day): count}, {flag: latest moment evaluated}) from the lenient list."""
    now = now or datetime.now(UTC)
    counts: dict = {}
    seen: dict = {}
    for entry in evaluations[:MAX_EVALUATION_ENTRIES]:
        if not isinstance(entry, dict):
            continue
        flag = entry.get("flag")
        variation = entry.get("variation")
        count = entry.get("count", 1)
        if not isinstance(flag, str) or not flag or len(flag) > MAX_KEY:
            continue
        if variation is None:
            variation = ""
        if not isinstance(variation, str) or len(variation) > MAX_KEY:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            continue
        moment = _moment_of(entry.get("end") or entry.get("start"), now)
        day = moment.date()
        key = (flag, variation, day)
        counts[key] = counts.get(key, 0) + min(count, 10**12)
        if flag not in seen or moment > seen[flag]:
            seen[flag] = moment
    return counts, seen


def _moment_of(value, now: datetime) -> datetime:
    """When a summary says its evaluations happened (its end), at most ``now``; ``now`` if unreadable."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return now
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return min(moment, now)
    return now


def _insert():
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _first_time(environment_id: int, batch: str, now: datetime | None) -> bool:
    """Record the batch id; False when it was recorded before (a retry: count nothing).

    Two copies of one batch arriving together: the second INSERT waits for
    the first's transaction and then conflicts (PostgreSQL), or waits for
    the write lock (SQLite); either way one of them counts."""
    table = EvaluationBatch.__table__
    stmt = _insert()(table).values(environment_id=environment_id, batch=batch,
                                   received_at=now or datetime.now(UTC)).on_conflict_do_nothing()
    return db.session.execute(stmt.returning(table.c.batch)).first() is not None


def prune_batches(now: datetime | None = None) -> int:
    """Forget batch ids older than ``BATCH_RETENTION`` (the worker's housekeeping); commits."""
    cutoff = (now or datetime.now(UTC)) - BATCH_RETENTION
    result = db.session.execute(sa.delete(EvaluationBatch).where(EvaluationBatch.received_at < cutoff))
    db.session.commit()
    return result.rowcount or 0


def count_remote(environment_id: int, results, now: datetime | None = None) -> None:
    """Count a remote evaluation's results (``{flag: EvaluationResult}``) like an SDK summary;
    in the caller's transaction. Flags the ruleset does not know are not counted
    (:func:`pitcrew.events.summary.served_counts`)."""
    now = now or datetime.now(UTC)
    day = now.date()
    counts: dict = {}
    for key, variation in served_counts(results):  # the rule the edge counts with too
        counts[(key, variation, day)] = counts.get((key, variation, day), 0) + 1
    if counts:
        _store_evaluations(environment_id, counts, {flag: now for flag, _, _ in counts}, now)


def _store_evaluations(environment_id: int, counts: dict, seen: dict, now: datetime | None = None) -> None:
    insert = _insert()
    now = now or datetime.now(UTC)
    table = FlagEvaluation.__table__
    # Sorted, so concurrent batches lock the same rows in the same order (no deadlocks).
    values = [{"environment_id": environment_id, "flag": f, "variation": v, "day": d, "count": c,
               "last_seen_at": now} for (f, v, d), c in sorted(counts.items())]
    stmt = insert(table).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.environment_id, table.c.flag, table.c.variation, table.c.day],
        set_={"count": table.c.count + stmt.excluded.count, "last_seen_at": stmt.excluded.last_seen_at},
    )
    db.session.execute(stmt)
    usage = FlagUsage.__table__
    stmt = insert(usage).values([{"environment_id": environment_id, "flag": flag, "first_evaluated_at": moment,
                                  "last_evaluated_at": moment} for flag, moment in sorted(seen.items())])
    stmt = stmt.on_conflict_do_update(
        index_elements=[usage.c.environment_id, usage.c.flag],
        set_={"first_evaluated_at": sa.case((stmt.excluded.first_evaluated_at < usage.c.first_evaluated_at,
                                             stmt.excluded.first_evaluated_at), else_=usage.c.first_evaluated_at),
              "last_evaluated_at": sa.case((stmt.excluded.last_evaluated_at > usage.c.last_evaluated_at,
                                            stmt.excluded.last_evaluated_at), else_=usage.c.last_evaluated_at)})
    db.session.execute(stmt)
