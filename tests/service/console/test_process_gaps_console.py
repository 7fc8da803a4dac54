"""The console in a protected environment on the paths that open change requests since the
process gaps were closed: flags as code (the requests listed with links), an experiment's
lifecycle buttons, a rollback from the history page, and a review naming its revision.
Over Flask's test client with the session cookie and each form's CSRF token; each write is
checked in the database (requests, their proposals, nothing live changed)."""

import re

import pytest
import sqlalchemy as sa

from service.domain import experiments as experiment_domain
from service.domain import flags as flag_domain
from service.extensions import db
from service.models import AuditEntry, ChangeRequest

from .helpers import Console
from .process_support import boolean_flag, protect


def requests() -> list[ChangeRequest]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ChangeRequest).order_by(ChangeRequest.id)))


def live(env: str = "production") -> dict:
    db.session.expire_all()
    return flag_domain.get_targeting("checkout", env)[1]


def buttons(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", b).strip() for b in re.findall(r"<button[^>]*>(.*?)</button>", page, re.S)]


def approve_and_apply(request_id: int, author: Console, *reviewers: Console) -> None:
    page = f"/change-requests/{request_id}"
    for reviewer in reviewers:
        reviewer.get(page)
        revision = re.search(r'name="revision" value="(\d+)"', reviewer.page).group(1)
        assert reviewer.post(f"{page}/reviews", {"decision": "approve", "revision": revision}).status_code == 303
    author.get(page)
    response = author.post(f"{page}/apply", {"mode": "now", "version": Console.version(author.page)})
    assert response.status_code == 303, author.page[-2000:]


# ---------------------------------------------------------------- flags as code

def test_import_into_a_protected_environment_lists_the_requests_it_opens(erin, rita, ravi, admin):
    boolean_flag(admin)
    protect(admin, "production", 2)
    document = erin.get("/export-import/production/export.yaml").get_data(as_text=True)
    changed = re.sub(r"(fallthrough:\s*\{?\s*variation:\s*)'off'", r"\1'on'", document)
    assert changed != document, document
    changed = changed.replace("metrics: []", "metrics:\n- key: orders\n  event: order\n  type: count")
    erin.get("/export-import/production")
    assert "production requires 2 approvals: applying writes segments, metrics and flag settings directly" \
        in erin.page
    response = erin.post("/export-import/production", {"document": changed, "action": "dry_run"})
    assert response.status_code == 200 and "<code>checkout</code>:\n      would open a change request" in erin.page
    assert "Apply and open change requests" in buttons(erin.page) and requests() == []
    previewed = re.search(r'name="previewed" value="([0-9a-f]{64})"', erin.page).group(1)
    response = erin.post("/export-import/production", {"document": changed, "previewed": previewed,
                                                       "action": "apply", "comment": "from the repo"})
    assert response.status_code == 200 and "Applied in one transaction." in erin.page
    [request] = requests()
    assert f'opened <a href="/change-requests/{request.id}">change request #{request.id}</a>' in erin.page
    assert (request.author, request.comment, request.state) == ("erin", "from the repo", "open")
    assert request.targeting["fallthrough"] == {"variation": "on"} and live()["fallthrough"] == {"variation": "off"}
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.resource_type == "metric")) == 1  # the metric was written directly
    # The same document again: the request is reported, not opened twice.
    erin.post("/export-import/production", {"document": changed, "action": "dry_run"})
    previewed = re.search(r'name="previewed" value="([0-9a-f]{64})"', erin.page).group(1)
    erin.post("/export-import/production", {"document": changed, "previewed": previewed, "action": "apply"})
    assert f"already proposed in your <a href=\"/change-requests/{request.id}\">" in erin.page
    assert len(requests()) == 1
    # Reviewed and applied on its page, the targeting changes.
    approve_and_apply(request.id, erin, rita, ravi)
    assert live()["fallthrough"] == {"variation": "on"}


# ---------------------------------------------------------------- experiments

@pytest.fixture
def experiment(admin):
    boolean_flag(admin)
    assert admin.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"}).status_code == 201
    assert admin.post("/api/v1/experiments", json={"key": "exp", "flag": "checkout", "environment": "production",
                                                   "primary_metric": "buys"}).status_code == 201
    protect(admin, "production", 2)
    return "/experiments/exp"


def status() -> str:
    db.session.expire_all()
    return experiment_domain.get("exp").status


