"""Condition operators (docs/evaluation.md, "Operators").

One implementation of every operator and of value parsing (versions,
instants), used by the compiler (to build condition closures) and by the
validator (to reject bad writes):

* :func:`parse_semver`, :func:`parse_instant` parse a version / an instant;
* :func:`values_errors` lists what is wrong with a condition's ``values``;
* :func:`build_condition` turns a *valid* condition into ``cond(ctx) -> bool``.

Matching rules: an attribute that is absent, ``null`` or ``[]`` is missing,
and a missing attribute makes every condition but ``exists`` false whatever
``negate`` says. A list-valued attribute matches when any element matches.
An element of the wrong type, or one that does not parse, does not match.
"""

from __future__ import annotations

import math
import operator
import re
from fractions import Fraction

from .regex import MAX_PATTERN_LENGTH, MAX_SUBJECT_LENGTH, compile_search, pattern_error, raw_search  # noqa: F401

__all__ = [
    "OPS",
    "MAX_PATTERN_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "parse_semver",
    "parse_instant",
    "values_errors",
    "build_condition",
]

STRING_OPS = frozenset({"contains", "starts_with", "ends_with", "matches"})
NUMBER_OPS = frozenset({"gt", "gte", "lt", "lte"})
SEMVER_OPS = frozenset({"semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte"})
DATE_OPS = frozenset({"before", "after"})
OPS = frozenset({"in", "exists", "in_segment"}) | STRING_OPS | NUMBER_OPS | SEMVER_OPS | DATE_OPS

_COMPARE = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
    "semver_eq": operator.eq, "semver_gt": operator.gt, "semver_gte": operator.ge,
    "semver_lt": operator.lt, "semver_lte": operator.le,
    "before": operator.lt, "after": operator.gt,
}  # fmt: skip


# --------------------------------------------------------------------------- values


