"""Flask extensions, created here and initialised in ``create_app``."""

import flask_smorest
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from webargs import core
from webargs.flaskparser import FlaskParser

from .content import request_json
from .errors import ApiError, ErrorSchema, handle_http_exception
from .schemas.common import flatten_messages


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class PitcrewApi(Api):
    """flask-smorest's Api, with errors documented (``ERROR_SCHEMA``) and rendered our way.

    flask-smorest registers :meth:`handle_http_exception` for every
    ``HTTPException`` of the app (its documented hook): ours gives them the
    service's error shape (service/errors.py)."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return handle_http_exception(error)


class PitcrewParser(FlaskParser):
    """webargs' parser with the service's conventions.

    * Invalid arguments are 400 ``validation_error`` with one entry per
      field (``{"rules.0.serve": [...]}``), raised by :meth:`handle_error`,
      webargs' hook for them; flask-smorest documents the status
      (``DEFAULT_VALIDATION_STATUS``) in the OpenAPI document.
    * JSON bodies come from ``service.content.request_json``: the one place
      bodies are decoded, with the depth limit and the NUL/Unicode checks
      (malformed JSON is refused there, before webargs sees the body).
    """

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req, schema):
        body = request_json()
        return core.missing if body is None else body

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        # webargs files the messages under the location parsed ({"json": {...}}): one per call.
        messages = error.messages
        if isinstance(messages, dict) and len(messages) == 1:
            messages = next(iter(messages.values()))
        raise ApiError(400, "validation_error", "The request is invalid.",
                       flatten_messages(messages))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with :class:`PitcrewParser` (its documented ``ARGUMENTS_PARSER`` hook)."""

    ARGUMENTS_PARSER = PitcrewParser()


openapi = PitcrewApi()
