"""List endpoints cost a fixed number of queries, however many items a page holds.

Each case fills a list with a few items, counts the SQL statements one
``GET`` of the list runs (SQLAlchemy's ``before_cursor_execute`` event on
the real engine), adds more items and counts again: the two counts must be
equal. A query per item (an N+1) makes the second count larger.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.extensions import db

from .console.helpers import Console
from .console.helpers import token as console_token

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


@contextmanager
def counting() -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def targeting(**fields) -> dict:
    return {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}, **fields}


class Filler:
    """Creates the items of one list, through the API (the way they exist in production)."""

    def __init__(self, client):
        self.client = client
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    def post(self, path: str, body: dict, status: int = 201) -> dict:
        response = self.client.post(path, json=body)
        assert response.status_code == status, (path, response.json)
        return response.json

    def put(self, path: str, body: dict) -> dict:
        response = self.client.put(path, json=body)
        assert response.status_code == 200, (path, response.json)
        return response.json

    def flag(self, key: str | None = None) -> str:
        key = key or f"flag-{self.next()}"
        self.post("/api/v1/flags", {"key": key, "kind": "boolean", "variations": BOOL,
                                    "tags": ["t"]})
        rule = {"id": "de", "conditions": [{"attribute": "country", "op": "in", "values": ["DE"]}],
                "serve": {"variation": "on"}}
        for env in ("staging", "production"):
            self.put(f"/api/v1/flags/{key}/environments/{env}", targeting(rules=[rule]))
        return key


def fill_environments(f: Filler):
    key = f"env-{f.next()}"
    f.post("/api/v1/environments", {"key": key})
    f.post(f"/api/v1/environments/{key}/sdk-keys", {"name": "web"})


def fill_tokens(f: Filler):
    f.post("/api/v1/tokens", {"name": f"ci-{f.next()}", "role": "viewer"})


def fill_flags(f: Filler):
    f.flag()


def fill_history(f: Filler):
    if not f.n:
        f.flag("history")
        f.n = 1
    f.client.patch("/api/v1/flags/history", json={"description": f"v{f.next()}"})


def fill_segments(f: Filler):
    f.post("/api/v1/segments", {"key": f"seg-{f.next()}", "included": ["u1"]})


def fill_metrics(f: Filler):
    f.post("/api/v1/metrics", {"key": f"m-{f.next()}", "event": "buy", "type": "conversion"})


def fill_experiments(f: Filler):
    flag = f.flag()
    f.post("/api/v1/experiments", {"key": f"exp-{f.n}", "flag": flag, "environment": "production"})


def fill_audit(f: Filler):
    fill_segments(f)


def fill_change_requests(f: Filler):
    if not f.n:
        response = f.client.patch("/api/v1/environments/staging", json={"approvals_required": 1})
        assert response.status_code == 200, response.json
    flag = f"cr-{f.next()}"
    f.post("/api/v1/flags", {"key": flag, "kind": "boolean", "variations": BOOL})
    f.post("/api/v1/change-requests", {"flag": flag, "environment": "staging",
                                       "targeting": targeting(), "comment": "please"})


def fill_schedules(f: Filler):
    if not f.n:
        f.flag("scheduled")
    at = (datetime.now(UTC) + timedelta(days=1, minutes=f.next())).isoformat()
    f.post("/api/v1/flags/scheduled/environments/staging/schedules",
           {"at": at, "patch": {"enabled": False}, "comment": "later"})


def fill_rollouts(f: Filler):
    if not f.n:
        f.flag("rolled")
        f.put("/api/v1/flags/rolled/environments/production",
              targeting(fallthrough={"variation": "off"}))
        f.post("/api/v1/metrics", {"key": "purchases", "event": "purchase", "type": "conversion"})
    f.next()
    rollout = f.post("/api/v1/flags/rolled/environments/production/rollouts", {
        "variation": "on", "from_variation": "off", "guardrails": ["purchases"],
        "steps": [{"percent": 10, "hold_hours": 1}, {"percent": 100, "hold_hours": 0}]})
    cancel = f"/api/v1/flags/rolled/environments/production/rollouts/{rollout['id']}/cancel"
    f.post(cancel, {}, status=200)


@dataclass
class Case:
    name: str
    path: str
    fill: Callable[[Filler], None]


CASES = [
    Case("environments", "/api/v1/environments", fill_environments),
    Case("tokens", "/api/v1/tokens", fill_tokens),
    Case("flags", "/api/v1/flags", fill_flags),
    Case("flags by tag", "/api/v1/flags?tag=t", fill_flags),
    Case("flag history", "/api/v1/flags/history/history", fill_history),
    Case("segments", "/api/v1/segments", fill_segments),
    Case("metrics", "/api/v1/metrics", fill_metrics),
    Case("experiments", "/api/v1/experiments", fill_experiments),
    Case("audit", "/api/v1/audit", fill_audit),
    Case("change requests", "/api/v1/change-requests", fill_change_requests),
    Case("schedules of a flag", "/api/v1/flags/scheduled/schedules", fill_schedules),
    Case("schedules in an environment", "/api/v1/flags/scheduled/environments/staging/schedules",
         fill_schedules),
    Case("rollouts of a flag", "/api/v1/flags/rolled/rollouts", fill_rollouts),
    Case("console flags", "/flags", fill_flags),
    Case("console experiments", "/experiments", fill_experiments),
]


def statements_for(client, path: str) -> tuple[int, list[str]]:
    db.session.close()  # a request starts with an empty session: nothing is known yet
    with counting() as statements:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return len(response.json["items"]) if response.is_json else -1, statements


@pytest.fixture
def console(app):
    """A test client signed in to the console as an admin."""
    browser = Console(app.test_client())
    browser.login(console_token("admin"))
    return browser.client


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_list_costs_the_same_queries_for_any_number_of_items(case, admin, console):
    filler = Filler(admin)
    client = console if not case.path.startswith("/api/") else admin
    for _ in range(2):
        case.fill(filler)
    few, first = statements_for(client, case.path)
    for _ in range(4):
        case.fill(filler)
    many, second = statements_for(client, case.path)
    if few != -1:
        assert many > few, "the second page should list more items"
    assert len(second) == len(first), (
        f"{case.path}: {len(first)} statements for {few} items, {len(second)} for {many}:\n"
        + "\n".join(second))

