"""Regular-expression safety of ``matches`` (docs/regex.md): catastrophic patterns are
refused by validation, and a ruleset carrying one (as a service that did not check would
send it) never freezes the SDK: the flag evaluates to the default with reason ERROR.
Accepted patterns keep ``re.search`` semantics (checked against ``re`` itself), values
longer than the cap do not match, and adversarial texts stay fast (bounds prove
"not frozen"; the timing figures are in benchmarks/bench_engine.py)."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitcrew import Client
from pitcrew.evaluation import Reason, compile_ruleset, evaluate, validate_targeting
from pitcrew.evaluation.regex import MAX_SUBJECT_LENGTH, compile_search, pattern_error
from tests.sdk.support import bool_flag, ruleset

CATASTROPHIC = [
    r"^(a+)+$", r"(a|aa)+$", r"(a|a?)+$", r"(.*a){20}", r"(\w+\s?)*$", r"^(\w+\s?)*$",
    r"(a*)*b", r"(a?){30}a{30}", r"(x+x+)+y", r"(a|b|ab)*c", r"(\d|\d\d)+$",
    r"^(([a-z])+.)+[A-Z]([a-z])+$", r"\d+\d+x", r".*a.*b", r"\S+@\S+\.\S+$",
    r"a?a?a?a?a?a?a?a?a?a?a?a?aaaaaaaaaaaa", r"(?:a{1,5}){10}", r"[\s\S]+x[\s\S]+y",
]
NOT_PORTABLE = [r"(a)\1", r"(?=a)b", r"(?<!a)b", r"a\Z", r"(?x) a", r"(?>a+)b", r"a++b",
                r"(?(1)a|b)", r"(?a)\w"]
ACCEPTED = [
    r"@pitcrew\.dev$", r"^[a-z]+@[a-z]+\.com$", r"^(\d{1,3}\.){3}\d{1,3}$", r"Chrome/(\d+)",
    r"(?i)^beta", r"^v?\d+\.\d+", r"(ab)+$", r"(foo|bar)+!", r"[^@\s]+@[^@\s]+\.[a-z]+$",
    r"^https?://", r"\bcafe\b", r"^\d+(\.\d*)?$", r"user-[0-9]+", r"^[A-Z]{2}$", r".*",
    r"\w+\s\w+", r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$", r"Mobile|Android|iPhone",
]
EVIL_TEXTS = ["a" * 30 + "b", "a" * 500 + "!", "aaa" + "a" * 200 + "\n!", ("ab" * 300)[:511] + "!",
              "x" * 30, "1" * 500 + "x", "word " * 100 + "!", "a@" * 250 + "!", " " * 500 + "!"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_are_refused_with_a_reason(pattern):
    error = pattern_error(pattern)
    assert error is not None and error.startswith("unsafe pattern:")
    cond = {"attribute": "email", "op": "matches", "values": ["ok", pattern]}
    targeting = {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"},
                 "rules": [{"id": "r", "conditions": [cond], "serve": {"variation": "on"}}]}
    errors = validate_targeting(targeting, variations={"on", "off"})
    assert [p for p, _ in errors] == ["rules.0.conditions.0.values.1"]


@pytest.mark.parametrize("pattern", NOT_PORTABLE)
def test_non_portable_syntax_is_refused(pattern):
    assert pattern_error(pattern) is not None


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_everyday_patterns_are_accepted(pattern):
    assert pattern_error(pattern) is None


def test_invalid_and_overlong_patterns_are_refused():
    assert pattern_error("[").startswith("invalid pattern")
    assert "1000" in pattern_error("a" * 1001)
    assert pattern_error("a" * 1000) is None


def _flag_with(pattern, negate=False, in_segment=False):
    cond = {"attribute": "a", "op": "matches", "values": [pattern], "negate": negate}
    if in_segment:
        segments = {"seg": {"key": "seg", "rules": [[cond]]}}
        cond = {"op": "in_segment", "values": ["seg"]}
    else:
        segments = {}
    flag = bool_flag("f", {"variation": "off"},
                     rules=[{"id": "r", "conditions": [cond], "serve": {"variation": "on"}}])
    return ruleset([flag, bool_flag("other")], segments=segments)


@pytest.mark.parametrize("in_segment", [False, True])
@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_sdk_never_freezes_on_a_refused_pattern_from_the_service(pattern, in_segment):
    start = time.monotonic()
    compiled = compile_ruleset(_flag_with(pattern, in_segment=in_segment))
    for text in EVIL_TEXTS:
        r = evaluate(compiled, "f", {"id": "u", "a": text}, "default")
        assert (r.value, r.reason) == ("default", Reason.ERROR)
    assert evaluate(compiled, "other", {"id": "u", "a": "a" * 30 + "b"}, None).value is True
    assert time.monotonic() - start < 2.0  # generous: a backtracking run would take minutes


def test_client_with_a_catastrophic_pattern_answers_the_default_quickly():
    client = Client("http://127.0.0.1:9", "k", bootstrap=_flag_with(r"^(a+)+$"), events=False,
                    poll_interval=3600)
    try:
        start = time.monotonic()
        assert client.variation("f", {"id": "u", "a": "a" * 30 + "b"}, "dflt") == "dflt"
        assert client.variation_detail("f", {"id": "u", "a": "a" * 30}, None).reason == Reason.ERROR
        assert time.monotonic() - start < 1.0
    finally:
        client.close(0.1)


def test_values_longer_than_the_cap_do_not_match_and_negate_inverts():
    on = compile_ruleset(_flag_with("x"))
    neg = compile_ruleset(_flag_with("x", negate=True))
    at_cap = "x" * MAX_SUBJECT_LENGTH
    over = "x" * (MAX_SUBJECT_LENGTH + 1)
    assert evaluate(on, "f", {"a": at_cap}, None).value is True
    assert evaluate(on, "f", {"a": over}, None).value is False
    assert evaluate(neg, "f", {"a": over}, None).value is True
    assert evaluate(on, "f", {"a": ["y", at_cap]}, None).value is True  # list: any element


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_accepted_patterns_stay_fast_on_adversarial_texts(pattern):
    test = compile_search(pattern)
    texts = EVIL_TEXTS + [(c * MAX_SUBJECT_LENGTH)[:-1] + "!" for c in set(pattern) if c.isprintable()]
    for text in texts:
        start = time.perf_counter()
        test(text)
        assert time.perf_counter() - start < 0.05  # ~1 ms measured; generous for loaded CI


# A small grammar of patterns (literals, classes, groups, alternations, quantifiers).
_ATOMS = st.sampled_from(["a", "b", ".", r"\d", r"\w", r"\s", r"\S", "[ab]", "[^a]", "ab", "@",
                          r"\.", "[a-z]", "x", "é"])
_QUANT = st.sampled_from(["", "", "+", "*", "?", "{1,3}", "{2}", "{2,}", "*?"])


@st.composite
def patterns(draw, depth=0):
    out = ""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 3)) if depth < 2 else 0
        if kind <= 1:
            atom = draw(_ATOMS)
        elif kind == 2:
            atom = "(" + draw(patterns(depth + 1)) + ")"
        else:
            atom = "(" + draw(patterns(depth + 1)) + "|" + draw(patterns(depth + 1)) + ")"
        out += atom + draw(_QUANT)
    return ("^" if draw(st.booleans()) else "") + out + ("$" if draw(st.booleans()) else "")


_TEXTS = st.text(alphabet="ab@. x1é\n", max_size=40)


@settings(max_examples=400, deadline=None)
@given(patterns(), st.lists(_TEXTS, min_size=1, max_size=5))
def test_accepted_patterns_answer_exactly_like_re_search(pattern, texts):
    if pattern_error(pattern) is not None:
        return
    test = compile_search(pattern)
    for text in texts:
        assert test(text) == (re.search(pattern, text) is not None), (pattern, text)


@settings(max_examples=150, deadline=None)
@given(patterns(), st.sampled_from("ab@. x1"), st.sampled_from(["", "!", "\n!", "b"]))
def test_accepted_generated_patterns_are_not_catastrophic(pattern, char, tail):
    if pattern_error(pattern) is not None:
        return
    test = compile_search(pattern)
    text = (char * MAX_SUBJECT_LENGTH)[: MAX_SUBJECT_LENGTH - len(tail)] + tail
    start = time.perf_counter()
    test(text)
    assert time.perf_counter() - start < 0.1, pattern  # quadratic at worst: ~1 ms measured