def test_lifecycle_buttons_in_a_protected_environment_open_change_requests(erin, rita, ravi, experiment):
    erin.get(experiment)
    assert "production requires 2 approvals: starting, stopping and concluding open a change request" in erin.page
    assert "Propose starting" in buttons(erin.page) and "Start experiment" not in buttons(erin.page)
    version = Console.version(erin.page)
    # A page of an older version is a conflict, not a request.
    response = erin.post(f"{experiment}/start", {"version": str(int(version) - 1)})
    assert response.status_code == 409 and requests() == []
    response = erin.post(f"{experiment}/start", {"version": version, "comment": "Ready"})
    assert response.status_code == 303, erin.page[-2000:]
    [request] = requests()
    assert response.headers["Location"] == f"/change-requests/{request.id}"
    assert request.experiment == {"key": "exp", "action": "start"} and request.comment == "Ready"
    assert status() == "draft"
    erin.get(f"/change-requests/{request.id}")
    assert "Opened change request" in erin.page and "start experiment <code>exp</code>" in erin.page
    assert "experiment.status" in erin.page and "Edit the proposal" not in erin.page
    assert erin.get(f"/change-requests/{request.id}/edit").status_code == 303  # not edited: cancel instead
    erin.get(experiment)
    assert f'href="/change-requests/{request.id}">#{request.id}</a> start experiment' in erin.page
    approve_and_apply(request.id, erin, rita, ravi)
    assert status() == "running"

    # Conclude from the page's form: the decision is checked when the request is opened.
    erin.get(experiment)
    assert "Propose stopping" in buttons(erin.page) and "Propose concluding" in buttons(erin.page)
    version = Console.version(erin.page)
    response = erin.post(f"{experiment}/conclude", {"version": version, "outcome": "ship", "summary": "",
                                                    "decision_variation": "", "released_variation": ""})
    assert response.status_code == 400 and "names the variation shipped" in erin.page and len(requests()) == 1
    response = erin.post(f"{experiment}/conclude", {"version": version, "outcome": "ship", "summary": "Won",
                                                    "decision_variation": "on", "released_variation": "on",
                                                    "comment": "Ship it"})
    assert response.status_code == 303
    request = requests()[-1]
    assert request.experiment == {"key": "exp", "action": "conclude", "released_variation": "on",
                                  "decision": {"outcome": "ship", "variation": "on", "summary": "Won"}}
    approve_and_apply(request.id, erin, rita, ravi)
    db.session.expire_all()
    concluded = experiment_domain.get("exp")
    assert (concluded.status, concluded.released_variation) == ("concluded", "on")


def test_unprotected_lifecycle_buttons_act_at_once_and_posts_need_csrf(erin, admin, experiment):
    assert erin.post(f"{experiment}/start", {"version": "1"}, csrf=False).status_code == 400
    assert requests() == []
    protect(admin, "production", 0)
    erin.get(experiment)
    assert "Start experiment" in buttons(erin.page) and "Propose starting" not in buttons(erin.page)
    assert erin.post(f"{experiment}/start", {"version": Console.version(erin.page)}).status_code == 303
    assert status() == "running" and requests() == []


# ---------------------------------------------------------------- rollback

def test_a_rollback_from_the_history_page_proposes_the_protected_targeting(erin, rita, ravi, admin):
    boolean_flag(admin)  # v1 created, v2 production on
    assert admin.patch("/api/v1/flags/checkout/environments/production",
                       json={"fallthrough": {"variation": "on"}}).status_code == 200  # v3
    assert admin.patch("/api/v1/flags/checkout", json={"name": "Checkout v2"}).status_code == 200  # v4
    protect(admin, "production", 2)
    erin.get("/flags/checkout/history")
    assert "Propose rollback to version 2" in buttons(erin.page)
    assert "Roll back to version 3" in buttons(erin.page)  # same production targeting as now: direct
    assert "production (2 approvals required): rolling back opens a change request" in erin.page
    version = Console.version(erin.page)
    response = erin.post("/flags/checkout/rollback", {"target": "2", "version": version})
    assert response.status_code == 303, erin.page[-2000:]
    [request] = requests()
    assert response.headers["Location"] == f"/change-requests/{request.id}"
    assert request.rollback_version == 2 and request.targeting["fallthrough"] == {"variation": "off"}
    erin.get(f"/change-requests/{request.id}")
    assert "Not part of it: field name" in erin.page and "roll back to version 2 again" in erin.page
    assert "A <strong>rollback</strong>: the proposal is the targeting production had at" in erin.page
    db.session.expire_all()
    assert flag_domain.get("checkout").version == 4 and live()["fallthrough"] == {"variation": "on"}
    # A stale history page is a conflict.
    assert erin.post("/flags/checkout/rollback", {"target": "2", "version": "3"}).status_code == 409
    assert len(requests()) == 1
    approve_and_apply(request.id, erin, rita, ravi)
    assert live()["fallthrough"] == {"variation": "off"}
    # Production now matches version 2: the rest of it is a plain rollback.
    erin.get("/flags/checkout/history")
    assert "Roll back to version 2" in buttons(erin.page)
    assert erin.post("/flags/checkout/rollback", {"target": "2", "version": Console.version(erin.page)}
                     ).status_code == 303
    db.session.expire_all()
    assert flag_domain.get("checkout").name == "checkout"


# ---------------------------------------------------------------- reviews name their revision

def test_a_review_form_without_its_revision_is_refused(erin, rita, admin):
    boolean_flag(admin)
    protect(admin, "production", 1)
    erin.get("/flags/checkout")
    erin.post("/flags/checkout/environments/production/toggle",
              {"enabled": "false", "version": Console.version(erin.page)})
    [request] = requests()
    rita.get(f"/change-requests/{request.id}")
    response = rita.post(f"/change-requests/{request.id}/reviews", {"decision": "approve"})
    assert response.status_code == 400 and "which revision you reviewed" in rita.page
    assert requests()[0].reviews == []