def is_number(v) -> bool:
    """A JSON number: int or finite float, never a bool."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v)


# SemVer 2.0 parts; ASCII classes only (``\d`` would accept other digits).
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"v?({_NUM})(?:\.({_NUM})(?:\.({_NUM}))?)?"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_RELEASE = (1,)


def parse_semver(s):
    """Parse ``[v]MAJOR[.MINOR[.PATCH]][-prerelease][+build]`` into a sort key.

    Returns ``(major, minor, patch, pre)`` comparing by SemVer 2.0 precedence
    (build ignored, missing parts 0), or None when ``s`` is not a version.
    ``pre`` is ``(1,)`` for a release and ``(0, id, ...)`` for a prerelease,
    each id ``(0, int)`` if numeric else ``(1, str)``, so that a prerelease
    sorts before its release, numeric ids before alphanumeric ones, and a
    shorter id list before a longer one with the same prefix.
    """
    if not isinstance(s, str):
        return None
    m = _SEMVER.fullmatch(s)
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    try:
        if pre is None:
            key = _RELEASE
        else:
            key = (0,) + tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
        return (int(major), int(minor or 0), int(patch or 0), key)
    except ValueError:  # a number too long for int()
        return None


_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))?)?"
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_instant(v):
    """An instant as exact epoch seconds (int, float or Fraction), or None.

    Accepts an RFC 3339 timestamp (``T``/``t`` separator, ``Z``/``z`` or a
    numeric offset, no offset meaning UTC, seconds 00-59), a ``YYYY-MM-DD``
    date (midnight UTC), or a number of epoch seconds (not a bool, finite).
    A string of digits is not an instant. Comparisons between the returned
    values are exact (Python compares int, float and Fraction exactly).
    """
    if isinstance(v, str):
        m = _DATE.fullmatch(v)
        if m is None:
            return None
        year, month, day, hh, mm, ss, frac, sign, oh, om = m.groups()
        y, mo, d = int(year), int(month), int(day)
        if not 1 <= mo <= 12 or d < 1:
            return None
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        if d > _MONTH_DAYS[mo - 1] + (mo == 2 and leap):
            return None
        seconds = _days_from_civil(y, mo, d) * 86400
        if hh is not None:
            h, mi, s = int(hh), int(mm), int(ss)
            if h > 23 or mi > 59 or s > 59:
                return None
            seconds += h * 3600 + mi * 60 + s
            if sign is not None:
                offh, offm = int(oh), int(om)
                if offh > 23 or offm > 59:
                    return None
                offset = offh * 3600 + offm * 60
                seconds += -offset if sign == "+" else offset
            if frac is not None:
                try:
                    n = int(frac)
                except ValueError:  # too many digits for int()
                    return None
                if n:
                    return seconds + Fraction(n, 10 ** len(frac))
        return seconds
    if is_number(v):
        return v
    return None


# Attribute values are parsed on every evaluation; remember recent ones.
# Values are a parse result, or False when the string does not parse.
_CACHE_MAX = 4096
_semver_cache: dict = {}
_instant_cache: dict = {}


def _semver_cached(s: str):
    k = _semver_cache.get(s)
    if k is None:
        k = parse_semver(s) or False
        if len(_semver_cache) >= _CACHE_MAX:
            _semver_cache.clear()
        _semver_cache[s] = k
    return k


def _instant_cached(s: str):
    k = _instant_cache.get(s)
    if k is None:
        k = parse_instant(s)
        if k is None:
            k = False
        if len(_instant_cache) >= _CACHE_MAX:
            _instant_cache.clear()
        _instant_cache[s] = k
    return k


# --------------------------------------------------------------------------- validation


def values_errors(op: str, values, *, path: str = "values") -> list[tuple[str, str]]:
    """Problems with a condition's ``values`` for ``op`` (a known op), as (path, message)."""
    if op == "exists":
        if values is None or (isinstance(values, list) and not values):
            return []
        return [(path, "exists takes no values")]
    if not isinstance(values, list) or not values:
        return [(path, "must be a non-empty list")]
    errors: list[tuple[str, str]] = []
    if op in NUMBER_OPS or op in SEMVER_OPS or op in DATE_OPS:
        if len(values) != 1:
            return [(path, f"{op} takes exactly one value")]
    for i, v in enumerate(values):
        p = f"{path}.{i}"
        if op == "in":
            if not (isinstance(v, str | bool) or is_number(v)):
                errors.append((p, "must be a string, number or boolean"))
        elif op == "in_segment":
            if not isinstance(v, str) or not v:
                errors.append((p, "must be a segment key"))
        elif op in STRING_OPS:
            if not isinstance(v, str):
                errors.append((p, "must be a string"))
            elif op == "matches":
                problem = pattern_error(v)  # syntax, length and safety (see docs/evaluation.md, "Pattern safety")
                if problem is not None:
                    errors.append((p, problem))
        elif op in NUMBER_OPS:
            if not is_number(v):
                errors.append((p, "must be a number"))
        elif op in SEMVER_OPS:
            if parse_semver(v) is None:
                errors.append(
                    (p, "must be a version [v]MAJOR[.MINOR[.PATCH]][-prerelease][+build]")
                )
        elif op in DATE_OPS:
            if parse_instant(v) is None:
                errors.append(
                    (p, "must be an RFC 3339 timestamp, a YYYY-MM-DD date or epoch seconds")
                )
    return errors


# --------------------------------------------------------------------------- building


def _value_test(op: str, values: list):
    """``test(v) -> bool`` for one present, non-list attribute value."""
    if op == "in":
        strs = frozenset(v for v in values if isinstance(v, str))
        bools = frozenset(v for v in values if isinstance(v, bool))
        nums = frozenset(v for v in values if is_number(v))

        def test(v):
            if isinstance(v, str):
                return v in strs
            if isinstance(v, bool):
                return v in bools
            if isinstance(v, int | float):
                return v in nums
            return False

        return test

    if op == "contains":
        subs = tuple(values)
        return lambda v: isinstance(v, str) and any(s in v for s in subs)
    if op == "starts_with":
        prefixes = tuple(values)
        return lambda v: isinstance(v, str) and v.startswith(prefixes)
    if op == "ends_with":
        suffixes = tuple(values)
        return lambda v: isinstance(v, str) and v.endswith(suffixes)
    if op == "matches":
        tests = tuple(compile_search(p) for p in values)
        return lambda v: isinstance(v, str) and any(t(v) for t in tests)

    cmp = _COMPARE[op]
    if op in NUMBER_OPS:
        x = values[0]
        return lambda v: is_number(v) and cmp(v, x)
    if op in SEMVER_OPS:
        x = parse_semver(values[0])

        def test(v):
            if not isinstance(v, str):
                return False
            k = _semver_cached(str.__str__(v))
            return k is not False and cmp(k, x)

        return test
    if op in DATE_OPS:
        x = parse_instant(values[0])

        def test(v):
            if isinstance(v, str):
                k = _instant_cached(str.__str__(v))
                return k is not False and cmp(k, x)
            return is_number(v) and cmp(v, x)

        return test
    raise ValueError(f"unknown op {op!r}")


