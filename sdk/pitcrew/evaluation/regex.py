"""Safe regular expressions for the ``matches`` operator (see docs/evaluation.md, "Pattern safety").

``matches`` has ``re.search`` semantics with no flags. Python's ``re`` is a
backtracking engine: a pattern such as ``^(a+)+$`` takes exponential time on
``"a" * 30 + "b"``, holding the GIL (the host application stops). The rule is
that no accepted pattern may make one condition take more than about a
millisecond on any attribute value. It is enforced by construction, the same
way in the service (writes are refused) and in the SDK (a flag whose pattern
is refused evaluates to the caller's default with reason ERROR, never hangs):

1. **Portable syntax only** (RE2/Go/JavaScript can run the same pattern):
   no backreferences, lookahead/lookbehind, conditionals, atomic groups or
   possessive quantifiers, no ``\\Z``, and no inline flags but ``i``, ``m``, ``s``.
2. **No ambiguous repetition**, the cause of super-linear backtracking:

   * *nested quantifiers*: a repeated group (``+``, ``*``, ``{m,n}`` with
     ``n > 1``) must not contain a variable-length part or match the empty
     string (``(a+)+``, ``(\\w+\\s?)*``, ``(.*a){20}``, ``(a?){30}``), except a
     small bounded case like ``(\\d{1,3}\\.){3}`` (at most 1,000 ways);
   * *overlapping alternatives under a quantifier*: ``(a|aa)+``, ``(a|a?)+``
     (branches that can start with the same character, or match empty);
   * *adjacent overlapping quantifiers*: two variable-length parts of one
     sequence that can match the same characters, with nothing in between
     that only one of them can match (``\\d+\\d+``, ``.*a.*``,
     ``\\S+@\\S+``): each split of the text between them is tried.

   What stays is at worst quadratic in the text length (one search start per
   character, one greedy run each).
3. **A cap on the text matched**: an attribute value longer than
   :data:`MAX_SUBJECT_LENGTH` characters does not match (like a value of the
   wrong type; ``negate`` inverts it as usual). Quadratic work on at most 512
   characters stays within about a millisecond (``benchmarks/bench_engine.py``
   measures the worst accepted shapes).

RE2 (``google-re2``) was measured and not adopted; docs/evaluation.md, "Pattern safety" says why.
The checks run on Python's own parse of the pattern (``re._parser``), so they
see exactly what ``re`` will execute.
"""

from __future__ import annotations

import re
from re import _compiler, _parser
from re import _constants as C  # noqa: N812

__all__ = ["MAX_PATTERN_LENGTH", "MAX_SUBJECT_LENGTH", "compile_search", "pattern_error", "raw_search"]

MAX_PATTERN_LENGTH = 1000
MAX_SUBJECT_LENGTH = 512
MAX_BOUNDED_WAYS = 1000  # nested bounded quantifiers: ways to split one repetition

_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
_ALLOWED_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE
_MAXREPEAT = C.MAXREPEAT
_MAXCODE = 0x10FFFF

# Category relations used to prove two character sets disjoint.
_DIGIT, _WORD, _SPACE = C.CATEGORY_DIGIT, C.CATEGORY_WORD, C.CATEGORY_SPACE
_NOT = {C.CATEGORY_NOT_DIGIT: _DIGIT, C.CATEGORY_NOT_WORD: _WORD, C.CATEGORY_NOT_SPACE: _SPACE}
_CATEGORY_RE = {_DIGIT: re.compile(r"\d"), _WORD: re.compile(r"\w"), _SPACE: re.compile(r"\s")}
_SUBSET = {(_DIGIT, _DIGIT), (_WORD, _WORD), (_SPACE, _SPACE), (_DIGIT, _WORD)}
_DISJOINT = {(_DIGIT, _SPACE), (_SPACE, _DIGIT), (_WORD, _SPACE), (_SPACE, _WORD)}


class Unsafe(ValueError):
    """The pattern is refused; the message says why and how to rewrite it."""


# --------------------------------------------------------------------------- character sets


