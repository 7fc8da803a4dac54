"""SQLAlchemy models, one module per aggregate."""

from .audit import AuditEntry
from .environment import Environment, SdkKey
from .event import EvaluationBatch, Event, FlagEvaluation, FlagUsage
from .experiment import STATUSES, Experiment, Metric
from .flag import Flag, FlagStaleNotice, FlagTargeting, FlagVersion, TargetingChange
from .holdout import Holdout
from .process import ChangeRequest, ChangeRequestReview, Rollout, RolloutCheck, ScheduledChange
from .segment import Segment
from .token import ROLES, ConsoleSession, Token
from .webhook import Webhook, WebhookAttempt, WebhookDelivery

__all__ = ["AuditEntry", "ChangeRequest", "ChangeRequestReview", "ConsoleSession", "Environment", "EvaluationBatch", "Event",
           "Experiment", "Flag", "FlagEvaluation", "FlagStaleNotice", "FlagTargeting", "FlagUsage", "FlagVersion",
           "Holdout", "Metric", "ROLES", "Rollout", "RolloutCheck", "ScheduledChange", "SdkKey", "STATUSES",
           "Segment", "TargetingChange", "Token", "Webhook", "WebhookAttempt", "WebhookDelivery"]
