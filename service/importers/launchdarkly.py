"""LaunchDarkly flags (REST API JSON) -> flags-as-code document.

Input: the body of ``GET /api/v2/flags/{project}`` (``{"items": [...]}``), a
list of flags, or one flag (``GET /api/v2/flags/{project}/{key}``), each
with its ``environments`` map; optionally the project's segments for the
environment (``GET /api/v2/segments/{project}/{env}``: ``{"items": [...]}``),
which ``segmentMatch`` clauses need. The translation table and everything
left out are in docs/flags-as-code.md.

Evaluation order is the same in both products (off, prerequisites, targets,
rules, fallthrough), so a translated flag keeps its meaning wherever a
construct has an exact equivalent. Everything else is reported: left out
(``untranslated``) or translated with a stated difference (``notes``).
"""

from datetime import UTC, datetime

from pitcrew.evaluation.operators import is_number, parse_instant, parse_semver

from ..domain.errors import ValidationFailed
from .common import Keys, Report, Untranslatable, finish, product, scale_weights, unique_keys

SOURCE = "LaunchDarkly"
TOTAL_WEIGHT = 100000  # LaunchDarkly rollout weights: thousandths of a percent

STRING_OPS = {"startsWith": "starts_with", "endsWith": "ends_with", "contains": "contains", "matches": "matches"}
NUMBER_OPS = {"lessThan": ("lt", max), "lessThanOrEqual": ("lte", max),
              "greaterThan": ("gt", min), "greaterThanOrEqual": ("gte", min)}
DATE_OPS = {"before": ("before", max), "after": ("after", min)}
SEMVER_OPS = {"semVerLessThan": ("semver_lt", max), "semVerGreaterThan": ("semver_gt", min)}

NOTE_MISSING_BUCKET = ("a context without the '{attr}' attribute: LaunchDarkly puts it in bucket 0 (the first "
                       "variation with weight); Pitcrew skips the rollout (a rule goes on to the next rule, the "
                       "fallthrough serves the off variation)")
NOTE_DATES = ("a numeric context attribute is an epoch time in milliseconds for LaunchDarkly but in seconds for "
              "Pitcrew: send such attributes as RFC 3339 strings (or epoch seconds)")
NOTE_REGEX = ("'matches' uses Python regular expressions in Pitcrew (LaunchDarkly SDKs use their platform's, "
              "e.g. RE2 in Go): check patterns using engine-specific syntax")


def _items(data, what: str) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return data["items"]
    if isinstance(data, dict) and "key" in data:
        return [data]
    raise ValidationFailed(f"Not a LaunchDarkly {what} export.", {"_body": [
        f"Expected {{\"items\": [...]}}, a list of {what}, or one {what[:-1]} object."]})


def _kind(raw: dict) -> str:
    values = [v.get("value") for v in raw.get("variations") or []]
    if len(values) == 2 and all(isinstance(v, bool) for v in values) and values[0] != values[1]:
        return "boolean"
    if values and all(isinstance(v, str) for v in values):
        return "string"
    if values and all(is_number(v) for v in values):
        return "number"
    return "json"


