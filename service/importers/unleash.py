"""Unleash feature export -> flags-as-code document.

Input: the body of ``POST /api/admin/features-batch/export`` (one
environment; segments by id and name only) or of the older state export
(``GET /api/admin/state/export``: every environment, segments with their
constraints); optionally the segments (``GET /api/admin/segments``) whose
constraints a batch export lacks. The translation table and everything left
out are in docs/flags-as-code.md.

An Unleash flag is on for a context when its environment is enabled and any
strategy matches (constraints AND segments AND the strategy's own check);
variants then pick a value. A Pitcrew flag evaluates its rules in order and
the first that applies wins, so each strategy becomes one or more rules:
strategies that always hold for their matching contexts first (in Unleash's
order), then percentage strategies by decreasing percentage. With the same
stickiness and group id, a unit's bucket is shared, so the first percentage
rule a context matches has the largest percentage it qualifies for: the same
on/off answer as Unleash's "any strategy". Flags without variants become
boolean flags (``on``/``off``); flags with variants string flags (the
variant name, ``disabled`` when off) or, when a variant has a payload, JSON
flags whose value is Unleash's variant object ``{name, enabled, payload}``.
"""

import ipaddress
import re
from decimal import Decimal, InvalidOperation

from pitcrew.evaluation.operators import parse_instant, parse_semver

from ..domain.errors import ValidationFailed
from ..schemas.documents import FLAG_TYPES
from .common import Keys, Report, Untranslatable, finish, product, scale_weights, unique_keys

SOURCE = "Unleash"
DISABLED = "disabled"
STATIC_FIELDS = {"appName", "environment"}
NUMBER_OPS = {"NUM_EQ": "in", "NUM_GT": "gt", "NUM_GTE": "gte", "NUM_LT": "lt", "NUM_LTE": "lte"}
STRING_OPS = {"STR_CONTAINS": "contains", "STR_STARTS_WITH": "starts_with", "STR_ENDS_WITH": "ends_with"}
SEMVER_OPS = {"SEMVER_EQ": "semver_eq", "SEMVER_GT": "semver_gt", "SEMVER_LT": "semver_lt"}
DATE_OPS = {"DATE_AFTER": "after", "DATE_BEFORE": "before"}

NOTE_DEFAULT_STICKINESS = ("stickiness 'default' buckets on userId, falling back in Unleash to sessionId and then "
                           "a random value; Pitcrew buckets on 'id' and skips the rollout for contexts without it")
NOTE_NUMBERS = ("Unleash compares numbers parsed from text; Pitcrew compares numbers only: send '{attr}' as a "
                "JSON number")


def _attribute(name) -> str:
    if not isinstance(name, str) or not name:
        raise Untranslatable("a constraint without a context field")
    return "id" if name == "userId" else name


def _percent(value, what: str) -> Decimal:
    try:
        percent = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise Untranslatable(f"{what} {value!r} is not a number") from None
    if not percent.is_finite():
        raise Untranslatable(f"{what} {value!r} is not a number")
    return min(max(percent, Decimal(0)), Decimal(100))


def _number(text):
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def _split(text) -> list[str]:
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


