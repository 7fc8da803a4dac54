"""Admin tokens and SDK keys: random secrets, stored only as SHA-256 hashes."""

import hashlib
import hmac
import secrets
from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import ROLES, ConsoleSession, Environment, SdkKey, Token
from ..models.types import utcnow
from . import Actor, audit, unit_of_work
from .errors import NotFound, ValidationFailed
from .locking import for_update
from .pagination import Page, paginate

ADMIN_PREFIX = "pc_admin_"
SDK_PREFIX = "pc_sdk_"
DISPLAY_PREFIX_CHARS = 4


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _new_secret(prefix: str) -> str:
    # 32 random bytes -> 43 url-safe characters.
    return prefix + secrets.token_urlsafe(32)


def _display_prefix(secret: str, prefix: str) -> str:
    return secret[: len(prefix) + DISPLAY_PREFIX_CHARS]


def token_snapshot(token: Token) -> dict:
    return {"id": token.id, "name": token.name, "role": token.role, "prefix": token.prefix,
            "revoked": token.revoked_at is not None}


def create_token(actor: Actor, name: str, role: str) -> tuple[Token, str]:
    if role not in ROLES:
        raise ValidationFailed("Invalid role.", {"role": [f"Must be one of {', '.join(ROLES)}."]})
    secret = _new_secret(ADMIN_PREFIX)
    token = Token(name=name, role=role, prefix=_display_prefix(secret, ADMIN_PREFIX),
                  token_hash=hash_secret(secret), created_by=actor.name)
    db.session.add(token)
    db.session.flush()
    audit.record(actor, "create", "token", str(token.id), after=token_snapshot(token))
    unit_of_work.commit()
    return token, secret


def list_tokens(*, include_revoked: bool = False, limit: int = 50, cursor: str | None = None) -> Page:
    stmt = sa.select(Token)
    if not include_revoked:
        stmt = stmt.where(Token.revoked_at.is_(None))
    return paginate(stmt, Token.id, limit=limit, cursor=cursor)


def revoke_token(actor: Actor, token_id: int) -> Token:
    token = for_update(Token, Token.id == token_id)  # two concurrent revokes: one succeeds, one 404
    if token is None or token.revoked_at is not None:
        raise NotFound(f"Token {token_id} does not exist or is already revoked.")
    before = token_snapshot(token)
    token.revoked_at = utcnow()
    audit.record(actor, "revoke", "token", str(token.id), before=before, after=token_snapshot(token))
    unit_of_work.commit()
    return token


def _find(stmt, hash_column, secret: str):
    """The unrevoked row whose hash matches ``secret``, or None.

    The lookup is by an indexed hash, so timing reveals nothing about the
    secret; the final comparison is constant-time all the same. Core rows,
    not ORM objects: this runs on every request.
    """
    digest = hash_secret(secret)
    row = db.session.execute(stmt.where(hash_column == digest)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, digest):
        return None
    return row


def find_token(secret: str):
    """Row with id, name, role, last_used_at of the active admin token, or None."""
    stmt = sa.select(Token.id, Token.name, Token.role, Token.revoked_at, Token.last_used_at,
                     Token.token_hash.label("hash"))
    return _find(stmt, Token.token_hash, secret)


# ------------------------------------------------------------------ console sessions

CONSOLE_SESSION_PRUNE_AFTER = timedelta(days=1)


def start_console_session(token_id: int, lifetime: timedelta) -> str:
    """A new console session for the token; returns its random id (the cookie's; only its hash is stored)."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(ConsoleSession(token_id=token_id, session_hash=hash_secret(secret), created_at=now,
                                  expires_at=now + lifetime))
    unit_of_work.commit()
    return secret


def find_console_session(secret: str):
    """The token row (id, name, role, last_used_at) of a live console session, or None.

    Live: not ended (signed out), not expired, and its token not revoked. One
    query: this runs on every console request."""
    digest = hash_secret(secret)
    row = db.session.execute(
        sa.select(Token.id, Token.name, Token.role, Token.revoked_at, Token.last_used_at,
                  ConsoleSession.session_hash.label("hash"), ConsoleSession.expires_at, ConsoleSession.ended_at)
        .join(ConsoleSession, ConsoleSession.token_id == Token.id)
        .where(ConsoleSession.session_hash == digest)).first()
    if (row is None or row.revoked_at is not None or row.ended_at is not None or row.expires_at <= utcnow()
            or not hmac.compare_digest(row.hash, digest)):
        return None
    return row


def end_console_session(secret: str) -> None:
    """Sign-out: the session is refused from now on, whoever holds a copy of its cookie."""
    db.session.execute(sa.update(ConsoleSession)
                       .where(ConsoleSession.session_hash == hash_secret(secret), ConsoleSession.ended_at.is_(None))
                       .values(ended_at=utcnow()))
    unit_of_work.commit()


def prune_console_sessions(now) -> int:
    """Forget sessions that ended or expired more than a day ago (the worker's housekeeping)."""
    cutoff = now - CONSOLE_SESSION_PRUNE_AFTER
    result = db.session.execute(sa.delete(ConsoleSession).where(
        sa.or_(ConsoleSession.expires_at < cutoff, ConsoleSession.ended_at < cutoff)))
    unit_of_work.commit()
    return result.rowcount or 0


def find_sdk_key(secret: str):
    """Row with id, environment_id, last_used_at and the environment's
    ruleset_version (one round trip serves auth and the config ETag), or None."""
    stmt = (sa.select(SdkKey.id, SdkKey.environment_id, SdkKey.revoked_at, SdkKey.last_used_at,
                      SdkKey.key_hash.label("hash"), Environment.ruleset_version)
            .join(Environment, Environment.id == SdkKey.environment_id))
    return _find(stmt, SdkKey.key_hash, secret)


def touch(model, row, interval_seconds: int) -> None:
    """Record use, at most once per interval so reads do not all become writes."""
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=interval_seconds):
        db.session.execute(sa.update(model).where(model.id == row.id).values(last_used_at=now))
        unit_of_work.commit()


def sdk_key_snapshot(key: SdkKey) -> dict:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "revoked": key.revoked_at is not None}


def create_sdk_key(actor: Actor, environment: Environment, name: str = "") -> tuple[SdkKey, str]:
    secret = _new_secret(SDK_PREFIX)
    key = SdkKey(environment=environment, name=name, prefix=_display_prefix(secret, SDK_PREFIX),
                 key_hash=hash_secret(secret), created_by=actor.name)
    db.session.add(key)
    db.session.flush()
    audit.record(actor, "create", "sdk_key", str(key.id), environment=environment.key,
                 after=sdk_key_snapshot(key))
    unit_of_work.commit()
    return key, secret


def revoke_sdk_key(actor: Actor, environment: Environment, key_id: int) -> SdkKey:
    key = for_update(SdkKey, SdkKey.id == key_id)  # two concurrent revokes: one succeeds, one 404
    if key is None or key.environment_id != environment.id or key.revoked_at is not None:
        raise NotFound(f"SDK key {key_id} does not exist in {environment.key} or is already revoked.")
    before = sdk_key_snapshot(key)
    key.revoked_at = utcnow()
    audit.record(actor, "revoke", "sdk_key", str(key.id), environment=environment.key,
                 before=before, after=sdk_key_snapshot(key))
    unit_of_work.commit()
    return key
