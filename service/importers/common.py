"""What the importers share: the translation report, keys, weights and rule expansion."""

import re
from dataclasses import dataclass, field

from ..domain.errors import ValidationFailed
from ..flags_as_code.document import canonical_document

BUCKETING_NOTE = (
    "Percentages keep their size but not their membership: {product} and Pitcrew hash units "
    "differently, so a unit that got a variation from a percentage rollout in {product} may get "
    "another one in Pitcrew. Targets and conditions keep their exact meaning.")

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")

# A rule whose conditions need "any of" across conditions becomes several
# rules; past this many the source rule is reported instead.
MAX_EXPANSION = 32


@dataclass
class Report:
    """What was translated, what was not (and why), and what behaves differently."""

    source: str
    environment: str
    untranslated: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    renamed: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def skip(self, path: str, reason: str, consequence: str = "") -> None:
        """Something left out of the document (a rule, a target list, a flag...)."""
        self.untranslated.append({"path": path, "reason": reason, "consequence": consequence})

    def note(self, path: str, message: str) -> None:
        """Translated, with a difference the user must know about."""
        if not any(n["path"] == path and n["message"] == message for n in self.notes):
            self.notes.append({"path": path, "message": message})

    def rename(self, kind: str, source_key: str, key: str) -> None:
        self.renamed.append({"kind": kind, "from": source_key, "to": key})

    def to_dict(self) -> dict:
        return {"source": self.source, "environment": self.environment, "counts": self.counts,
                "bucketing": BUCKETING_NOTE.format(product=self.source),
                "untranslated": self.untranslated, "notes": self.notes, "renamed": self.renamed}

    def text(self) -> str:
        lines = [f"{self.source} export, environment {self.environment}: "
                 + ", ".join(f"{n} {what}" for what, n in self.counts.items()) + "."]
        lines.append(BUCKETING_NOTE.format(product=self.source))
        if self.untranslated:
            lines.append(f"Not translated ({len(self.untranslated)}):")
            for item in self.untranslated:
                tail = f" {item['consequence']}" if item["consequence"] else ""
                lines.append(f"  {item['path']}: {item['reason']}.{tail}")
        if self.notes:
            lines.append(f"Translated with a difference ({len(self.notes)}):")
            lines.extend(f"  {n['path']}: {n['message']}" for n in self.notes)
        if self.renamed:
            lines.append("Renamed (Pitcrew keys are lower case, [a-z0-9._-]):")
            lines.extend(f"  {r['kind']} {r['from']!r} -> {r['to']!r}" for r in self.renamed)
        return "\n".join(lines)


class Untranslatable(Exception):
    """Raised while translating one element; the caller reports it and leaves the element out."""


def slug(text: str, fallback: str) -> str:
    """A key matching Pitcrew's key pattern derived from ``text`` (lower case, other characters -> '-')."""
    key = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower())
    key = re.sub(r"^[^a-z0-9]+", "", key)[:100]
    return key if KEY_PATTERN.match(key) else fallback


class Keys:
    """Unique keys within one namespace, reporting every rename."""

    def __init__(self, report: Report, kind: str):
        self.report, self.kind, self.used = report, kind, {}

    def key(self, source_key: str, fallback: str) -> str:
        key = slug(source_key, fallback)
        base, n = key, 2
        while key in self.used.values():
            key = f"{base[:95]}-{n}"
            n += 1
        self.used[source_key] = key
        if key != source_key:
            self.report.rename(self.kind, source_key, key)
        return key


def unique_keys(names: list[str], fallback: str) -> list[str]:
    """Variation keys for ``names`` (slugs, de-duplicated in order)."""
    keys: list[str] = []
    for i, name in enumerate(names):
        key = slug(name, f"{fallback}-{i}")
        base, n = key, 2
        while key in keys:
            key = f"{base[:95]}-{n}"
            n += 1
        keys.append(key)
    return keys


def scale_weights(weights: list[int], total: int) -> tuple[list[int], bool]:
    """Weights out of ``total`` as basis points summing to 10000, and whether that was exact.

    Rounds the cumulative boundaries, so each share moves by less than one
    basis point and the order of the ranges is kept."""
    if total <= 0:
        raise Untranslatable("the weights add up to zero")
    out, previous, cumulative = [], 0, 0
    for weight in weights:
        cumulative += weight
        boundary = (cumulative * 10000 * 2 + total) // (2 * total)
        out.append(boundary - previous)
        previous = boundary
    exact = all(w * 10000 % total == 0 for w in weights)
    return out, exact


def product(alternatives: list[list[list[dict]]]) -> list[list[dict]]:
    """AND of ORs -> OR of ANDs: each input lists the alternatives (condition lists) of one clause."""
    result: list[list[dict]] = [[]]
    for options in alternatives:
        result = [done + option for done in result for option in options]
        if len(result) > MAX_EXPANSION:
            raise Untranslatable(f"it would need more than {MAX_EXPANSION} Pitcrew rules")
    return result


def finish(report: Report, environment: str, flags: list, segments: list) -> dict:
    report.counts = {"flags": len(flags), "segments": len(segments),
                     "untranslated": len(report.untranslated), "notes": len(report.notes)}
    return canonical_document(environment, flags, segments, [])


def need_object(value, what: str) -> None:
    if not isinstance(value, dict):
        raise ValidationFailed(f"Not a {what}.", {"_body": [f"Expected a JSON object ({what})."]})