class _Chars:
    """A conservative set of characters: ``negated`` XOR (in ``ranges`` or in ``cats``)."""

    __slots__ = ("negated", "ranges", "cats")

    def __init__(self, negated=False, ranges=(), cats=()):
        self.negated = negated
        self.ranges = tuple(ranges)
        self.cats = frozenset(cats)

    def union(self, other: _Chars) -> _Chars:
        if other.is_empty():
            return self
        if self.is_empty():
            return other
        if not self.negated and not other.negated:
            return _Chars(False, self.ranges + other.ranges, self.cats | other.cats)
        return _ANY  # conservative: a superset is always safe here

    def is_empty(self) -> bool:
        return not self.negated and not self.ranges and not self.cats


_ANY = _Chars(True)
_EMPTY = _Chars(False)


def _cat_match(cat, ch: str) -> bool:
    if cat in _NOT:
        return _CATEGORY_RE[_NOT[cat]].match(ch) is None
    return _CATEGORY_RE[cat].match(ch) is not None


def _in_positive(ranges, cats, lo, hi) -> bool:
    """Is every character in [lo, hi] inside ``ranges`` or ``cats``? (conservative: False)"""
    for a, b in ranges:
        if a <= lo and hi <= b:
            return True
    if cats and hi - lo <= 256:
        return all(any(_cat_match(c, chr(x)) for c in cats) for x in range(lo, hi + 1))
    return False


def _range_meets_cat(lo, hi, cat) -> bool:
    if hi - lo > 256:
        return True
    return any(_cat_match(cat, chr(x)) for x in range(lo, hi + 1))


def _cats_meet(a, b) -> bool:
    if (a, b) in _DISJOINT:
        return False
    if a in _NOT and _NOT[a] == b or b in _NOT and _NOT[b] == a:
        return False
    if a in _NOT and b not in _NOT and (b, _NOT[a]) in _SUBSET:
        return False
    if b in _NOT and a not in _NOT and (a, _NOT[b]) in _SUBSET:
        return False
    return True


def _subset(pos: _Chars, of_ranges, of_cats) -> bool:
    """Is the positive set ``pos`` inside (``of_ranges`` or ``of_cats``)?"""
    for lo, hi in pos.ranges:
        if not _in_positive(of_ranges, of_cats, lo, hi):
            return False
    for c in pos.cats:
        if not any((c, d) in _SUBSET for d in of_cats):
            return False
    return True


def _meet(a: _Chars, b: _Chars) -> bool:
    """May the two sets share a character? False only when provably disjoint."""
    if a.negated and b.negated:
        return True
    if a.negated:
        a, b = b, a
    if b.negated:  # a positive, b = complement of (ranges, cats)
        return not _subset(a, b.ranges, b.cats)
    for lo, hi in a.ranges:
        for lo2, hi2 in b.ranges:
            if lo <= hi2 and lo2 <= hi:
                return True
        for c in b.cats:
            if _range_meets_cat(lo, hi, c):
                return True
    for c in a.cats:
        for lo, hi in b.ranges:
            if _range_meets_cat(lo, hi, c):
                return True
        for d in b.cats:
            if _cats_meet(c, d):
                return True
    return False


def _fold(ranges, ignore_case: bool):
    if not ignore_case:
        return ranges
    out = list(ranges)
    for lo, hi in ranges:
        if hi - lo > 256:
            return [(0, _MAXCODE)]
        for x in range(lo, hi + 1):
            for v in {chr(x).lower(), chr(x).upper(), chr(x).swapcase()}:
                if len(v) == 1:
                    out.append((ord(v), ord(v)))
    return out


def _class_chars(items, ignore_case: bool) -> _Chars:
    negated = False
    ranges, cats = [], []
    for op, av in items:
        if op is C.NEGATE:
            negated = True
        elif op is C.LITERAL:
            ranges.append((av, av))
        elif op is C.RANGE:
            ranges.append(av)
        elif op is C.CATEGORY:
            cats.append(av)
        else:  # RANGE_UNI_IGNORE and friends: assume anything
            return _ANY
    return _Chars(negated, _fold(ranges, ignore_case), cats)


# --------------------------------------------------------------------------- analysis


