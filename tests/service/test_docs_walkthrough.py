"""docs/api.md's walkthrough, executed as written against a real gunicorn server.

The test reads the "## Walkthrough" section of docs/api.md; it does not
repeat its commands. Every ```sh block there is a step. The steps run in
order in one bash process (``set -euo pipefail``), with ``BASE`` and
``TOKEN`` pointing at the live server, so variables set by one step
(``$SDK_KEY``, ``$NOW``) reach the next ones.

What a step must produce comes from the prose after its block:

* a line starting with ``Expect`` lists the HTTP statuses, in backticks
  (`` `201 Created` ``). One status applies to every request of the step;
  several are matched in order. A step without such a line must make no
  request;
* the first ```json or ```text block after the step (before the next step)
  is its exact standard output: JSON is compared as parsed values (a
  sequence of JSON documents), text line by line.

Statuses are recorded by a ``curl`` shell function that adds
``--write-out '%{stderr}…'`` to each call (keeping a step's own
``--write-out`` output on standard output), so the doc's commands run
unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .support import ROOT, make_token

DOC = ROOT / "docs" / "api.md"
SECTION = "## Walkthrough"

PRELUDE = r"""set -euo pipefail
curl() {
  local args=() next=0 seen=0 a
  for a in "$@"; do
    if [ "$next" = 1 ]; then
      args+=("%{stderr}@@status %{http_code}\n%{stdout}$a"); next=0; seen=1; continue
    fi
    case "$a" in -w|--write-out) next=1 ;; esac
    args+=("$a")
  done
  if [ "$seen" = 0 ]; then args=(-w '%{stderr}@@status %{http_code}\n' "${args[@]}"); fi
  command curl "${args[@]}"
}
"""


@dataclass
class Step:
    line: int  # line of the ```sh fence in docs/api.md
    script: str
    statuses: list[int] = field(default_factory=list)
    output_kind: str | None = None  # "json" | "text" | None (output not checked)
    output: str = ""

    @property
    def title(self) -> str:
        return f"docs/api.md:{self.line}"


def walkthrough_lines() -> list[tuple[int, str]]:
    """(line number, text) of the walkthrough section."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, text in enumerate(lines) if text.strip() == SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [(i + 1, lines[i]) for i in range(start + 1, end)]


def parse_steps(numbered: list[tuple[int, str]]) -> list[Step]:
    """Steps with their expected statuses and outputs (see the module docstring)."""
    items: list[tuple] = []  # ("prose", line, text) | ("block", line, lang, body)
    i = 0
    while i < len(numbered):
        number, text = numbered[i]
        fence = re.match(r"^```(\w*)\s*$", text)
        if fence is None:
            items.append(("prose", number, text))
            i += 1
            continue
        body = []
        i += 1
        while i < len(numbered) and numbered[i][1].rstrip() != "```":
            body.append(numbered[i][1])
            i += 1
        if i == len(numbered):
            raise AssertionError(f"docs/api.md:{number}: unclosed code block")
        items.append(("block", number, fence.group(1), "\n".join(body)))
        i += 1

    steps: list[Step] = []
    for item in items:
        if item[0] == "block" and item[2] == "sh":
            steps.append(Step(item[1], item[3]))
            continue
        if not steps:
            if item[0] == "block":
                raise AssertionError(f"docs/api.md:{item[1]}: a code block before the first step")
            continue
        step = steps[-1]
        if item[0] == "prose" and item[2].startswith("Expect"):
            if step.statuses:
                raise AssertionError(f"docs/api.md:{item[1]}: a second Expect line for {step.title}")
            step.statuses = [int(code) for code in re.findall(r"`(\d{3})\b[^`]*`", item[2])]
            if not step.statuses:
                raise AssertionError(f"docs/api.md:{item[1]}: an Expect line without a `status`")
        elif item[0] == "block":
            if item[2] not in ("json", "text"):
                raise AssertionError(f"docs/api.md:{item[1]}: walkthrough blocks are sh, json or text")
            if step.output_kind is not None:
                raise AssertionError(f"docs/api.md:{item[1]}: a second output block for {step.title}")
            step.output_kind, step.output = item[2], item[3]
    return steps