def _default_name(value, i: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value:
        return value
    if is_number(value):
        return str(value)
    return f"variation-{i}"


def _instant_text(value):
    """A LaunchDarkly date value (epoch milliseconds or RFC 3339 text) as an exact Pitcrew value."""
    if is_number(value):
        if not float(value).is_integer():
            raise Untranslatable(f"date {value!r} is not a whole number of milliseconds")
        stamp = datetime.fromtimestamp(int(value) // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{int(value) % 1000:03d}Z"
    return value if isinstance(value, str) and parse_instant(value) is not None else None


class _Translator:
    def __init__(self, environment: str, report: Report):
        self.env = environment
        self.report = report
        self.flag_keys: dict[str, str] = {}
        self.variation_keys: dict[str, list[str]] = {}
        self.segment_keys: dict[str, str] = {}

    # ------------------------------------------------------------ clauses

    def attribute(self, attribute, context_kind) -> str:
        if not isinstance(attribute, str) or not attribute:
            raise Untranslatable("a clause without an attribute")
        if context_kind and attribute.startswith("/"):
            parts = attribute[1:].split("/")
            if len(parts) != 1:
                raise Untranslatable(f"attribute reference {attribute!r} reaches into an object; Pitcrew "
                                     "conditions read top-level attributes")
            attribute = parts[0].replace("~1", "/").replace("~0", "~")
        if attribute == "kind":
            raise Untranslatable("the 'kind' attribute (context kinds) has no Pitcrew equivalent")
        return "id" if attribute == "key" else attribute

    def clause(self, clause: dict, path: str) -> list[list[dict]]:
        """The clause as alternatives (OR) of condition lists (AND)."""
        kind = clause.get("contextKind")
        if kind not in (None, "", "user"):
            raise Untranslatable(f"context kind {kind!r}: Pitcrew contexts have a single kind (user)")
        op, negate = clause.get("op"), bool(clause.get("negate"))
        values = clause.get("values") or []
        if op == "segmentMatch":
            missing = [v for v in values if v not in self.segment_keys]
            if missing or not values:
                raise Untranslatable(f"segment {missing[0] if missing else None!r} is not in the segments export "
                                     "(pass --segments)")
            return [[{"op": "in_segment", "values": [self.segment_keys[v] for v in values], "negate": negate}]]
        attribute = self.attribute(clause.get("attribute"), kind)
        if not values:
            raise Untranslatable("a clause without values")

        def cond(pitcrew_op, vals):
            return {"attribute": attribute, "op": pitcrew_op, "values": vals, "negate": negate}

        if op == "in":
            if not all(isinstance(v, str | bool) or is_number(v) for v in values):
                raise Untranslatable("'in' with null, list or object values")
            return [[cond("in", values)]]
        if op in STRING_OPS:
            strings = [v for v in values if isinstance(v, str)]  # other values never match in LaunchDarkly
            if not strings:
                raise Untranslatable(f"'{op}' without a string value (never matches in LaunchDarkly)")
            if op == "matches":
                self.report.note(path, NOTE_REGEX)
            return [[cond(STRING_OPS[op], strings)]]
        if op in NUMBER_OPS:
            pitcrew_op, pick = NUMBER_OPS[op]
            numbers = [v for v in values if is_number(v)]
            if not numbers:
                raise Untranslatable(f"'{op}' without a number value (never matches in LaunchDarkly)")
            return [[cond(pitcrew_op, [pick(numbers)])]]  # any of them <=> the loosest one
        if op in DATE_OPS:
            pitcrew_op, pick = DATE_OPS[op]
            instants = [t for t in (_instant_text(v) for v in values) if t is not None]
            if not instants:
                raise Untranslatable(f"'{op}' without a date value")
            self.report.note(path, NOTE_DATES)
            return [[cond(pitcrew_op, [pick(instants, key=parse_instant)])]]
        if op in SEMVER_OPS or op == "semVerEqual":
            # LaunchDarkly accepts MAJOR[.MINOR[.PATCH]] without a leading 'v'.
            versions = [v for v in values if isinstance(v, str) and not v.startswith("v") and parse_semver(v)]
            if not versions:
                raise Untranslatable(f"'{op}' without a valid version")
            if op == "semVerEqual":
                if negate:  # not (= a or = b)  <=>  != a and != b
                    return [[cond("semver_eq", [v]) for v in versions]]
                return [[cond("semver_eq", [v])] for v in versions]
            pitcrew_op, pick = SEMVER_OPS[op]
            return [[cond(pitcrew_op, [pick(versions, key=parse_semver)])]]
        raise Untranslatable(f"operator {op!r} has no Pitcrew equivalent")

    # ------------------------------------------------------------ serves

    def variation(self, flag: str, index) -> str:
        keys = self.variation_keys[flag]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(keys):
            raise Untranslatable(f"variation index {index!r} does not exist")
        return keys[index]

    def serve(self, flag: str, vr: dict, path: str) -> dict:
        if not isinstance(vr, dict):
            raise Untranslatable("neither a variation nor a rollout")
        if vr.get("variation") is not None:
            return {"variation": self.variation(flag, vr["variation"])}
        rollout = vr.get("rollout")
        if not isinstance(rollout, dict) or not rollout.get("variations"):
            raise Untranslatable("neither a variation nor a rollout")
        kind = rollout.get("contextKind")
        if kind not in (None, "", "user"):
            raise Untranslatable(f"a rollout by context kind {kind!r}")
        weighted = rollout["variations"]
        if (rollout.get("kind") == "experiment" or rollout.get("experimentAllocation")
                or any(w.get("_untracked") or w.get("untracked") for w in weighted)):
            self.report.note(path, "a LaunchDarkly experiment allocation: served as a percentage rollout of the "
                                   "same sizes; a Pitcrew experiment must be created to measure it")
        weights = [w.get("weight") or 0 for w in weighted]
        if any(not isinstance(w, int) or w < 0 for w in weights):
            raise Untranslatable("rollout weights must be non-negative integers")
        if sum(weights) != TOTAL_WEIGHT:
            # LaunchDarkly serves the last variation to buckets past the sum.
            self.report.note(path, f"weights add up to {sum(weights)}, not {TOTAL_WEIGHT}: the last variation "
                                   "takes the rest, as in LaunchDarkly")
            weights[-1] += TOTAL_WEIGHT - sum(weights)
            if weights[-1] < 0:
                raise Untranslatable("rollout weights exceed 100%")
        bps, exact = scale_weights(weights, TOTAL_WEIGHT)
        if not exact:
            self.report.note(path, "weights rounded to 0.01% (LaunchDarkly has 0.001% steps)")
        bucket_by = self.attribute(rollout.get("bucketBy") or "key", kind)
        if bucket_by != "id":  # every LaunchDarkly context has a key
            self.report.note(path, NOTE_MISSING_BUCKET.format(attr=bucket_by))
        out = {"weights": [[self.variation(flag, w.get("variation")), b] for w, b in zip(weighted, bps, strict=True)]}
        if bucket_by != "id":
            out["bucket_by"] = bucket_by
        return {"rollout": out}

    # ------------------------------------------------------------ flags

    def targeting(self, raw: dict, flag: str, config: dict, path: str) -> dict:
        report = self.report
        keys = self.variation_keys[flag]
        off = config.get("offVariation")
        if off is None:
            fallback = (raw.get("defaults") or {}).get("offVariation")
            off_key = keys[fallback] if isinstance(fallback, int) and 0 <= fallback < len(keys) else keys[-1]
            report.skip(f"{path}.offVariation", "no off variation: LaunchDarkly then serves the application's "
                        "default value when the flag is off or a prerequisite fails",
                        f"Pitcrew serves variation {off_key!r} instead.")
        else:
            try:
                off_key = self.variation(flag, off)
            except Untranslatable as exc:
                raise Untranslatable(f"off variation: {exc}") from None

        prerequisites = []
        for i, prereq in enumerate(config.get("prerequisites") or []):
            other = prereq.get("key")
            try:
                if other not in self.flag_keys:
                    raise Untranslatable(f"prerequisite flag {other!r} is not in the export")
                prerequisites.append({"flag": self.flag_keys[other],
                                      "variation": self.variation(other, prereq.get("variation"))})
            except Untranslatable as exc:
                report.skip(f"{path}.prerequisites.{i}", str(exc),
                            "The flag no longer waits for this prerequisite.")

        by_variation: dict[str, list[str]] = {}
        seen: set[str] = set()
        lists = [("targets", t) for t in config.get("targets") or []] + \
                [("contextTargets", t) for t in config.get("contextTargets") or []]
        counters = {"targets": 0, "contextTargets": 0}
        for source, target in lists:
            i = counters[source]
            counters[source] += 1
            tpath = f"{path}.{source}.{i}"
            if target.get("contextKind") not in (None, "", "user"):
                report.skip(tpath, f"individual targets of context kind {target.get('contextKind')!r}",
                            "These contexts get the flag's rules instead.")
                continue
            try:
                variation = self.variation(flag, target.get("variation"))
            except Untranslatable as exc:
                report.skip(tpath, str(exc))
                continue
            for unit in target.get("values") or []:
                if isinstance(unit, str) and unit and unit not in seen:
                    seen.add(unit)
                    by_variation.setdefault(variation, []).append(unit)
        targets = [{"variation": v, "values": units} for v, units in by_variation.items()]

        rules, ids = [], set()
        for i, rule in enumerate(config.get("rules") or []):
            rpath = f"{path}.rules.{i}"
            try:
                alternatives = product([self.clause(c, f"{rpath}.clauses.{j}")
                                        for j, c in enumerate(rule.get("clauses") or [])])
                serve = self.serve(flag, rule, rpath)
            except Untranslatable as exc:
                report.skip(rpath, str(exc), "Contexts it matched go on to the next rule.")
                continue
            base = str(rule.get("ref") or rule.get("_id") or f"rule-{i}")[:90]
            for k, conditions in enumerate(alternatives):
                rule_id = base if len(alternatives) == 1 else f"{base}-{k + 1}"
                while rule_id in ids:
                    rule_id += "-x"
                ids.add(rule_id)
                rules.append({"id": rule_id, "description": rule.get("description") or "",
                              "conditions": conditions, "serve": serve})
            if len(alternatives) > 1:
                report.note(rpath, f"one LaunchDarkly rule became {len(alternatives)} Pitcrew rules (a clause "
                                   "needs 'any of' several single-value conditions)")
        try:
            fallthrough = self.serve(flag, config.get("fallthrough"), f"{path}.fallthrough")
        except Untranslatable as exc:
            report.skip(f"{path}.fallthrough", str(exc), f"The fallthrough serves {off_key!r} instead.")
            fallthrough = {"variation": off_key}
        return {"enabled": bool(config.get("on")), "off_variation": off_key, "prerequisites": prerequisites,
                "targets": targets, "rules": rules, "fallthrough": fallthrough}

    def flag(self, raw: dict, path: str) -> dict | None:
        flag = raw["key"]
        if raw.get("archived") or raw.get("deprecated"):
            self.report.skip(path, "archived or deprecated in LaunchDarkly", "Not imported.")
            return None
        config = (raw.get("environments") or {}).get(self.env)
        if not isinstance(config, dict):
            self.report.skip(path, f"no configuration for environment {self.env!r}", "Not imported.")
            return None
        if (raw.get("experiments") or {}).get("items"):
            self.report.note(path, "LaunchDarkly experiments are not translated (experiments are not part of the "
                                   "document): their traffic is served as percentage rollouts")
        variations = raw.get("variations") or []
        keys = self.variation_keys[flag]
        maintainer = raw.get("_maintainer") or {}
        try:
            targeting = self.targeting(raw, flag, config, f"{path}.environments.{self.env}")
        except Untranslatable as exc:
            self.report.skip(path, str(exc), "Not imported.")
            return None
        return {
            "key": self.flag_keys[flag], "name": raw.get("name") or flag,
            "description": raw.get("description") or "", "kind": _kind(raw), "type": "release",
            "variations": [{"key": k, "value": v.get("value"),
                            "description": v.get("description") or v.get("name") or ""}
                           for k, v in zip(keys, variations, strict=True)],
            "tags": [t for t in raw.get("tags") or [] if isinstance(t, str) and 0 < len(t) <= 100],
            "owner": maintainer.get("email") or raw.get("maintainerTeamKey"),
            "temporary": bool(raw.get("temporary", True)),
            "targeting": targeting,
        }

    # ------------------------------------------------------------ segments

    def segment(self, raw: dict, path: str) -> dict | None:
        report = self.report
        if raw.get("unbounded"):
            report.skip(path, "a big (unbounded) segment: its members live outside the export", "Not imported.")
            return None
        included, excluded = list(raw.get("included") or []), list(raw.get("excluded") or [])
        for field, units in (("includedContexts", included), ("excludedContexts", excluded)):
            for i, target in enumerate(raw.get(field) or []):
                if target.get("contextKind") in (None, "", "user"):
                    units.extend(target.get("values") or [])
                else:
                    report.skip(f"{path}.{field}.{i}", f"members of context kind {target.get('contextKind')!r}")
        both = set(included) & set(excluded)
        if both:  # LaunchDarkly: included wins; Pitcrew: excluded wins. Keep LaunchDarkly's answer.
            excluded = [u for u in excluded if u not in both]
            report.note(path, f"{len(both)} unit(s) both included and excluded: kept included, as in LaunchDarkly")
        rules = []
        for i, rule in enumerate(raw.get("rules") or []):
            rpath = f"{path}.rules.{i}"
            try:
                if rule.get("weight") is not None:
                    raise Untranslatable("a rule that admits a percentage of its matches")
                clauses = rule.get("clauses") or []
                if any(c.get("op") == "segmentMatch" for c in clauses):
                    raise Untranslatable("a segment rule that uses another segment")
                rules.extend(product([self.clause(c, f"{rpath}.clauses.{j}") for j, c in enumerate(clauses)]))
            except Untranslatable as exc:
                report.skip(rpath, str(exc), "Contexts it matched are no longer members.")
        return {"key": self.segment_keys[raw["key"]], "name": raw.get("name") or raw["key"],
                "description": raw.get("description") or "",
                "tags": [t for t in raw.get("tags") or [] if isinstance(t, str) and 0 < len(t) <= 100],
                "included": [u for u in dict.fromkeys(included) if isinstance(u, str) and u],
                "excluded": [u for u in dict.fromkeys(excluded) if isinstance(u, str) and u], "rules": rules}


def translate(data, environment: str, *, target: str | None = None, segments=None) -> tuple[dict, Report]:
    """The document for ``environment`` (named ``target`` in Pitcrew, default the same) and the report."""
    report = Report(SOURCE, environment)
    t = _Translator(environment, report)
    flags_raw = [f for f in _items(data, "flags") if isinstance(f, dict) and isinstance(f.get("key"), str)]
    segments_raw = [s for s in (_items(segments, "segments") if segments is not None else [])
                    if isinstance(s, dict) and isinstance(s.get("key"), str)]

    flag_keys, segment_keys = Keys(report, "flag"), Keys(report, "segment")
    for raw in flags_raw:
        t.flag_keys[raw["key"]] = flag_keys.key(raw["key"], f"flag-{len(t.flag_keys)}")
        variations = raw.get("variations") or []
        t.variation_keys[raw["key"]] = unique_keys(
            [v.get("name") or _default_name(v.get("value"), i) for i, v in enumerate(variations)], "variation")
    for raw in segments_raw:
        t.segment_keys[raw["key"]] = segment_keys.key(raw["key"], f"segment-{len(t.segment_keys)}")

    segments_out = [s for i, raw in enumerate(segments_raw) if (s := t.segment(raw, f"segments.{i}"))]
    flags_out = [f for i, raw in enumerate(flags_raw) if (f := t.flag(raw, f"flags.{raw['key']}"))]
    kept = {f["key"] for f in flags_out}
    for flag in flags_out:  # a prerequisite on a flag that was not imported cannot be written
        for p in flag["targeting"]["prerequisites"]:
            if p["flag"] not in kept:
                report.skip(f"flags.{flag['key']}.prerequisites", f"prerequisite flag {p['flag']!r} was not imported",
                            "The flag no longer waits for it.")
        flag["targeting"]["prerequisites"] = [p for p in flag["targeting"]["prerequisites"] if p["flag"] in kept]
    return finish(report, target or environment, flags_out, segments_out), report