class _Checker:
    def __init__(self, global_flags: int):
        self.ignore_case = bool(global_flags & re.IGNORECASE)
        self.dotall = bool(global_flags & re.DOTALL)

    # -- facts about one item ------------------------------------------------

    def chars(self, item) -> _Chars:
        """Every character ``item`` can consume."""
        op, av = item
        if op is C.LITERAL:
            return _Chars(False, _fold([(av, av)], self.ignore_case))
        if op is C.NOT_LITERAL:
            return _Chars(True, _fold([(av, av)], self.ignore_case))
        if op is C.ANY:
            return _ANY if self.dotall else _Chars(True, [(10, 10)])
        if op is C.IN:
            return _class_chars(av, self.ignore_case)
        if op is C.AT:
            return _EMPTY
        if op is C.BRANCH:
            return self.seq_chars([x for branch in av[1] for x in branch])
        if op is C.SUBPATTERN:
            return self.seq_chars(av[3])
        if op in _REPEATS:
            return self.seq_chars(av[2])
        return _ANY

    def seq_chars(self, items) -> _Chars:
        out = _EMPTY
        for item in items:
            out = out.union(self.chars(item))
            if out is _ANY:
                break
        return out

    def first_chars(self, items) -> _Chars:
        """Characters a match of the sequence ``items`` can start with."""
        out = _EMPTY
        for item in items:
            op, av = item
            if op is C.BRANCH:
                first = _EMPTY
                for branch in av[1]:
                    first = first.union(self.first_chars(branch))
            elif op is C.SUBPATTERN:
                first = self.first_chars(av[3])
            elif op in _REPEATS:
                first = self.first_chars(av[2])
            else:
                first = self.chars(item)
            out = out.union(first)
            if not _nullable(item):
                break
        return out

    # -- the rules -----------------------------------------------------------

    def check(self, items, in_repeat: bool = False) -> None:
        self.check_sequence(items)
        for item in items:
            op, av = item
            if op is C.SUBPATTERN:
                _group, add, _del, sub = av
                if add & ~_ALLOWED_FLAGS:
                    raise Unsafe("inline flags other than i, m and s are not supported")
                saved = self.ignore_case, self.dotall
                self.ignore_case = self.ignore_case or bool(add & re.IGNORECASE)
                self.dotall = self.dotall or bool(add & re.DOTALL)
                self.check(sub, in_repeat)
                self.ignore_case, self.dotall = saved
            elif op is C.BRANCH:
                for branch in av[1]:
                    self.check(branch, in_repeat)
            elif op in _REPEATS:
                lo, hi, body = av
                if hi > 1:
                    self.check_repeated_body(lo, hi, body)
                self.check(body, in_repeat or hi > 1)
            elif op in (C.GROUPREF, C.GROUPREF_EXISTS, C.GROUPREF_IGNORE, C.GROUPREF_LOC_IGNORE,
                        C.GROUPREF_UNI_IGNORE):
                raise Unsafe("backreferences are not supported")
            elif op in (C.ASSERT, C.ASSERT_NOT):
                raise Unsafe("lookahead and lookbehind assertions are not supported")
            elif op in (C.ATOMIC_GROUP, C.POSSESSIVE_REPEAT):
                raise Unsafe("atomic groups and possessive quantifiers are not supported")
            elif op is C.AT and av is C.AT_END_STRING:
                raise Unsafe(r"\Z is not supported; use $")

    def check_repeated_body(self, lo, hi, body) -> None:
        width = _width(body)
        if width[0] == 0:
            raise Unsafe("a repeated group can match the empty string (e.g. (a?)* or (a*)+); "
                         "nested quantifiers can take exponential time")
        variable = _variable_parts(body)
        if variable:
            ways = 1
            for vlo, vhi in variable:
                if vhi >= _MAXREPEAT or vhi - vlo > MAX_BOUNDED_WAYS:
                    ways = None
                    break
                ways *= vhi - vlo + 1
            if ways is not None and hi < _MAXREPEAT:
                try:
                    total = ways ** hi
                except OverflowError:
                    total = None
                if total is not None and total <= MAX_BOUNDED_WAYS:
                    return
            raise Unsafe("nested quantifiers (a repeated group containing +, * or {m,n}, as in "
                         "(a+)+ or (\\w+\\s?)*) can take exponential time; repeat fixed-length "
                         "parts only, e.g. (ab)+ or [a-z]+")
        for op, av in body:
            if op is C.SUBPATTERN:
                self.check_alternatives(av[3])
            elif op is C.BRANCH:
                self.check_alternatives([(op, av)])

    def check_alternatives(self, items) -> None:
        for op, av in items:
            if op is C.SUBPATTERN:
                self.check_alternatives(av[3])
            elif op is C.BRANCH:
                branches = av[1]
                firsts = []
                for branch in branches:
                    if _width(branch)[0] == 0:
                        raise Unsafe("a repeated alternative can match the empty string, as in "
                                     "(a|a?)+; this can take exponential time")
                    firsts.append(self.first_chars(branch))
                for i in range(len(firsts)):
                    for j in range(i + 1, len(firsts)):
                        if _meet(firsts[i], firsts[j]):
                            raise Unsafe("repeated alternatives that can start with the same "
                                         "character, as in (a|aa)+, can take exponential time; "
                                         "make the alternatives start differently")

    def last_chars(self, items) -> _Chars:
        """Characters a match of the sequence ``items`` can end with."""
        out = _EMPTY
        for item in reversed(items):
            op, av = item
            if op is C.BRANCH:
                last = _EMPTY
                for branch in av[1]:
                    last = last.union(self.last_chars(branch))
            elif op is C.SUBPATTERN:
                last = self.last_chars(av[3])
            elif op in _REPEATS:
                last = self.last_chars(av[2])
            else:
                last = self.chars(item)
            out = out.union(last)
            if not _nullable(item):
                break
        return out

    def check_sequence(self, items) -> None:
        """Refuse two variable-length parts X ... Y of one sequence where the boundary between
        them can shift: Y can start with a character X can end with, and everything in between
        can be taken by either (or skipped). Each shift is one more way to split the text."""
        n = len(items)
        for i in range(n):
            if not _is_variable(items[i]):
                continue
            tail = self.last_chars([items[i]])
            for j in range(i + 1, n):
                item = items[j]
                if _is_variable(item) and _meet(tail, self.first_chars([item])):
                    raise Unsafe("two quantified parts can match the same characters one after "
                                 "the other (as in \\d+\\d+, .*a.*b or \\S+@\\S+\\.\\S+$): every "
                                 "split between them is tried; use classes that exclude the "
                                 "separator, e.g. [^@.]+@, or drop a leading/trailing .*")
                if _nullable(item):
                    continue
                # A mandatory part in between lets the boundary shift only through characters
                # that X's end and that part can both take.
                tail = _intersect(tail, self.chars(item))
                if tail.is_empty():
                    break


