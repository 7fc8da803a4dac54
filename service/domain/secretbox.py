"""Encryption at rest of secrets the service must be able to use again (webhook signing secrets).

Fernet (AES-128-CBC with HMAC-SHA256, from the ``cryptography`` package)
under a key derived from the server secret ``PITCREW_SECRET_KEY`` by
HMAC-SHA256 with its own purpose label, so this key can stand in for no
other use of the server secret (docs/operations.md). A database dump alone
therefore reveals no webhook secret. Rotating ``PITCREW_SECRET_KEY`` makes
stored webhook secrets unreadable: rotate each webhook's secret after it
(docs/webhooks.md).

:func:`configure` is called once by ``create_app`` with the server secret.
"""

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken

_PURPOSE = b"pitcrew:webhook-secrets:v1"
_fernet: Fernet | None = None


class SecretUnreadable(Exception):
    """A stored secret was encrypted under another server secret (PITCREW_SECRET_KEY changed)."""


def configure(server_secret: str | bytes) -> None:
    global _fernet
    key = server_secret.encode("utf-8") if isinstance(server_secret, str) else server_secret
    derived = hmac.new(key, _PURPOSE, hashlib.sha256).digest()
    _fernet = Fernet(base64.urlsafe_b64encode(derived))


def _box() -> Fernet:
    if _fernet is None:
        raise RuntimeError("secretbox.configure() was not called (create_app does it)")
    return _fernet


def seal(secret: str) -> str:
    return _box().encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(sealed: str) -> str:
    try:
        return _box().decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SecretUnreadable("This secret was sealed under another PITCREW_SECRET_KEY; rotate it.") from None
