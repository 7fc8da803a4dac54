"""Console sign-in, roles, CSRF and response headers.

* Sign-in: ``POST /login`` with a personal admin token (form field
  ``token``). The session cookie (Flask's signed cookie, ``pitcrew_session``:
  HttpOnly, SameSite=Lax, Secure on HTTPS requests) holds a random session
  id, never the token; the database keeps the id's SHA-256, its token and
  its expiry (``console_sessions``).
* Every console request re-reads the session and its token in one query:
  signing out, the session's expiry or the token's revocation ends it at
  once, also for any copy of the cookie.
* Roles exactly as the API: GET needs ``viewer``, POST ``editor``, unless the
  view says otherwise with ``service.auth.requires``; checked here, before
  the view, whatever the page showed.
* CSRF: Flask-WTF's ``CSRFProtect`` (signed per-session token, constant-time
  comparison, Referer check on HTTPS), applied to console POSTs only. A POST
  without a valid token is answered 400 before the view runs.
* Behind ``TRUSTED_PROXIES`` reverse proxies, werkzeug's ProxyFix makes
  ``X-Forwarded-Proto`` (and -For, -Host) count; otherwise they are ignored.
"""

import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect

from ..auth import RANK
from ..domain import Actor
from ..domain import tokens as token_domain
from ..domain.errors import DomainError
from ..extensions import db
from ..models import Token
from . import bp
from .forms import STATUS

csrf = CSRFProtect()
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def current_user():
    """The signed-in token (id, name, role) of this request, or None."""
    return g.get("console_user")


def can(role: str) -> bool:
    user = current_user()
    return user is not None and RANK[user.role] >= RANK[role]


def actor() -> Actor:
    """The audit actor of this request; the form's optional ``comment`` goes with the entry."""
    comment = (request.form.get("comment") or "").strip() or None
    return Actor(name=g.console_user.name, request_id=g.get("request_id"), comment=comment)


def _load_user():
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    row = token_domain.find_console_session(sid)
    if row is None:
        return None
    token_domain.touch(Token, row, current_app.config["TOKEN_TOUCH_INTERVAL"])
    return row


def sign_in(secret: str):
    """Start a session for the admin token ``secret``; the token row, or None when invalid."""
    row = token_domain.find_token(secret)
    if row is None:
        return None
    sign_out()  # a fresh session (and a fresh CSRF token) for the new identity
    session["sid"] = token_domain.start_console_session(row.id, current_app.permanent_session_lifetime)
    session["at"] = int(time.time())
    session.permanent = True
    return row


def sign_out() -> None:
    """End this browser's session on the server, then forget the cookie's contents."""
    sid = session.get("sid")
    if isinstance(sid, str):
        token_domain.end_console_session(sid)
    session.clear()


def safe_next(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if not target:
        return url_for("console.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("console.home")
    return target


def _required_role() -> str:
    view = current_app.view_functions.get(request.endpoint)
    role = getattr(view, "required_role", None)
    if role:
        return role
    return "viewer" if request.method in ("GET", "HEAD") else "editor"


def error_page(status: int, title: str, message: str, details: dict | None = None):
    return render_template("console/error.html", title=title, message=message, details=details or {}), status


def init_app(app) -> None:
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked for console POSTs below
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session
    app.config["SESSION_COOKIE_NAME"] = "pitcrew_session"
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config.get("CONSOLE_SESSION_HOURS", 12))
    app.session_interface = ConsoleSessionInterface()
    csrf.init_app(app)
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)


@bp.before_request
def _authenticate():
    # Per-request state only (an app context can outlive one request, e.g. under the test client).
    for name in ("console_user", "csrf_token"):
        g.pop(name, None)
    if request.endpoint == "console.static":
        return None
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    user = _load_user()
    if user is None:
        ended = "sid" in session
        session.clear()
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("console.login", next=target, ended=1 if ended else None), 303)
    g.console_user = user
    g.token = user  # the request log names the actor
    needed = _required_role()
    if RANK[user.role] < RANK[needed]:
        return error_page(403, "Not allowed", f"This needs the '{needed}' role; your token has '{user.role}'.")
    return None


@bp.after_request
def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_failed(error):
    return error_page(400, "Form expired or forged",
                      "The form's security token is missing or invalid, so nothing was changed. "
                      "Reload the page and try again.")


@bp.errorhandler(DomainError)
def _domain_error(error):
    db.session.rollback()
    return error_page(STATUS.get(error.code, 400), "Cannot do that", error.message, error.details)


@bp.errorhandler(413)
def _too_large(error):
    limits = []
    if current_app.config.get("MAX_FORM_MEMORY_SIZE"):
        limits.append(f"a text field at most {current_app.config['MAX_FORM_MEMORY_SIZE'] // 1000} kB")
    if current_app.config.get("MAX_CONTENT_LENGTH"):
        limits.append(f"the whole form at most {current_app.config['MAX_CONTENT_LENGTH'] // 1024 // 1024} MiB")
    detail = f" ({', '.join(limits)})" if limits else ""
    return error_page(413, "Too large", f"The form is larger than the service accepts{detail}; nothing was "
                                        "changed. Upload a large document as a file.")


@bp.errorhandler(404)
def _not_found(error):
    return error_page(404, "Not found", "There is nothing at this address.")


@bp.context_processor
def _globals():
    from . import nav

    user = current_user()
    return {"user": user, "can": can, "nav_items": nav.visible(user.role) if user else []}
