"""SQLAlchemy models, one module per aggregate."""

from .audit import AuditEntry
from .environment import Environment, SdkKey
from .token import ROLES, Token

__all__ = ["AuditEntry", "Environment", "ROLES", "SdkKey", "Token"]
