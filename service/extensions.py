"""Flask extensions, created here and initialised in ``create_app``."""

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

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


openapi = PitcrewApi()