def _intersect(a: _Chars, b: _Chars) -> _Chars:
    """A superset of the characters in both sets (empty only when provably disjoint)."""
    if a.negated and b.negated:
        return _Chars(True, a.ranges + b.ranges, a.cats | b.cats)
    if not _meet(a, b):
        return _EMPTY
    if a.negated:
        return b
    if b.negated:
        return a
    ranges = [(max(lo, lo2), min(hi, hi2)) for lo, hi in a.ranges for lo2, hi2 in b.ranges
              if lo <= hi2 and lo2 <= hi]
    ranges += [(lo, hi) for lo, hi in a.ranges if any(_range_meets_cat(lo, hi, c) for c in b.cats)]
    ranges += [(lo, hi) for lo, hi in b.ranges if any(_range_meets_cat(lo, hi, c) for c in a.cats)]
    cats = [c for c in a.cats if any(_cats_meet(c, d) for d in b.cats)]
    return _Chars(False, ranges, cats)


def _subset_of(a: _Chars, b: _Chars) -> bool:
    if b.negated:
        return not a.negated and not _meet(a, _Chars(False, b.ranges, b.cats))
    if a.negated:
        return False
    return _subset(a, b.ranges, b.cats)


_state = _parser.State()  # the parse state whose group widths GROUPREF needs


def _width(items) -> tuple[int, int]:
    return _parser.SubPattern(_state, list(items)).getwidth()


