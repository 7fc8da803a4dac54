"""OpenFeature provider for Pitcrew (optional extra: ``pip install "pitcrew-sdk[openfeature]"``).

    from openfeature import api
    from pitcrew.openfeature import PitcrewProvider

    api.set_provider_and_wait(PitcrewProvider(url="https://flags.example.com", sdk_key="pc_sdk_..."))
    client = api.get_client()
    client.get_boolean_value("new-checkout", False, EvaluationContext("user-1", {"country": "DE"}))

Readiness: ``set_provider_and_wait`` returns once the first ruleset is loaded
(at most ``ready_timeout`` seconds). It raises ``ProviderFatalError`` when
the service refused the SDK key (401/403) and ``ProviderNotReadyError`` when
no ruleset arrived in time (the client keeps trying; PROVIDER_READY is
emitted when one arrives). With plain ``set_provider`` initialisation runs in
the background and evaluations made before it finishes return the default
(PROVIDER_NOT_READY).

The evaluation context maps to a Pitcrew context: its attributes, plus
``id`` = the targeting key (when given). ``datetime`` attributes become
RFC 3339 strings, so ``before``/``after`` conditions work on them.

Reasons: OFF -> DISABLED; TARGET_MATCH -> TARGETING_MATCH; RULE_MATCH ->
TARGETING_MATCH, or SPLIT when the rule serves a rollout or an experiment;
FALLTHROUGH -> DEFAULT, or SPLIT for a rollout/experiment fallthrough;
HOLDOUT -> SPLIT (a holdout is a pseudorandom split of the units: the held-out
share gets the off variation; flag metadata says ``reason: HOLDOUT``);
PREREQUISITE_FAILED stays as is; errors -> ERROR with the error code
(FLAG_NOT_FOUND, TYPE_MISMATCH, PROVIDER_NOT_READY, INVALID_CONTEXT,
TARGETING_KEY_MISSING when the context has neither a targeting key nor an
``id`` attribute, GENERAL).
The variant is the Pitcrew variation key; flag metadata carries the rule id,
experiment, in_experiment, flag kind and ruleset version, and for a unit held
out or measured by a holdout ``holdout`` (its key) and ``holdout_group``
(``held_out`` or ``measured``). Evaluations record
exposures exactly like :meth:`pitcrew.Client.variation`; ``track()`` records an
outcome event.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata

from .client import Client
from .evaluation import Reason
from .wire import HOLDOUT_PREFIX

log = logging.getLogger("pitcrew")

__all__ = ["PitcrewProvider"]

_ERRORS = {
    Reason.FLAG_NOT_FOUND: (ErrorCode.FLAG_NOT_FOUND, "flag not found"),
    Reason.CLIENT_NOT_READY: (ErrorCode.PROVIDER_NOT_READY, "no ruleset loaded yet"),
    Reason.WRONG_TYPE: (ErrorCode.TYPE_MISMATCH, "flag kind does not match the requested type"),
    Reason.ERROR: (ErrorCode.GENERAL, "evaluation error"),
}


def _convert(value, depth=0):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if depth < 32:
        if isinstance(value, Mapping):
            return {str(k): _convert(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_convert(v, depth + 1) for v in value]
    return value


def to_context(evaluation_context) -> dict | None:
    """A Pitcrew context from an OpenFeature EvaluationContext (None if it cannot be read)."""
    if evaluation_context is None:
        return {}
    try:
        attrs = getattr(evaluation_context, "attributes", None) or {}
        ctx = {str(k): _convert(v) for k, v in dict(attrs).items()}
        key = getattr(evaluation_context, "targeting_key", None)
        if key is not None:
            ctx["id"] = key
        return ctx
    except Exception:
        return None


class PitcrewProvider(AbstractProvider):
    """OpenFeature provider backed by a :class:`pitcrew.Client`.

    Pass an existing ``client`` (the provider then never closes it) or the
    ``Client`` arguments (``url``, ``sdk_key``, ...), in which case the
    provider owns the client and closes it on ``shutdown()``.
    ``initialize()`` waits up to ``ready_timeout`` seconds for the first
    ruleset; if none arrives it reports an error, evaluations return
    PROVIDER_NOT_READY results, and PROVIDER_READY is emitted when a ruleset
    does arrive. Every later ruleset change emits
    PROVIDER_CONFIGURATION_CHANGED with the changed flag keys.
    """

    def __init__(self, client: Client | None = None, *, url: str | None = None,
                 sdk_key: str | None = None, ready_timeout: float = 5.0, **client_kwargs):
        super().__init__()
        if client is None:
            if url is None or sdk_key is None:
                raise TypeError("PitcrewProvider needs a client, or url and sdk_key")
            client = Client(url, sdk_key, **client_kwargs)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self._ready_timeout = ready_timeout
        self._announced_ready = False
        client.add_listener(self._on_ruleset)

    # ------------------------------------------------------------------ lifecycle

    def get_metadata(self) -> Metadata:
        return Metadata(name="pitcrew")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self.client.wait_until_ready(self._ready_timeout):
            self._announced_ready = True
            return
        status = self.client.status()
        if status["state"] == "unauthorized":
            raise ProviderFatalError(
                f"pitcrew: the service refused the SDK key ({status['last_error']}); "
                "check the key (the client keeps retrying in the background)")
        detail = f"; last error: {status['last_error']}" if status["last_error"] else ""
        raise ProviderNotReadyError(
            f"pitcrew: no ruleset within {self._ready_timeout:g} s, still trying in the "
            f"background{detail}")

    def shutdown(self) -> None:
        self.client.remove_listener(self._on_ruleset)
        if self._owns_client:
            self.client.close()

    def _on_ruleset(self, old, new) -> None:
        try:
            if not self._announced_ready:
                self._announced_ready = True
                self.emit_provider_ready(ProviderEventDetails(message="ruleset loaded"))
                return
            changed = _changed_flags(old, new)
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=changed, message=f"ruleset version {new.version}")
            )
        except Exception:
            log.debug("could not emit an OpenFeature event", exc_info=True)

    # ------------------------------------------------------------------ evaluation

    def resolve_boolean_details(self, flag_key, default_value, evaluation_context=None):
        return self._resolve("boolean", flag_key, default_value, evaluation_context)

    def resolve_string_details(self, flag_key, default_value, evaluation_context=None):
        return self._resolve("string", flag_key, default_value, evaluation_context)

    def resolve_integer_details(self, flag_key, default_value, evaluation_context=None):
        return self._resolve("number", flag_key, default_value, evaluation_context, cast=_as_int)

    def resolve_float_details(self, flag_key, default_value, evaluation_context=None):
        return self._resolve("number", flag_key, default_value, evaluation_context, cast=_as_float)

    def resolve_object_details(self, flag_key, default_value, evaluation_context=None):
        return self._resolve("json", flag_key, default_value, evaluation_context, cast=_as_object)

    def track(self, tracking_event_name, evaluation_context=None, tracking_event_details=None):
        try:
            ctx = to_context(evaluation_context)
            if ctx is None:
                return
            value = getattr(tracking_event_details, "value", None) if tracking_event_details else None
            self.client.track(tracking_event_name, ctx, value)
        except Exception:
            log.debug("OpenFeature track failed", exc_info=True)

    def _resolve(self, kind, flag_key, default_value, evaluation_context, cast=None):
        try:
            ctx = to_context(evaluation_context)
            if ctx is None:
                return FlagResolutionDetails(
                    value=default_value, reason=OFReason.ERROR, error_code=ErrorCode.INVALID_CONTEXT,
                    error_message="the evaluation context could not be converted",
                )
            if ctx.get("id") in (None, ""):
                return FlagResolutionDetails(
                    value=default_value, reason=OFReason.ERROR,
                    error_code=ErrorCode.TARGETING_KEY_MISSING,
                    error_message="the evaluation context needs a targeting key (Pitcrew's id)",
                )
            r = self.client.variation_detail(flag_key, ctx, default_value, kind=kind)
            error = _ERRORS.get(r.reason)
            if error is not None:
                code, message = error
                return FlagResolutionDetails(value=default_value, reason=OFReason.ERROR,
                                             error_code=code, error_message=f"{message}: {flag_key!r}")
            value = r.value
            if cast is not None:
                ok, value = cast(value)
                if not ok:
                    return FlagResolutionDetails(
                        value=default_value, reason=OFReason.ERROR, error_code=ErrorCode.TYPE_MISMATCH,
                        error_message=f"flag {flag_key!r} value {r.value!r} is not a valid {kind}",
                    )
            return FlagResolutionDetails(
                value=value, reason=self._reason(flag_key, r), variant=r.variation,
                flag_metadata=self._metadata(flag_key, r),
            )
        except Exception as exc:  # never let an exception reach the host app
            return FlagResolutionDetails(value=default_value, reason=OFReason.ERROR,
                                         error_code=ErrorCode.GENERAL, error_message=str(exc)[:200])

    def _reason(self, flag_key, r):
        reason = r.reason
        if reason == Reason.OFF:
            return OFReason.DISABLED
        if reason == Reason.TARGET_MATCH:
            return OFReason.TARGETING_MATCH
        if reason == Reason.HOLDOUT:
            return OFReason.SPLIT
        if reason == Reason.RULE_MATCH or reason == Reason.FALLTHROUGH:
            rule = r.rule_id if reason == Reason.RULE_MATCH else None
            compiled = self.client.ruleset
            split = compiled is not None and (flag_key, rule) in compiled.split_serves
            if r.experiment is not None or split:
                if r.experiment is not None and not r.in_experiment:
                    # a released experiment serves one variation to everyone it matches
                    return OFReason.TARGETING_MATCH if rule else OFReason.DEFAULT
                return OFReason.SPLIT
            return OFReason.TARGETING_MATCH if rule else OFReason.DEFAULT
        return reason  # PREREQUISITE_FAILED: Pitcrew's own reason string

    def _metadata(self, flag_key, r) -> dict:
        meta = {"reason": r.reason, "in_experiment": bool(r.in_experiment)}
        if r.rule_id is not None:
            meta["rule_id"] = str(r.rule_id)
        if r.experiment is not None:
            meta["experiment"] = str(r.experiment)
        if r.holdout is not None:
            meta["holdout"] = str(r.holdout[0]).removeprefix(HOLDOUT_PREFIX)
            meta["holdout_group"] = str(r.holdout[1])
        compiled = self.client.ruleset
        if compiled is not None:
            if isinstance(compiled.version, int):
                meta["ruleset_version"] = compiled.version
            f = compiled.flag(flag_key)
            if f is not None:
                if isinstance(f.kind, str):
                    meta["kind"] = f.kind
                if isinstance(f.version, int) and not isinstance(f.version, bool):
                    meta["flag_version"] = f.version
        return meta


def _as_int(v):
    if isinstance(v, bool):
        return False, None
    if isinstance(v, int):
        return True, v
    if isinstance(v, float) and v.is_integer():
        return True, int(v)
    return False, None


def _as_float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False, None
    try:
        return True, float(v)
    except OverflowError:
        return False, None


def _as_object(v):
    if isinstance(v, (dict, list)):
        return True, v
    return False, None


def _changed_flags(old, new) -> list:
    if old is None or new is None:
        return sorted(new.flag_keys) if new is not None else []
    changed = []
    old_keys = set(old.flag_keys)
    new_keys = set(new.flag_keys)
    for key in new_keys:
        if key not in old_keys:
            changed.append(key)
            continue
        a, b = old.flag(key), new.flag(key)
        if a.version != b.version or a.version is None:
            changed.append(key)
    changed.extend(old_keys - new_keys)
    if not changed:  # segments or experiments changed: any flag may evaluate differently
        return sorted(new_keys)
    return sorted(changed)