def json_values(text: str) -> list:
    """Every JSON document in ``text`` (jq prints one per line or pretty-printed)."""
    decoder = json.JSONDecoder()
    values, pos, text = [], 0, text.strip()
    while pos < len(text):
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


def text_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def split_by_step(text: str) -> dict[int, str]:
    parts = re.split(r"\n?@@step (\d+)\n", text)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


STEPS = parse_steps(walkthrough_lines())


def test_walkthrough_covers_the_guide_and_declares_every_outcome():
    commands = "\n".join(step.script for step in STEPS)
    for needed in ('-X POST "$BASE/api/v1/flags"', '-X PUT "$BASE/api/v1/flags/', '{"enabled": true}',
                   "/sdk-keys", '"$BASE/sdk/v1/config"', "If-None-Match", '"$BASE/api/v1/metrics"',
                   '"$BASE/api/v1/experiments"', "/start", '"$BASE/sdk/v1/events"', '"type": "exposure"',
                   '"type": "track"', "/results", "format=csv", "/exposures"):
        assert needed in commands, f"the walkthrough no longer shows {needed}"
    for step in STEPS:
        if "curl" in step.script:
            assert step.statuses, f"{step.title}: a step with requests needs an 'Expect `NNN ...`' line"
        urls = re.findall(r"""["'](https?://[^"']*)""", step.script)
        assert not urls, f"{step.title}: address the service through $BASE, not {urls}"
    assert STEPS[0].script.startswith("BASE=${BASE:-http://127.0.0.1:8000}\n")


@pytest.fixture
def tools():
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the walkthrough needs {', '.join(missing)}")


def test_walkthrough_runs_as_written(tools, live_server, tmp_path: Path):
    token = make_token("admin", "walkthrough")
    script = [PRELUDE]
    for index, step in enumerate(STEPS):
        script.append(f"printf '\\n@@step {index}\\n'; printf '\\n@@step {index}\\n' >&2\n")
        script.append(step.script + "\n")
    script.append(f"printf '\\n@@step {len(STEPS)}\\n'; printf '\\n@@step {len(STEPS)}\\n' >&2\n")
    (tmp_path / "walkthrough.sh").write_text("".join(script), encoding="utf-8")

    env = {name: value for name, value in os.environ.items()
           if not name.lower().endswith("_proxy") and name not in ("SDK_KEY", "ETAG", "NOW")}
    # No user configuration (~/.curlrc, ~/.jq) and no proxy between curl and the live server.
    env.update(BASE=live_server.url, TOKEN=token, HOME=str(tmp_path), CURL_HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path), NO_PROXY="127.0.0.1,localhost", LC_ALL="C.UTF-8")
    run = subprocess.run(["bash", "walkthrough.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)  # a failing step is reported below
    stdout, stderr = split_by_step(run.stdout), split_by_step(run.stderr)
    finished = len(STEPS) if run.returncode == 0 else max(stdout, default=0)
    # Steps that ran to completion first: the earliest wrong outcome is the most useful report.
    for index, step in enumerate(STEPS[:finished]):
        out = stdout[index]
        statuses = [int(code) for code in re.findall(r"^@@status (\d{3})$", stderr[index], re.M)]
        context = f"{step.title}\n--- stdout:\n{out}\n--- stderr:\n{stderr[index]}"
        if len(step.statuses) == 1:
            assert statuses and set(statuses) == set(step.statuses), context
        else:
            assert statuses == step.statuses, context
        if step.output_kind == "json":
            assert json_values(out) == json_values(step.output), context
        elif step.output_kind == "text":
            assert text_lines(out) == text_lines(step.output), context
    if run.returncode != 0:
        where = STEPS[finished].title if finished < len(STEPS) else "the walkthrough"
        pytest.fail(f"{where} exited with {run.returncode}\nstdout:\n{run.stdout[-3000:]}\n"
                    f"stderr:\n{run.stderr[-3000:]}")
    assert len(stdout) == len(STEPS) + 1, run.stdout
