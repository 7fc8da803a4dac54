"""``POST /sdk/v1/events``: exposure and track events from SDKs (docs/api.md).

The handler only deals with HTTP: it decompresses a gzip body (capped, so a
small "gzip bomb" cannot expand without bound), decodes the JSON and hands
the batch to :func:`service.ingest.ingest`, which validates each event and
stores the batch in one transaction. A 202 means the batch is committed.
"""

import zlib

from flask import g, request
from flask.views import MethodView

from .. import ingest
from ..content import parse_json
from ..domain import limits
from ..errors import ApiError
from ..extensions import Blueprint
from ..schemas.events import EventBatchSchema, EventsAcceptedSchema

MAX_BATCH_BYTES = limits.EVENT_BATCH_BYTES  # after decompression

blp = Blueprint("sdk_events", __name__, url_prefix="/sdk/v1/events",
                description="Exposure and track events from SDKs (SDK key).")


def _too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_BATCH_BYTES + 1)
        if len(out) > MAX_BATCH_BYTES or inflater.unconsumed_tail:
            raise _too_large(f"A batch is at most {MAX_BATCH_BYTES} bytes after decompression.")
        out += inflater.flush()
        if len(out) > MAX_BATCH_BYTES:
            raise _too_large(f"A batch is at most {MAX_BATCH_BYTES} bytes after decompression.")
    except zlib.error as exc:
        raise ApiError(400, "bad_request", "The body is not valid gzip.", {"_body": [str(exc)]}) from None
    if not inflater.eof:
        raise ApiError(400, "bad_request", "The gzip body is truncated.")
    return out


def read_batch():
    """The decoded JSON body, decompressed when ``Content-Encoding: gzip``."""
    data = request.get_data(cache=False)
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        data = _gunzip(data)
    elif encoding != "identity":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Encoding '{encoding}' is not supported; use gzip or none.")
    if len(data) > MAX_BATCH_BYTES:
        raise _too_large(f"A batch is at most {MAX_BATCH_BYTES} bytes.")
    if not data:
        raise ApiError(400, "bad_request", "The body must be a JSON object with an 'events' list.")
    # No depth limit here: events are checked one by one (service/ingest.py),
    # and walking every batch would cost the hot path; 10,000-deep bodies are
    # still refused (the parser's recursion is caught).
    return parse_json(data, max_depth=None, allow_nan=True)  # NaN: rejected per event


@blp.route("")
class Events(MethodView):
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": EventBatchSchema}}})
    @blp.response(202, EventsAcceptedSchema)
    def post(self):
        """Report a batch of events (at most 1000 events / 1 MiB; gzip accepted)

        Valid events are stored even when others are rejected; events whose
        id was stored before are counted as duplicates and not stored again.
        """
        body = read_batch()
        try:
            result = ingest.ingest(body, g.environment_id)
        except ingest.BatchError as exc:
            status, code = (413, "payload_too_large") if exc.too_large else (400, "validation_error")
            raise ApiError(status, code, exc.message, exc.details) from None
        return result.to_dict(), 202
