"""The console: server-rendered pages for product ops and PMs (docs/console.md).

Mounted at ``/`` (``/login``, ``/logout``, ``/flags``...). Pages are Jinja
templates rendered by thin views that call the same domain functions as the
API (``service/domain``), so audit, validation and version checks are
shared. Sign-in is a personal admin token, exchanged for a session cookie;
the token is re-checked on every request (see ``session.py``). Every POST
needs a CSRF token (Flask-WTF's ``CSRFProtect``, applied to console routes
only: the API authenticates with bearer tokens, which a browser never sends
on its own, so it needs none).

Adding a page: a view module in ``views/`` with ``@bp.route``, an entry in
the navigation (``nav.register``), a template extending
``console/base.html``. Helpers: ``forms.py`` (form parsing, field errors,
versions), ``charts.py`` (SVG), ``session.py`` (roles).
"""

from flask import Blueprint

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console/static")


def init_app(app) -> None:
    # The session's hooks and the views' routes register on ``bp`` when imported; they import
    # ``bp`` from here, so this package imports them only when the console is mounted.
    from . import session, views  # noqa: F401

    session.init_app(app)
    app.register_blueprint(bp)
