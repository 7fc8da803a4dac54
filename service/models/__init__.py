"""SQLAlchemy models, one module per aggregate."""

from .audit import AuditEntry
from .environment import Environment, SdkKey
from .event import Event, FlagEvaluation
from .experiment import STATUSES, Experiment, Metric
from .flag import Flag, FlagTargeting, FlagVersion
from .process import ChangeRequest, ChangeRequestReview, Rollout, RolloutCheck, ScheduledChange
from .segment import Segment
from .token import ROLES, Token

__all__ = ["ROLES", "STATUSES", "AuditEntry", "ChangeRequest", "ChangeRequestReview",
           "Environment", "Event", "Experiment", "Flag", "FlagEvaluation", "FlagTargeting",
           "FlagVersion", "Metric", "Rollout", "RolloutCheck", "ScheduledChange", "SdkKey", "Segment",
           "Token"]
