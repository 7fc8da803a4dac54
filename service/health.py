"""Liveness and readiness probes.

``/healthz`` answers while the process is up, whatever the database does.
``/readyz`` answers 503 ``unavailable`` with ``Retry-After`` while the
database is unreachable (a load balancer takes the instance out of rotation
and puts it back once the database answers again), like every endpoint
that needs the database (service/errors.py).
"""

import contextlib

import sqlalchemy as sa
from flask import Blueprint, jsonify

from .errors import RETRY_AFTER_SECONDS, outage
from .extensions import db

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz():
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            db.session.rollback()
        outage.down(exc)
        response = jsonify(status="unavailable", database="unreachable")
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return jsonify(status="ok", database="ok")
