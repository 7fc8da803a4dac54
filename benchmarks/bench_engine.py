"""Benchmark of the flag evaluation engine (pitcrew.evaluation).

Run: .venv/bin/python benchmarks/bench_engine.py

Prints median ns per call (batches of calls timed with time.perf_counter_ns),
next to baselines measured in the same run with the same loop shape: a bare
``hashlib.sha256(b).digest()`` and a ``dict.get``. The ratio column is
ns/call divided by the sha256 baseline.
"""

from __future__ import annotations

import gc
import hashlib
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pitcrew.evaluation import compile_ruleset, evaluate  # noqa: E402

BATCH = 1000
REPEATS = 300
ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def timed(run_batch, items, repeats=REPEATS):
    """Median ns per item of ``run_batch(batch)`` over ``repeats`` batches of BATCH items."""
    n = len(items)
    batches = [(items * 2)[(i * BATCH) % n :][:BATCH] for i in range(repeats)]
    samples = []
    clock = time.perf_counter_ns
    run_batch(batches[0])  # warm caches
    gc.disable()
    try:
        for batch in batches:
            t0 = clock()
            run_batch(batch)
            samples.append((clock() - t0) / BATCH)
    finally:
        gc.enable()
    return statistics.median(samples)


def evaluate_batch(compiled, key):
    def run(batch, evaluate=evaluate):
        for ctx in batch:
            evaluate(compiled, key, ctx, False)

    return run


def three_rule_flag(key, version=1):
    """The benchmark flag of the issues: 3 rules, then a 50/50 rollout (shared with bench_sdk)."""
    return {
        "key": key, "kind": "boolean", "version": version, "variations": ONOFF,
        "targeting": {
            "enabled": True, "off_variation": "off", "prerequisites": [], "targets": [],
            "rules": [
                {"id": "r1", "conditions": [{"attribute": "country", "op": "in", "values": ["DE", "FR", "IT"]}], "serve": {"variation": "on"}},
                {"id": "r2", "conditions": [{"attribute": "app_version", "op": "semver_gte", "values": ["5.0.0"]}], "serve": {"variation": "on"}},
                {"id": "r3", "conditions": [{"attribute": "email", "op": "matches", "values": [r"@pitcrew\.dev$"]}], "serve": {"variation": "on"}},
            ],
            "fallthrough": {"rollout": {"weights": [["on", 5000], ["off", 5000]]}},
        },
    }  # fmt: skip


def ten_rule_flag(key):
    rules = [
        {"id": f"r{i}", "conditions": [{"attribute": f"attr{i}", "op": "in", "values": ["x", "y"]}], "serve": {"variation": "on"}}
        for i in range(9)
    ]  # fmt: skip
    rules.insert(5, {
        "id": "beta", "conditions": [{"op": "in_segment", "values": ["beta"]}],
        "serve": {"rollout": {"weights": [["on", 5000], ["off", 5000]]}},
    })  # fmt: skip
    return {
        "key": key, "kind": "boolean", "version": 1, "variations": ONOFF,
        "targeting": {"enabled": True, "off_variation": "off", "rules": rules,
                      "fallthrough": {"rollout": {"weights": [["on", 5000], ["off", 5000]]}}},
    }  # fmt: skip


EXPERIMENT = {
    "key": "checkout-exp", "flag": "exp", "status": "running",
    "variations": [{"variation": "off", "weight": 5000}, {"variation": "on", "weight": 5000}],
    "control": "off", "traffic": 8000, "unit": "id", "salt": "checkout-exp",
    "layer": {"key": "checkout", "range": [0, 8000]}, "released_variation": None, "dimensions": [],
}  # fmt: skip


def experiment_flag(key):
    return {
        "key": key, "kind": "boolean", "version": 1, "variations": ONOFF,
        "targeting": {"enabled": True, "off_variation": "off",
                      "fallthrough": {"experiment": "checkout-exp"}},
    }  # fmt: skip


def holdout_flag(key):
    """The 3-rule flag in a 5 % holdout (docs/holdouts.md): one more hash per evaluation."""
    flag = three_rule_flag(key)
    flag["targeting"]["holdout"] = "h5"
    return flag


HOLDOUTS = {"h5": {"key": "h5", "percent": 5, "unit": "id"}}

