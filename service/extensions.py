"""Flask extensions, created here and initialised in ``create_app``."""

import flask_smorest
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from webargs import core
from webargs.flaskparser import FlaskParser

from .content import request_json
from .errors import ErrorSchema


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class PitcrewApi(Api):
    """flask-smorest's Api, with errors documented and rendered our way (see errors.py)."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self):
        pass  # errors.register() installs the one handler for every error


class PitcrewParser(FlaskParser):
    """webargs' parser with the service's conventions.

    * Invalid arguments are 400 (webargs defaults to 422); flask-smorest
      documents this status in the OpenAPI document.
    * JSON bodies come from ``service.content.request_json``: the one place
      bodies are decoded, with the depth limit and the NUL/Unicode checks.
    """

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req, schema):
        body = request_json()
        return core.missing if body is None else body


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with :class:`PitcrewParser` (its documented ``ARGUMENTS_PARSER`` hook)."""

    ARGUMENTS_PARSER = PitcrewParser()


openapi = PitcrewApi()