class _Translator:
    def __init__(self, data: dict, environment: str, report: Report, segment_defs: dict):
        self.data, self.env, self.report = data, environment, report
        self.segment_defs = segment_defs  # id -> {name, constraints}
        self.segment_keys: dict = {}      # id -> pitcrew key (used segments only)
        self.segment_names = Keys(report, "segment")
        self.flag_keys: dict[str, str] = {}
        self.variation_keys: dict[str, dict[str, str]] = {}  # feature -> variant name -> key
        self.booleans: set[str] = set()

    # ------------------------------------------------------------ constraints

    def constraint(self, c: dict, path: str) -> list[list[dict]]:
        """One constraint as alternatives (OR) of condition lists (AND), Unleash semantics included:
        an inverted constraint (and NOT_IN) holds for contexts without the field, which Pitcrew's
        negated conditions do not, hence the extra ``not exists`` alternative."""
        name, op = c.get("contextName"), c.get("operator")
        attr = _attribute(name)
        inverted = bool(c.get("inverted"))
        values = [v.strip() for v in c.get("values") or [] if isinstance(v, str) and v.strip()]
        value = c.get("value")
        if name in STATIC_FIELDS:
            self.report.note(path, f"'{name}' is SDK configuration in Unleash: Pitcrew contexts must carry it as "
                                   "an attribute")
        if op in ("IN", "NOT_IN"):
            if not values:
                raise Untranslatable(f"{op} without values")
            present = {"attribute": attr, "op": "in", "values": values, "negate": False}
            holds_when_present = (op == "IN") != inverted
            if holds_when_present:
                return [[present]]
            return [[{**present, "negate": True}], [{"attribute": attr, "op": "exists", "negate": True}]]
        if op in STRING_OPS:
            if c.get("caseInsensitive"):
                raise Untranslatable(f"case-insensitive {op}: Pitcrew's string operators are case-sensitive")
            if not values:
                raise Untranslatable(f"{op} without values")
            cond = {"attribute": attr, "op": STRING_OPS[op], "values": values, "negate": False}
        elif op in NUMBER_OPS:
            number = _number(value)
            if number is None:
                raise Untranslatable(f"{op} value {value!r} is not a number")
            self.report.note(path, NOTE_NUMBERS.format(attr=attr))
            cond = {"attribute": attr, "op": NUMBER_OPS[op], "values": [number], "negate": False}
        elif op in DATE_OPS:
            if not isinstance(value, str) or parse_instant(value) is None:
                raise Untranslatable(f"{op} value {value!r} is not an RFC 3339 date")
            if name == "currentTime":
                self.report.note(path, "Unleash uses the current time when the context has no currentTime; "
                                       "Pitcrew contexts must carry 'currentTime'")
            cond = {"attribute": attr, "op": DATE_OPS[op], "values": [value], "negate": False}
        elif op in SEMVER_OPS:
            text = value.strip() if isinstance(value, str) else value
            if not isinstance(text, str) or parse_semver(text.removeprefix("v")) is None:
                raise Untranslatable(f"{op} value {value!r} is not a version")
            cond = {"attribute": attr, "op": SEMVER_OPS[op], "values": [text.removeprefix("v")], "negate": False}
        elif op == "REGEX":
            if not isinstance(value, str):
                raise Untranslatable("REGEX without a pattern")
            pattern = ("(?i)" + value) if c.get("caseInsensitive") else value
            try:
                re.compile(pattern)
            except re.error as exc:
                raise Untranslatable(f"REGEX pattern {value!r} is not a Python pattern ({exc})") from None
            if "[[:" in value:
                raise Untranslatable("REGEX with POSIX classes ([[:alpha:]]), which Python patterns lack")
            self.report.note(path, "Unleash evaluates REGEX with RE2, Pitcrew with Python's re: check patterns "
                                   "using engine-specific syntax")
            cond = {"attribute": attr, "op": "matches", "values": [pattern], "negate": False}
        else:
            raise Untranslatable(f"operator {op!r} has no Pitcrew equivalent")
        if not inverted:
            return [[cond]]
        return [[{**cond, "negate": True}], [{"attribute": attr, "op": "exists", "negate": True}]]

    def constraints(self, constraints, path: str) -> list[list[dict]]:
        return product([self.constraint(c, f"{path}.constraints.{j}") for j, c in enumerate(constraints or [])])

    def segment(self, segment_id, path: str) -> dict:
        definition = self.segment_defs.get(segment_id)
        if definition is None:
            raise Untranslatable(f"segment {segment_id!r}: its constraints are not in the export (pass --segments "
                                 "with the segments from /api/admin/segments)")
        if segment_id not in self.segment_keys:
            self.segment_keys[segment_id] = self.segment_names.key(str(definition["name"]), f"segment-{segment_id}")
        return {"op": "in_segment", "values": [self.segment_keys[segment_id]], "negate": False}

    # ------------------------------------------------------------ strategies

    def gate(self, feature: str, strategy: dict, name: str, path: str):
        """(extra alternatives, (bps, bucket_by, salt) or None); None when the strategy never holds."""
        params = strategy.get("parameters") or {}
        if name == "default":
            return [[]], None
        if name == "userWithId":
            ids = _split(params.get("userIds"))
            return ([[{"attribute": "id", "op": "in", "values": ids, "negate": False}]], None) if ids else None
        if name == "remoteAddress":
            return self.addresses(_split(params.get("IPs"))), None
        if name == "applicationHostname":
            raise Untranslatable("applicationHostname matches the host running the SDK; Pitcrew contexts describe "
                                 "the user (add a 'hostname' attribute and a rule by hand)")
        if name in ("flexibleRollout", "gradualRolloutUserId", "gradualRolloutSessionId", "gradualRolloutRandom"):
            if name == "flexibleRollout":
                percent = _percent(params.get("rollout", 100), "rollout")
                stickiness = params.get("stickiness") or "default"
            else:
                percent = _percent(params.get("percentage", 100), "percentage")
                stickiness = {"gradualRolloutUserId": "userId", "gradualRolloutSessionId": "sessionId"}.get(
                    name, "random")
            group = params.get("groupId") or feature
            if percent == 0:
                return None
            if stickiness == "random":
                if percent == 100:
                    return [[]], None
                raise Untranslatable("a random percentage (a new draw on every evaluation); Pitcrew rollouts are "
                                     "sticky")
            if stickiness == "default":
                self.report.note(path, NOTE_DEFAULT_STICKINESS)
            attr = "id" if stickiness in ("default", "userId") else stickiness
            if percent == 100:
                if stickiness == "default":
                    return [[]], None
                return [[{"attribute": attr, "op": "exists", "negate": False}]], None
            bps = int((percent * 100).to_integral_value())
            if bps != percent * 100:
                self.report.note(path, f"{percent}% rounded to {bps / 100}%")
            return [[]], (bps, attr, group)
        raise Untranslatable(f"custom strategy {name!r}: its logic lives in the SDKs")

    def addresses(self, entries: list[str]) -> list[list[dict]]:
        exact, prefixes = [], []
        for entry in entries:
            if "/" not in entry:
                exact.append(entry)
                continue
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise Untranslatable(f"address range {entry!r} is not valid") from None
            if network.version != 4 or network.prefixlen % 8:
                raise Untranslatable(f"address range {entry!r}: only IPv4 ranges on octet boundaries (/8, /16, /24) "
                                     "have an exact Pitcrew condition")
            octets = str(network.network_address).split(".")[: network.prefixlen // 8]
            if network.prefixlen == 32:
                exact.append(str(network.network_address))
            elif network.prefixlen == 0:
                return [[{"attribute": "remoteAddress", "op": "exists", "negate": False}]]
            else:
                prefixes.append(".".join(octets) + ".")
        alternatives = []
        if exact:
            alternatives.append([{"attribute": "remoteAddress", "op": "in", "values": exact, "negate": False}])
        if prefixes:
            alternatives.append([{"attribute": "remoteAddress", "op": "starts_with", "values": prefixes,
                                  "negate": False}])
        if not alternatives:
            raise Untranslatable("remoteAddress without addresses")
        return alternatives

    # ------------------------------------------------------------ variants and serves

    def weights(self, feature: str, variants: list, path: str) -> tuple[list, str]:
        keys = self.variation_keys[feature]
        weights = [int(v.get("weight") or 0) for v in variants]
        if sum(weights) <= 0:
            raise Untranslatable("variants whose weights add up to zero")
        stickiness = variants[0].get("stickiness") or "default"
        if stickiness == "random":
            raise Untranslatable("variants with random stickiness (a new draw on every evaluation)")
        if stickiness == "default":
            self.report.note(path, NOTE_DEFAULT_STICKINESS)
        attr = "id" if stickiness in ("default", "userId") else stickiness
        return [(keys[v["name"]], w) for v, w in zip(variants, weights, strict=True)], attr

    def serve(self, feature: str, gate, variants, path: str) -> dict:
        on = "on" if feature in self.booleans else None
        off = "off" if feature in self.booleans else self.variation_keys[feature][DISABLED]
        if not variants:
            if gate is None:
                return {"variation": on}
            bps, attr, group = gate
            return {"rollout": self.rollout([[on, bps], [off, 10000 - bps]], attr, group, feature)}
        pairs, attr = self.weights(feature, variants, path)
        total = sum(w for _, w in pairs)
        if gate is None:
            bps, _ = scale_weights([w for _, w in pairs], total)
            return {"rollout": self.rollout([[k, b] for (k, _), b in zip(pairs, bps, strict=True)], attr, feature,
                                            feature)}
        gate_bps, gate_attr, group = gate
        if gate_attr != attr:
            self.report.note(path, f"the percentage and the variants use different stickiness ({gate_attr} and "
                                   f"{attr}): Pitcrew buckets both on '{gate_attr}'")
        bps, _ = scale_weights([w * gate_bps for _, w in pairs] + [(10000 - gate_bps) * total], total * 10000)
        weights = [[k, b] for (k, _), b in zip(pairs, bps[:-1], strict=True)] + [[off, bps[-1]]]
        return {"rollout": self.rollout(weights, gate_attr, group, feature)}

    def rollout(self, weights, attr: str, group: str, feature: str) -> dict:
        out = {"weights": weights}
        if attr != "id":
            out["bucket_by"] = attr
        if group != feature:
            out["salt"] = group
        return out

    # ------------------------------------------------------------ flags

    def flag(self, feature: dict, env: dict | None, strategies: list, path: str) -> dict:
        name = feature["name"]
        report = self.report
        enabled = bool(env and env.get("enabled"))
        if env is None:
            report.note(path, f"not enabled in environment {self.env!r} (no environment entry): imported off")
        feature_variants = list((env or {}).get("variants") or feature.get("variants") or [])
        entries = []
        for i, (strategy, spath) in enumerate(strategies):
            sname = strategy.get("name") or strategy.get("strategyName")
            if strategy.get("disabled"):
                report.note(spath, "disabled strategy: skipped, as Unleash does")
                continue
            try:
                gated = self.gate(name, strategy, sname, spath)
                if gated is None:
                    report.note(spath, f"'{sname}' that never holds (0% or no ids): left out, as it changes nothing")
                    continue
                own, gate = gated
                segments = [[[self.segment(sid, spath)]] for sid in strategy.get("segments") or []]
                alternatives = product([self.constraints(strategy.get("constraints"), spath), own, *segments])
                strategy_variants = [v for v in strategy.get("variants") or [] if isinstance(v, dict)]
                variants = strategy_variants or feature_variants
                serve = self.serve(name, gate, variants, spath)
                overrides = [] if strategy_variants else self.overrides(name, feature_variants, gate, spath)
            except Untranslatable as exc:
                report.skip(spath, str(exc), "Contexts it enabled no longer get the flag from it.")
                continue
            base = str(strategy.get("id") or f"strategy-{i}")[:80]
            entries.append((gate, i, base, alternatives, overrides, serve, bool(strategy_variants)))

        ordered = sorted(entries, key=lambda e: (e[0] is not None, -(e[0][0] if e[0] else 0), e[1]))
        gated = [e for e in ordered if e[0] is not None]
        if len({(g[0][1], g[0][2]) for g in gated}) > 1:
            report.note(path, "percentage strategies with different stickiness or group ids: Unleash gives a unit "
                              "outside one percentage another chance at the next, Pitcrew serves the first "
                              "matching percentage rule")
        with_variants = [e[1] for e in ordered if e[6]]
        if with_variants != sorted(with_variants) and len(with_variants) > 1:
            report.note(path, "strategies with their own variants were reordered (percentages last, largest "
                              "first): a context matching several gets the first one's variants")
        rules = []
        for _gate, _, base, alternatives, overrides, serve, _ in ordered:
            for k, conditions in enumerate(alternatives):
                suffix = f"-{k + 1}" if len(alternatives) > 1 else ""
                for j, (condition, override_serve) in enumerate(overrides):
                    rules.append({"id": f"{base}{suffix}-override-{j + 1}", "description": "Variant override",
                                  "conditions": conditions + [condition], "serve": override_serve})
                rules.append({"id": f"{base}{suffix}", "description": "", "conditions": conditions, "serve": serve})

        off = "off" if name in self.booleans else self.variation_keys[name][DISABLED]
        fallthrough = {"variation": off}
        if not strategies:  # Unleash: an enabled flag without strategies is on for everyone
            try:
                fallthrough = self.serve(name, None, feature_variants, path)
            except Untranslatable as exc:
                report.skip(path, str(exc), "The flag serves its off variation instead.")
        kind = feature.get("type")
        if kind not in FLAG_TYPES:
            report.note(path, f"flag type {kind!r} has no Pitcrew equivalent: imported as 'release'")
            kind = "release"
        return {
            "key": self.flag_keys[name], "name": name, "description": feature.get("description") or "",
            "kind": self.kind(name), "type": kind, "variations": self.variations(name),
            "tags": self.tags(name), "owner": None,
            "temporary": kind in ("release", "experiment", "operational"),
            "targeting": {"enabled": enabled, "off_variation": off, "prerequisites": [], "targets": [],
                          "rules": rules, "fallthrough": fallthrough},
        }

    def overrides(self, feature: str, variants: list, gate, path: str) -> list:
        if feature in self.booleans:
            return []
        keys = self.variation_keys[feature]
        off = keys[DISABLED]
        out = []
        for variant in variants:
            for override in variant.get("overrides") or []:
                values = [v for v in override.get("values") or [] if isinstance(v, str) and v]
                if not values:
                    continue
                condition = {"attribute": _attribute(override.get("contextName")), "op": "in", "values": values,
                             "negate": False}
                if gate is None:
                    serve = {"variation": keys[variant["name"]]}
                else:  # the override applies to units the percentage enabled
                    bps, attr, group = gate
                    serve = {"rollout": self.rollout([[keys[variant["name"]], bps], [off, 10000 - bps]], attr,
                                                     group, feature)}
                out.append((condition, serve))
        return out

    def all_variants(self, feature: str) -> list:
        found = {}
        for env in self.feature_envs.get(feature, []):
            for v in env.get("variants") or []:
                found.setdefault(v.get("name"), v)
        for strategy, _ in self.strategies.get(feature, []):
            for v in strategy.get("variants") or []:
                found.setdefault(v.get("name"), v)
        return [v for name, v in found.items() if isinstance(name, str) and name]

    def prepare(self, feature: str) -> None:
        variants = self.all_variants(feature)
        if not variants:
            self.booleans.add(feature)
            return
        names = [v["name"] for v in variants]
        keys = unique_keys(names + [DISABLED], "variant")
        self.variation_keys[feature] = dict(zip(names + [DISABLED], keys, strict=True))
        self.payloads[feature] = {v["name"]: v.get("payload") for v in variants}

    def kind(self, feature: str) -> str:
        if feature in self.booleans:
            return "boolean"
        return "json" if any(self.payloads[feature].values()) else "string"

    def variations(self, feature: str) -> list:
        if feature in self.booleans:
            return [{"key": "on", "value": True, "description": "enabled"},
                    {"key": "off", "value": False, "description": "disabled"}]
        out = []
        json_kind = self.kind(feature) == "json"
        for name, key in self.variation_keys[feature].items():
            if not json_kind:
                value = name
            elif name == DISABLED and key == self.variation_keys[feature][DISABLED]:
                value = {"name": DISABLED, "enabled": False}
            else:
                value = {"name": name, "enabled": True}
                if self.payloads[feature].get(name):
                    value["payload"] = self.payloads[feature][name]
            out.append({"key": key, "value": value, "description": ""})
        return out

    def tags(self, feature: str) -> list:
        tags = []
        for tag in self.data.get("featureTags") or []:
            if tag.get("featureName") == feature:
                kind, value = tag.get("tagType") or tag.get("type"), tag.get("tagValue") or tag.get("value")
                text = value if kind in (None, "simple") else f"{kind}:{value}"
                if isinstance(text, str) and 0 < len(text) <= 100 and text not in tags:
                    tags.append(text)
        return tags

    # ------------------------------------------------------------ dependencies

    def prerequisites(self, flags: dict[str, dict], features: dict[str, dict]) -> None:
        parents_of: dict[str, list] = {}
        for entry in self.data.get("dependencies") or []:
            parents_of.setdefault(entry.get("feature"), []).extend(entry.get("dependencies") or [])
        for feature in features.values():
            if feature.get("dependencies"):
                parents_of.setdefault(feature["name"], []).extend(feature["dependencies"])
        for child, parents in parents_of.items():
            if child not in flags:
                continue
            targeting = flags[child]["targeting"]
            for i, dep in enumerate(parents):
                path = f"features.{child}.dependencies.{i}"
                parent = dep.get("feature")
                if parent not in flags or parents_of.get(parent):
                    reason = ("is not in the export" if parent not in flags
                              else "has dependencies itself (Unleash does not follow them)")
                    self.report.note(path, f"parent {parent!r} {reason}: Unleash never enables this flag, so it is "
                                           "imported off")
                    targeting["enabled"] = False
                    continue
                try:
                    variation = self.parent_variation(parent, dep)
                except Untranslatable as exc:
                    self.report.skip(path, str(exc), "The flag no longer waits for this parent.")
                    continue
                targeting["prerequisites"].append({"flag": self.flag_keys[parent], "variation": variation})

    def parent_variation(self, parent: str, dep: dict) -> str:
        if dep.get("enabled") is False:
            raise Untranslatable("a dependency on a disabled parent: Pitcrew prerequisites need the parent on")
        wanted = [v for v in dep.get("variants") or [] if isinstance(v, str)]
        if parent in self.booleans:
            if wanted and wanted != [DISABLED]:
                raise Untranslatable(f"variants {wanted} of a parent without variants")
            return "on"
        keys = self.variation_keys[parent]
        if not wanted:
            named = [k for name, k in keys.items() if name != DISABLED]
            if len(named) != 1:
                raise Untranslatable("'parent enabled' for a parent with several variants (a Pitcrew prerequisite "
                                     "names one variation)")
            return named[0]
        if len(wanted) != 1 or wanted[0] not in keys:
            raise Untranslatable(f"parent variants {wanted} (a Pitcrew prerequisite names one existing variation)")
        return keys[wanted[0]]

    # ------------------------------------------------------------ the whole export

    def run(self) -> tuple[list, list]:
        data, env = self.data, self.env
        features = {f["name"]: f for f in data.get("features") or []
                    if isinstance(f, dict) and isinstance(f.get("name"), str)}
        environments = {e.get("environment") for e in data.get("featureEnvironments") or [] if isinstance(e, dict)}
        if environments - {None} and env not in environments:
            raise ValidationFailed("The export has no such environment.", {"environment": [
                f"{env!r} is not in this export; it has {sorted(e for e in environments if e)}."]})
        self.feature_envs: dict[str, list] = {}
        for entry in data.get("featureEnvironments") or []:
            if isinstance(entry, dict) and entry.get("environment") in (None, env):
                self.feature_envs.setdefault(entry.get("featureName"), []).append(entry)
        strategy_segments: dict = {}
        for link in data.get("featureStrategySegments") or []:
            strategy_segments.setdefault(link.get("featureStrategyId"), []).append(link.get("segmentId"))
        self.strategies: dict[str, list] = {}
        for i, strategy in enumerate(data.get("featureStrategies") or []):
            if not isinstance(strategy, dict) or strategy.get("environment") not in (None, env):
                continue
            if strategy.get("id") in strategy_segments and not strategy.get("segments"):
                strategy = {**strategy, "segments": strategy_segments[strategy["id"]]}
            self.strategies.setdefault(strategy.get("featureName"), []).append((strategy, f"featureStrategies.{i}"))
        for items in self.strategies.values():
            items.sort(key=lambda item: item[0].get("sortOrder") or 0)

        self.payloads: dict[str, dict] = {}
        flag_names = Keys(self.report, "flag")
        live = []
        for name, feature in features.items():
            if feature.get("archived") or feature.get("archivedAt"):
                self.report.skip(f"features.{name}", "archived in Unleash", "Not imported.")
                continue
            self.flag_keys[name] = flag_names.key(name, f"flag-{len(self.flag_keys)}")
            self.prepare(name)
            live.append(name)
        flags = {}
        for name in live:
            envs = self.feature_envs.get(name) or []
            flags[name] = self.flag(features[name], envs[0] if envs else None, self.strategies.get(name, []),
                                    f"features.{name}")
        self.prerequisites(flags, features)
        segments = []
        for segment_id, key in self.segment_keys.items():
            definition = self.segment_defs[segment_id]
            path = f"segments.{definition['name']}"
            try:
                rules = self.constraints(definition.get("constraints"), path)
            except Untranslatable as exc:
                self.report.skip(path, str(exc), "The segment matches nobody; strategies using it never hold.")
                rules = []
            segments.append({"key": key, "name": str(definition["name"]),
                             "description": definition.get("description") or "", "rules": rules})
        return list(flags.values()), segments


def _segment_definitions(data: dict, segments) -> dict:
    definitions = {}
    listed = segments.get("segments") if isinstance(segments, dict) else segments
    for source in (data.get("segments") or [], listed or []):
        for segment in source:
            if isinstance(segment, dict) and "constraints" in segment and segment.get("id") is not None:
                definitions[segment["id"]] = {"name": segment.get("name") or f"segment-{segment['id']}",
                                              "description": segment.get("description") or "",
                                              "constraints": segment.get("constraints") or []}
    return definitions


def translate(data, environment: str, *, target: str | None = None, segments=None) -> tuple[dict, Report]:
    """The document for ``environment`` (named ``target`` in Pitcrew, default the same) and the report."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ValidationFailed("Not an Unleash feature export.", {"_body": [
            "Expected the body of /api/admin/features-batch/export or /api/admin/state/export "
            "(an object with 'features')."]})
    if segments is not None and not isinstance(segments, dict | list):
        raise ValidationFailed("Not an Unleash segments export.", {"segments": ["Expected {\"segments\": [...]}."]})
    report = Report(SOURCE, environment)
    flags, segment_list = _Translator(data, environment, report, _segment_definitions(data, segments)).run()
    return finish(report, target or environment, flags, segment_list), report