SEGMENTS = {
    "beta": {"key": "beta", "included": [f"user-{i}" for i in range(0, 10000, 7)], "excluded": [],
             "rules": [[{"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}]]},
}  # fmt: skip


def main():
    units = [f"user-{i}" for i in range(20000)]
    ruleset = {
        "version": 1,
        "flags": {
            "three": three_rule_flag("three"),
            "ten": ten_rule_flag("ten"),
            "exp": experiment_flag("exp"),
            "held": holdout_flag("held"),
        },
        "segments": SEGMENTS,
        "experiments": {"checkout-exp": EXPERIMENT},
        "holdouts": HOLDOUTS,
    }
    compiled = compile_ruleset(ruleset)
    fall = [
        {"id": u, "country": "US", "app_version": "4.2.1", "email": f"{u}@example.com"}
        for u in units
    ]
    rule1 = [{"id": u, "country": "DE"} for u in units]
    seg = [{"id": u, "plan": "pro" if i % 2 else "free"} for i, u in enumerate(units)]

    payloads = [f"three.{u}".encode() for u in units]

    def sha_batch(batch, sha=hashlib.sha256):
        for b in batch:
            sha(b).digest()

    index = {u: i for i, u in enumerate(units)}

    def get_batch(batch, get=index.get):
        for k in batch:
            get(k)

    rows = []
    base_sha = timed(sha_batch, payloads)
    base_get = timed(get_batch, units)
    rows.append(("baseline: hashlib.sha256(b).digest()", base_sha))
    rows.append(("baseline: dict.get(k)", base_get))

    r = evaluate(compiled, "three", fall[0], False)
    assert r.reason == "FALLTHROUGH" and r.variation in ("on", "off"), r
    rows.append(
        (
            "3-rule flag, no rule matches -> 50/50 rollout",
            timed(evaluate_batch(compiled, "three"), fall),
        )
    )
    assert evaluate(compiled, "three", rule1[0], False).rule_id == "r1"
    rows.append(
        ("3-rule flag, rule 1 (`in`) matches", timed(evaluate_batch(compiled, "three"), rule1))
    )
    assert {evaluate(compiled, "ten", c, False).rule_id for c in seg[:10]} == {"beta", None}
    rows.append(
        (
            "10-rule flag, in_segment rule (half) -> 50/50",
            timed(evaluate_batch(compiled, "ten"), seg),
        )
    )
    r = evaluate(compiled, "exp", fall[0], False)
    assert r.in_experiment, r
    rows.append(
        (
            "experiment admitted: layer+traffic+assign hashes",
            timed(
                evaluate_batch(compiled, "exp"),
                [c for c in fall if evaluate(compiled, "exp", c, False).in_experiment],
            ),
        )
    )
    outcome = {c["id"]: evaluate(compiled, "held", c, False) for c in fall}
    rows.append(
        (
            "3-rule flag + 5 % holdout, not held out -> 50/50",
            timed(evaluate_batch(compiled, "held"), [c for c in fall if outcome[c["id"]].reason == "FALLTHROUGH"]),
        )
    )
    rows.append(
        (
            "3-rule flag + 5 % holdout, unit held out",
            timed(evaluate_batch(compiled, "held"), [c for c in fall if outcome[c["id"]].reason == "HOLDOUT"]),
        )
    )
    rows.append(("unknown flag (FLAG_NOT_FOUND)", timed(evaluate_batch(compiled, "missing"), fall)))

    big = {
        "version": 1,
        "flags": {f"flag-{i}": three_rule_flag(f"flag-{i}") for i in range(10000)},
        "segments": SEGMENTS,
        "experiments": {},
    }
    compile_times = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        c = compile_ruleset(big)
        compile_times.append(time.perf_counter_ns() - t0)
    assert sum(c.flag(k).error is None for k in c.flag_keys) == 10000
    compile_ns = statistics.median(compile_times)

    print(f"Pitcrew engine benchmark  (Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; median of {REPEATS} batches of {BATCH} calls)")  # fmt: skip
    print()
    w = 50
    print(f"| {'case':<{w}} | {'median':>10} | {'x sha256':>8} | {'x dict.get':>10} |")
    print(f"|{'-' * (w + 2)}|{'-' * 12}|{'-' * 10}|{'-' * 12}|")
    for name, ns in rows:
        print(f"| {name:<{w}} | {ns:>7.0f} ns | {ns / base_sha:>8.2f} | {ns / base_get:>10.1f} |")
    name = "compile 10,000 three-rule flags (median of 5)"
    print(f"| {name:<{w}} | {compile_ns / 1e6:>7.0f} ms | {'':>8} | {'':>10} |")


if __name__ == "__main__":
    main()
