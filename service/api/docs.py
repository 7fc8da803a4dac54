"""Swagger UI's own files for ``/api/docs``, served from the ``swagger-ui-bundle`` package.

flask-smorest renders the page; ``OPENAPI_SWAGGER_UI_URL`` points it here
instead of a CDN, so the docs page works offline and loads nothing from
elsewhere.
"""

from flask import Blueprint, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from ..errors import ApiError

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-16x16.png",
          "favicon-32x32.png")

blp = Blueprint("api_docs_assets", __name__)


@blp.get("/api/docs/assets/<string:filename>")
def asset(filename: str):
    if filename not in ASSETS:
        raise ApiError(404, "not_found", f"No docs asset '{filename}'.")
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)
