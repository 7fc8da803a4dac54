"""Deterministic bucketing (docs/evaluation.md, "Bucketing").

``bucket(salt, unit) = (u64be(sha256(utf8(salt + "." + unit))[0:8]) * 10000) >> 64``

:func:`bucket` is the reference formula. The evaluator gets identical answers
without big-integer arithmetic on every call:

* it hashes ``unit`` onto a copy of a pre-hashed ``salt + "."`` prefix
  (:func:`prefix_hasher`);
* with ``h = u64be(digest[0:8])``, ``bucket < T``  <=>  ``h * 10000 < T * 2**64``
  <=>  ``h < threshold(T)`` where ``threshold(T) = ceil(T * 2**64 / 10000)``
  (``h`` is an integer);
* and ``h < threshold(T)``  <=>  ``digest < digest_threshold(T)`` comparing
  bytes (the 8-byte big-endian threshold; a 32-byte digest whose first 8 bytes
  equal it is longer, hence greater). So a rollout compares the raw digest
  against pre-computed byte strings.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from hashlib import sha256

from ..wire import BUCKETS

__all__ = ["BUCKETS", "bucket", "digest_threshold", "percent_buckets", "prefix_hasher", "threshold", "unit_of"]

_TWO64 = 1 << 64


def bucket(salt: str, unit: str) -> int:
    """The bucket in ``[0, 10000)`` of ``unit`` under ``salt`` (docs/evaluation.md)."""
    digest = sha256((salt + "." + unit).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") * BUCKETS) >> 64


def threshold(bps: int) -> int:
    """Smallest raw 64-bit hash value whose bucket is ``>= bps``.

    ``bucket(s, u) < bps`` exactly when ``u64be(digest(s, u)[0:8]) < threshold(bps)``.
    """
    return -((-bps * _TWO64) // BUCKETS)


def digest_threshold(bps: int) -> bytes:
    """Bytes ``t`` such that ``bucket(s, u) < bps`` exactly when ``digest(s, u) < t``."""
    if bps >= BUCKETS:
        return b"\xff" * 33  # greater than every 32-byte digest
    return threshold(max(bps, 0)).to_bytes(8, "big")


def percent_buckets(percent) -> int:
    """The buckets ``b`` with ``b < percent * 100``: ``ceil(percent * 100)``, on the decimal
    value of ``percent`` as written in the ruleset (``0.29`` -> 29, although the binary
    double ``0.29 * 100`` is 29.000000000000004). The service stores percents with at
    most two decimals, where this is exactly ``percent * 100``."""
    if isinstance(percent, float):
        exact = Decimal(repr(percent))  # the shortest decimal that reads back as this double
    else:
        exact = Decimal(percent)
    return int((exact * 100).to_integral_value(rounding=ROUND_CEILING))


def prefix_hasher(salt: str):
    """``copy()`` of a sha256 state that has consumed ``utf8(salt + ".")``.

    ``s = copy(); s.update(utf8(unit)); s.digest()`` is the digest of ``salt + "." + unit``.
    """
    return sha256((salt + ".").encode("utf-8")).copy


def unit_of(value) -> str | None:
    """The unit form of an attribute value, or None when it is not a unit.

    A non-empty string is itself; an integer is its decimal form. Booleans,
    floats, ``""``, null, objects and lists are not units.
    """
    cls = value.__class__
    if cls is str:
        return value or None
    if cls is int:
        return str(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return str.__str__(value) or None
    if isinstance(value, int):
        return int.__repr__(value)
    return None