def _nullable(item) -> bool:
    return _width([item])[0] == 0


def _is_variable(item) -> bool:
    lo, hi = _width([item])
    return lo != hi


def _variable_parts(items) -> list[tuple[int, int]]:
    """(min, max) counts of the quantifiers inside ``items`` (at any depth) whose length varies."""
    out = []
    for op, av in items:
        if op in _REPEATS:
            lo, hi, body = av
            if lo != hi and _width(body)[1] > 0:
                out.append((lo, hi))
            out.extend(_variable_parts(body))
        elif op is C.SUBPATTERN:
            out.extend(_variable_parts(av[3]))
        elif op is C.BRANCH:
            widths = {_width(b) for b in av[1]}
            if len({w[0] for w in widths} | {w[1] for w in widths}) > 1:
                out.append((1, len(av[1])))
            for branch in av[1]:
                out.extend(_variable_parts(branch))
    return out


# --------------------------------------------------------------------------- entry points

_checked: dict = {}


def pattern_error(pattern) -> str | None:
    """Why ``pattern`` is refused for ``matches``, or None when it is accepted."""
    if not isinstance(pattern, str):
        return "must be a string"
    cached = _checked.get(pattern)
    if cached is not None:
        return cached or None
    error = _pattern_error(pattern)
    if len(_checked) >= 4096:
        _checked.clear()
    _checked[pattern] = error or ""
    return error


def _pattern_error(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern)
        parsed = _parser.parse(pattern, 0)
    except Exception as exc:  # re.error, RecursionError, OverflowError, ...
        return f"invalid pattern: {exc}"
    flags = parsed.state.flags
    if flags & ~_ALLOWED_FLAGS:
        return "unsafe pattern: inline flags other than i, m and s are not supported"
    global _state
    try:
        _state = parsed.state
        _Checker(flags).check(list(parsed))
    except Unsafe as exc:
        return f"unsafe pattern: {exc}"
    except RecursionError:
        return "unsafe pattern: nested too deeply"
    finally:
        _state = _parser.State()
    return None


_SINGLE = (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN)


def _compile(pattern: str):
    """``re.compile(pattern)``, with a leading ``R{m,n}`` (R one character) compiled as ``R{m}``.

    For a search that only answers "is there a match" the two are equivalent
    (a match that starts with k > m repetitions contains one that starts
    k - m characters later with m of them), and the shorter form avoids the
    quadratic retry of a greedy run at every start position (``.*x$``,
    ``\\w+\\s``).
    """
    try:
        parsed = _parser.parse(pattern, 0)
        first = parsed[0] if len(parsed) else None
        if first is not None and first[0] in _REPEATS:
            lo, hi, body = first[1]
            if lo != hi and len(body) == 1 and body[0][0] in _SINGLE:
                parsed[0] = (C.MAX_REPEAT, (lo, lo, body))
                return _compiler.compile(parsed, parsed.state.flags)
    except Exception:  # internal API changed: the plain pattern is equivalent
        pass
    return re.compile(pattern)


_compiled: dict = {}  # pattern -> (test, search)


def compile_search(pattern: str):
    """``test(text) -> bool`` for an accepted pattern; raises ValueError for a refused one.

    Texts longer than :data:`MAX_SUBJECT_LENGTH` never match. Tests are shared between
    the conditions that use the same pattern (they hold no state).
    """
    return _get(pattern)[0]


def raw_search(pattern: str):
    """The compiled ``search`` of an accepted pattern (raises ValueError for a refused one),
    for callers that inline the length cap: ``len(v) <= MAX_SUBJECT_LENGTH and search(v)``."""
    return _get(pattern)[1]


def _get(pattern: str):
    entry = _compiled.get(pattern)
    if entry is None:
        error = pattern_error(pattern)
        if error is not None:
            raise ValueError(error)
        search = _compile(pattern).search
        limit = MAX_SUBJECT_LENGTH

        def test(text: str) -> bool:
            return len(text) <= limit and search(text) is not None

        entry = (test, search)
        if len(_compiled) >= 4096:
            _compiled.clear()
        _compiled[pattern] = entry
    return entry
