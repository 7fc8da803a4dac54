"""Authentication and roles for every request, decided before the view runs.

Default-deny: every ``/api/v1`` route needs a valid admin token; reads need
``viewer``, writes ``editor``, unless the view method says otherwise with
``@requires(role)``. ``/sdk/v1`` routes need an SDK key. Each kind of
credential is refused on the other's paths.
"""

from flask import current_app, g, request

from .domain import Actor
from .domain import tokens as token_domain
from .errors import ApiError
from .models import ROLES, SdkKey, Token

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RANK = {role: i for i, role in enumerate(ROLES)}


def requires(role: str):
    """Mark a view method as needing at least ``role``."""
    assert role in RANK, role

    def decorate(func):
        func.required_role = role
        return func

    return decorate


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthorized", "Missing or malformed Authorization header (Bearer token).",
                       headers={"WWW-Authenticate": "Bearer"})
    return secret.strip()


def _unauthorized():
    return ApiError(401, "unauthorized", "Invalid or revoked token.", headers={"WWW-Authenticate": "Bearer"})


def _required_role() -> str:
    view = current_app.view_functions.get(request.endpoint)
    view_class = getattr(view, "view_class", None)
    method = getattr(view_class, request.method.lower(), None) if view_class else view
    role = getattr(method, "required_role", None)
    if role:
        return role
    return "viewer" if request.method in READ_METHODS else "editor"


def authenticate_admin() -> None:
    secret = _bearer()
    interval = current_app.config["TOKEN_TOUCH_INTERVAL"]
    if secret.startswith(token_domain.SDK_PREFIX):
        if token_domain.find_sdk_key(secret) is None:
            raise _unauthorized()
        raise ApiError(403, "forbidden", "SDK keys can only call /sdk/* endpoints.")
    token = token_domain.find_token(secret)
    if token is None:
        raise _unauthorized()
    token_domain.touch(Token, token, interval)
    needed = _required_role()
    if RANK[token.role] < RANK[needed]:
        raise ApiError(403, "forbidden", f"This action needs the '{needed}' role; the token has '{token.role}'.")
    g.token = token
    g.actor = Actor(name=token.name, request_id=g.get("request_id"),
                    comment=request.headers.get("X-Pitcrew-Comment") or None)


def authenticate_sdk() -> None:
    secret = _bearer()
    if secret.startswith(token_domain.ADMIN_PREFIX):
        if token_domain.find_token(secret) is None:
            raise _unauthorized()
        raise ApiError(403, "forbidden", "Admin tokens cannot call /sdk/* endpoints; use an SDK key.")
    key = token_domain.find_sdk_key(secret)
    if key is None:
        raise _unauthorized()
    token_domain.touch(SdkKey, key, current_app.config["TOKEN_TOUCH_INTERVAL"])
    g.sdk_key = key
    g.environment_id = key.environment_id
    g.ruleset_version = key.ruleset_version


def actor() -> Actor:
    return g.actor


def init_app(app) -> None:
    @app.before_request
    def _authenticate():
        if request.endpoint is None or request.method == "OPTIONS":
            return  # 404/405 are answered by the error handler
        path = request.path
        if path.startswith("/api/v1/"):
            authenticate_admin()
        elif path.startswith("/sdk/v1/"):
            authenticate_sdk()