def _is_missing(v) -> bool:
    return v is None or ((v.__class__ is list or v.__class__ is tuple) and not v)


def _any_value(v, test) -> bool:
    """``test`` on a present value, or on any element of a list value."""
    c = v.__class__
    if c is list or c is tuple:
        for e in v:
            if test(e):
                return True
        return False
    return test(v)


def _generic(attr: str, test, negate: bool):
    """A condition from a value test: missing/list/negate handling."""
    if negate:

        def cond(ctx):
            v = ctx.get(attr)
            if _is_missing(v):
                return False
            return not _any_value(v, test)

        return cond

    def cond(ctx):
        v = ctx.get(attr)
        return v is not None and _any_value(v, test)

    return cond


def _fast(attr: str, op: str, values: list, test):
    """A non-negated condition with the common string case inlined, or None."""
    if op == "in" and all(isinstance(v, str) for v in values):
        strs = frozenset(values)

        def cond(ctx):
            v = ctx.get(attr)
            if v.__class__ is str:
                return v in strs
            return v is not None and _any_value(v, test)

        return cond
    if op == "matches" and len(values) == 1:
        search = raw_search(values[0])  # refuses an unsafe pattern
        limit = MAX_SUBJECT_LENGTH

        def cond(ctx):
            v = ctx.get(attr)
            if v.__class__ is str:
                return len(v) <= limit and search(v) is not None
            return v is not None and _any_value(v, test)

        return cond
    if op in SEMVER_OPS:
        return _SEMVER_FAST[op](attr, parse_semver(values[0]), test)
    return None


# Semver conditions with the comparison inlined (the hottest non-trivial op).
# ``get(v) or parse(v)``: a cached False (not a version) re-reads the cache.


def _semver_eq(attr, x, test, get=_semver_cache.get, parse=_semver_cached):
    def cond(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            k = get(v) or parse(v)
            return k is not False and k == x
        return v is not None and _any_value(v, test)

    return cond


def _semver_gt(attr, x, test, get=_semver_cache.get, parse=_semver_cached):
    def cond(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            k = get(v) or parse(v)
            return k is not False and k > x
        return v is not None and _any_value(v, test)

    return cond


def _semver_gte(attr, x, test, get=_semver_cache.get, parse=_semver_cached):
    def cond(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            k = get(v) or parse(v)
            return k is not False and k >= x
        return v is not None and _any_value(v, test)

    return cond


def _semver_lt(attr, x, test, get=_semver_cache.get, parse=_semver_cached):
    def cond(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            k = get(v) or parse(v)
            return k is not False and k < x
        return v is not None and _any_value(v, test)

    return cond


def _semver_lte(attr, x, test, get=_semver_cache.get, parse=_semver_cached):
    def cond(ctx):
        v = ctx.get(attr)
        if v.__class__ is str:
            k = get(v) or parse(v)
            return k is not False and k <= x
        return v is not None and _any_value(v, test)

    return cond


_SEMVER_FAST = {
    "semver_eq": _semver_eq,
    "semver_gt": _semver_gt,
    "semver_gte": _semver_gte,
    "semver_lt": _semver_lt,
    "semver_lte": _semver_lte,
}


def build_condition(cond: dict, segments):
    """``fn(ctx) -> bool`` for a valid condition.

    ``segments`` maps segment key -> ``member(ctx) -> bool``; a key it lacks
    never matches. Raises ValueError/KeyError/TypeError on invalid input
    (callers validate first).
    """
    op = cond["op"]
    negate = bool(cond.get("negate"))
    values = cond.get("values")

    if op == "in_segment":
        members = tuple(segments[k] for k in dict.fromkeys(values) if k in segments)
        if not members:
            return (lambda ctx: True) if negate else (lambda ctx: False)
        if len(members) == 1 and not negate:
            return members[0]

        def in_segment(ctx):
            for member in members:
                if member(ctx):
                    return not negate
            return negate

        return in_segment

    attr = cond["attribute"]
    if not isinstance(attr, str):
        raise TypeError("attribute must be a string")

    if op == "exists":

        def exists(ctx):
            return _is_missing(ctx.get(attr)) == negate

        return exists

    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    test = _value_test(op, values)
    if not negate:
        fast = _fast(attr, op, values, test)
        if fast is not None:
            return fast
    return _generic(attr, test, negate)
