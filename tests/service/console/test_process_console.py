"""The console's process pages over Flask's test client: change requests (opened from
the targeting editor, the on/off switch and a copy in a protected environment;
reviews, edits, apply now / at a time / admin bypass, cancel), approvals on the
environments page, scheduled changes, guarded rollouts and flags as code. Each
write is checked for its role, its CSRF token, its conflicts, and that it went
through the domain (state, audit entries, flag versions)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml

from service.domain import flags as flag_domain
from service.extensions import db
from service.models import (
    AuditEntry,
    ChangeRequest,
    ChangeRequestReview,
    FlagVersion,
    Rollout,
    ScheduledChange,
)
from service.worker import Worker

from .helpers import Console, signed_in
from .process_support import boolean_flag, harmful_rollout, protect

PROD = "/flags/checkout/targeting/production"
BASE_FORM = {"enabled": "true", "off_variation": "off", "fallthrough.kind": "variation", "fallthrough.variation": "on"}


@pytest.fixture
def protected_flag(admin):
    boolean_flag(admin)
    protect(admin, "production", 2)


def audit_actions(resource_type: str) -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == resource_type)
                                   .order_by(AuditEntry.id)))


def live(env: str = "production") -> dict:
    db.session.expire_all()
    return flag_domain.get_targeting("checkout", env)[1]


def flag_version() -> int:
    db.session.expire_all()
    return flag_domain.get("checkout").version


def cr(request_id: int = 1) -> ChangeRequest:
    db.session.expire_all()
    return db.session.get(ChangeRequest, request_id)


def open_request(console: Console, fallthrough: str = "on", comment: str = "Launch") -> int:
    console.get(PROD)
    response = console.post(PROD, {**BASE_FORM, "fallthrough.variation": fallthrough,
                                   "version": Console.version(console.page), "comment": comment, "action": "save"})
    assert response.status_code == 303, console.page[-3000:]
    return int(response.headers["Location"].rsplit("/", 1)[1])


def forms(page: str) -> list[str]:
    return re.findall(r'<form[^>]*method="post"[^>]*action="([^"]*)"', page)


def buttons(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", b).strip() for b in re.findall(r"<button[^>]*>(.*?)</button>", page, re.S)]


# ---------------------------------------------------------------- opening a change request

def test_saving_targeting_in_a_protected_environment_opens_a_change_request(erin, protected_flag):
    erin.get(PROD)
    assert "This environment requires 2 approvals; saving opens a change request" in erin.page
    assert "Open change request" in buttons(erin.page) and "Save targeting" not in buttons(erin.page)
    before, version = live(), flag_version()
    stale = Console.version(erin.page)
    # A field error is shown at its field and nothing is stored.
    bad = erin.post(PROD, {**BASE_FORM, "fallthrough.variation": "maybe", "version": stale, "action": "save"})
    assert bad.status_code == 400 and re.search(r'id="f-fallthrough-variation"[^>]*aria-invalid="true"', erin.page)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequest)) == 0
    request_id = open_request(erin)
    erin.get(f"/change-requests/{request_id}")
    assert "Opened change request #1" in erin.page and "It needs 2 approval(s)" in erin.page
    request = cr(request_id)
    assert (request.state, request.author, request.comment, request.base_version) == ("open", "erin", "Launch",
                                                                                      version)
    assert request.targeting["fallthrough"] == {"variation": "on"}
    assert live() == before and flag_version() == version  # nothing live changed
    assert audit_actions("change_request") == ["create"]
    # The request's page shows the diff against the live targeting.
    assert "fallthrough.variation" in erin.page and "Live now" in erin.page and "Proposed" in erin.page
    assert re.search(r"<del>\"off\"</del>.*?<ins>\"on\"</ins>", erin.page, re.S)


def test_a_stale_editor_page_is_a_conflict_not_a_request(erin, admin, protected_flag):
    erin.get(PROD)
    stale = Console.version(erin.page)
    protect(admin, "production", 0)
    assert admin.patch("/api/v1/flags/checkout/environments/production", json={"off_variation": "on"}).status_code == 200
    protect(admin, "production", 2)
    response = erin.post(PROD, {**BASE_FORM, "version": stale, "action": "save"})
    assert response.status_code == 409 and "Conflict: this changed since you opened it" in erin.page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequest)) == 0


def test_the_switch_and_a_copy_into_a_protected_environment_open_change_requests(erin, admin, protected_flag):
    erin.get("/flags/checkout")
    assert "Propose turning off" in erin.page and "2 approvals required" in erin.page
    version = Console.version(erin.page)
    response = erin.post("/flags/checkout/environments/production/toggle", {"enabled": "false", "version": version})
    assert response.status_code == 303 and response.headers["Location"] == "/change-requests/1"
    assert cr(1).patch == {"enabled": False} and live()["enabled"] is True
    assert erin.post("/flags/checkout/environments/production/toggle",
                     {"enabled": "false", "version": str(int(version) - 1)}).status_code == 409
    response = erin.post("/flags/checkout/copy", {"source": "staging", "target": "production", "version": version})
    assert response.status_code == 303 and response.headers["Location"] == "/change-requests/2"
    assert cr(2).targeting["enabled"] is False and live()["enabled"] is True
    # Unprotected environments still change at once.
    assert erin.post("/flags/checkout/environments/staging/toggle",
                     {"enabled": "true", "version": version}).status_code == 303
    assert live("staging")["enabled"] is True
    erin.get("/flags/checkout")
    assert "Pending change requests" in erin.page and "/change-requests/2" in erin.page


# ---------------------------------------------------------------- reviews and apply

def test_review_approve_and_apply(erin, rita, ravi, protected_flag, sdk):
    request_id = open_request(erin)
    page = f"/change-requests/{request_id}"
    erin.get(page)
    assert "Approve" not in buttons(erin.page) and "You wrote this request" in erin.page
    # The author is refused by the server anyway.
    response = erin.post(f"{page}/reviews", {"decision": "approve", "revision": "1"})
    assert response.status_code == 403 and "cannot review" in erin.page
    rita.get(page)
    assert "Approve" in buttons(rita.page) and "Reject" in buttons(rita.page)
    assert "Needs 2 more approvals" in rita.page and "Apply now" not in buttons(rita.page)
    assert rita.post(f"{page}/reviews", {"decision": "approve", "revision": "1", "comment": "ok"}).status_code == 303
    rita.get(page)
    assert "You approved revision 1" in rita.page and "Approve" not in buttons(rita.page)
    # A second approval by the same reviewer does not count.
    response = rita.post(f"{page}/reviews", {"decision": "approve", "revision": "1"})
    assert response.status_code == 409 and "counts once" in rita.page
    assert len(cr().reviews) == 1
    # Not approved yet: apply is refused.
    response = erin.post(f"{page}/apply", {"mode": "now", "version": str(cr().version)})
    assert response.status_code == 409 and "has 1 of the 2 approvals" in erin.page
    assert ravi.post(f"{page}/reviews", {"decision": "approve", "revision": "1"}).status_code == 303
    assert cr().state == "approved"
    erin.get(page)
    assert "Apply now" in buttons(erin.page) and "Bypass approvals and apply now" not in buttons(erin.page)
    config_before = sdk.get("/sdk/v1/config").json["version"]
    response = erin.post(f"{page}/apply", {"mode": "now", "version": Console.version(erin.page)})
    assert response.status_code == 303
    erin.get(page)
    assert "Applied change request #1" in erin.page
    assert cr().state == "applied" and live()["fallthrough"] == {"variation": "on"}
    assert sdk.get("/sdk/v1/config").json["version"] != config_before
    db.session.expire_all()
    last = db.session.scalars(sa.select(FlagVersion).order_by(FlagVersion.id.desc())).first()
    assert (last.action, last.actor) == ("apply_change_request", "erin")
    assert audit_actions("change_request") == ["create", "approve", "approve", "apply"]
    # Closed: no more review or apply controls.
    rita.get(page)
    assert not any(action.startswith(page) for action in forms(rita.page))


def test_a_review_of_a_revision_edited_meanwhile_is_refused(erin, rita, protected_flag):
    request_id = open_request(erin)
    rita.get(f"/change-requests/{request_id}")
    seen_revision = re.search(r'name="revision" value="(\d+)"', rita.page).group(1)
    erin.get(f"/change-requests/{request_id}")
    assert erin.post(f"/change-requests/{request_id}/comment", {"comment": "Launch, for real",
                                                                 "version": Console.version(erin.page)}).status_code == 303
    response = rita.post(f"/change-requests/{request_id}/reviews", {"decision": "approve", "revision": seen_revision})
    assert response.status_code == 409 and "was edited since you opened it" in rita.page
    assert cr().reviews == [] and cr().revision == 2


def test_an_edit_resets_the_approvals(erin, rita, protected_flag):
    request_id = open_request(erin)
    assert rita.post(f"/change-requests/{request_id}/reviews", {"decision": "approve", "revision": "1"}).status_code == 303
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChangeRequestReview)) == 1
    erin.get(f"/change-requests/{request_id}/edit")
    assert "Save the change request" in buttons(erin.page) and "no approvals" in erin.page
    version = Console.version(erin.page)
    # Someone else may not edit it.
    rita.get(f"/change-requests/{request_id}/edit")
    response = rita.post(f"/change-requests/{request_id}/edit", {**BASE_FORM, "version": version, "action": "save"})
    assert response.status_code == 403 and cr().revision == 1
    response = erin.post(f"/change-requests/{request_id}/edit", {
        **BASE_FORM, "enabled": "false", "version": version, "comment": "Off, then on", "action": "save"})
    assert response.status_code == 303, erin.page[-2000:]
    request = cr(request_id)
    assert (request.revision, request.state, request.comment) == (2, "open", "Off, then on")
    assert request.targeting["enabled"] is False
    erin.get(f"/change-requests/{request_id}")
    assert "<strong>0 of 2</strong>" in erin.page and "earlier: does not count" in erin.page
    # A stale edit (version of revision 1) is a conflict.
    response = erin.post(f"/change-requests/{request_id}/edit", {**BASE_FORM, "version": version, "action": "save"})
    assert response.status_code == 409 and cr().revision == 2


def test_apply_at_a_time_then_unschedule(erin, rita, ravi, protected_flag):
    request_id = open_request(erin)
    for reviewer in (rita, ravi):
        reviewer.post(f"/change-requests/{request_id}/reviews", {"decision": "approve", "revision": "1"})
    page = f"/change-requests/{request_id}"
    erin.get(page)
    assert "Apply at (UTC)" in erin.page and "data-utc" in erin.page
    version = Console.version(erin.page)
    for at, message in (("", "Required: a time in UTC"), ("2001-01-01T09:00", "has passed"),
                        ("soon", "Not a valid datetime")):
        response = erin.post(f"{page}/apply", {"mode": "at", "at": at, "version": version})
        assert response.status_code == 400 and message in erin.page, at
        assert re.search(r'id="f-at"[^>]*aria-invalid="true"', erin.page)
        assert cr().state == "approved"
    when = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    response = erin.post(f"{page}/apply", {"mode": "at", "at": when.strftime("%Y-%m-%dT%H:%M"), "version": version})
    assert response.status_code == 303
    request = cr(request_id)
    assert request.state == "scheduled" and request.scheduled_at == when  # typed in UTC, stored as that instant
    erin.get("/flags/checkout/schedules")
    assert "change request #1" in erin.page and when.strftime("%Y-%m-%d %H:%M") in erin.page
    erin.get(page)
    assert f"Scheduled for <strong>{when:%Y-%m-%d %H:%M} UTC</strong>" in erin.page
    schedule_version = re.search(r'unschedule"[^>]*>\s*<input[^>]*>\s*<input type="hidden" name="version" value="(\d+)"',
                                 erin.page).group(1)
    assert erin.post(f"{page}/unschedule", {"version": schedule_version}).status_code == 303
    assert cr(request_id).state == "approved"
    db.session.expire_all()
    assert db.session.scalars(sa.select(ScheduledChange.state)).all() == ["cancelled"]
    assert live()["fallthrough"] == {"variation": "off"}


def test_admin_bypass_is_admin_only_marked_and_audited(erin, ada, protected_flag):
    request_id = open_request(erin)
    page = f"/change-requests/{request_id}"
    erin.get(page)
    version = Console.version(erin.page)
    assert "Admin bypass" not in erin.page
    response = erin.post(f"{page}/apply", {"mode": "now", "bypass": "true", "version": version})
    assert response.status_code == 403 and cr().state == "open"
    ada.get(page)
    assert "⚠ Admin bypass" in ada.page and "Applies without the required approvals" in ada.page
    assert ada.post(f"{page}/apply", {"mode": "now", "bypass": "true", "version": version}).status_code == 303
    request = cr(request_id)
    assert request.state == "applied" and request.bypass is True and live()["fallthrough"] == {"variation": "on"}
    assert audit_actions("change_request")[-1] == "apply_bypass"
    db.session.expire_all()
    assert db.session.scalars(sa.select(FlagVersion.action).order_by(FlagVersion.id.desc())).first() == \
        "apply_change_request_bypass"
    ada.get(page)
    assert "admin bypass" in ada.page


def test_apply_on_a_stale_base_is_refused_until_rebased(erin, rita, ravi, admin, protected_flag):
    request_id = open_request(erin)
    for reviewer in (rita, ravi):
        reviewer.post(f"/change-requests/{request_id}/reviews", {"decision": "approve", "revision": "1"})
    assert admin.patch("/api/v1/flags/checkout", json={"description": "moved on"}).status_code == 200
    page = f"/change-requests/{request_id}"
    erin.get(page)
    assert "The flag changed since this request was written" in erin.page
    version = Console.version(erin.page)
    response = erin.post(f"{page}/apply", {"mode": "now", "version": version})
    assert response.status_code == 409 and "changed since the request was written" in erin.page
    assert cr().state == "approved" and live()["fallthrough"] == {"variation": "off"}
    assert "Re-base on the live flag and save the comment" in buttons(erin.page)
    assert erin.post(f"{page}/comment", {"comment": "Launch", "version": version}).status_code == 303
    request = cr(request_id)
    assert request.state == "open" and request.base_version == flag_version() and request.revision == 2


def test_cancel_is_for_the_author_or_an_admin(erin, rita, protected_flag):
    request_id = open_request(erin)
    page = f"/change-requests/{request_id}"
    rita.get(page)
    assert "Cancel the request" not in buttons(rita.page)
    response = rita.post(f"{page}/cancel", {"version": str(cr().version)})
    assert response.status_code == 403 and cr().state == "open"
    erin.get(page)
    assert erin.post(f"{page}/cancel", {"version": Console.version(erin.page)}).status_code == 303
    assert cr().state == "cancelled" and audit_actions("change_request") == ["create", "cancel"]


def test_process_posts_need_csrf_and_viewers_get_no_controls(app, erin, rita, protected_flag):
    request_id = open_request(erin)
    page = f"/change-requests/{request_id}"
    before = audit_actions("change_request")
    for path, data in ((f"{page}/reviews", {"decision": "approve", "revision": "1"}),
                       (f"{page}/apply", {"mode": "now", "version": "1"}), (f"{page}/cancel", {"version": "1"}),
                       (PROD, {**BASE_FORM, "version": str(flag_version()), "action": "save"})):
        assert rita.post(path, data, csrf=False).status_code == 400, path
    assert audit_actions("change_request") == before and cr().reviews == []
    viewer = signed_in(app, "viewer", "vic")
    for path in (page, "/change-requests", "/flags/checkout/schedules", "/schedules", "/rollouts",
                 "/flags/checkout/rollouts", "/environments/production", "/export-import/production",
                 "/flags/checkout/environments/production/rollouts/new", "/flags/checkout"):
        assert viewer.get(path).status_code == 200, path
        assert forms(viewer.page) == ["/logout"], (path, forms(viewer.page))
    assert viewer.post(f"{page}/reviews", {"decision": "approve", "revision": "1"}).status_code == 403
    assert cr().reviews == []


def test_change_request_list_filters_and_the_home_page(erin, rita, admin, app, protected_flag):
    open_request(erin)
    boolean_flag(admin, "search", on_in=())
    protect(admin, "staging", 1)
    erin.get("/flags/search/targeting/staging")
    assert "requires 1 approval;" in erin.page
    erin.post("/flags/search/targeting/staging", {**BASE_FORM, "version": Console.version(erin.page), "action": "save"})
    assert cr(2).state == "open"
    erin.get("/change-requests")
    assert "/change-requests/1" in erin.page and "/change-requests/2" in erin.page
    erin.get("/change-requests?flag=search")
    assert "/change-requests/2" in erin.page and "/change-requests/1\"" not in erin.page
    erin.get("/change-requests?environment=production&state=open")
    assert "/change-requests/1" in erin.page and "/change-requests/2" not in erin.page
    erin.get("/change-requests?state=applied")
    assert "No change requests match" in erin.page
    # Home: the requests awaiting the signed-in user's review (not their own).
    rita.get("/")
    assert "Change requests awaiting your review (2)" in rita.page and "/change-requests/1" in rita.page
    erin.get("/")
    assert "nothing waits for your approval" in erin.page
    rita.post("/change-requests/1/reviews", {"decision": "approve", "revision": "1"})
    rita.get("/")
    assert "awaiting your review (1)" in rita.page and "/change-requests/1\"" not in rita.page
    assert 'href="/change-requests"' in re.search(r"<nav.*?</nav>", rita.page, re.S).group(0)


# ---------------------------------------------------------------- approvals on the environments page

def test_admins_set_approvals_required(app, ada, erin):
    ada.get("/environments/production")
    assert "Not protected" in ada.page
    version = Console.version(ada.page)
    for bad in ("-1", "21", "two"):
        response = ada.post("/environments/production/approvals", {"approvals_required": bad, "version": version})
        assert response.status_code == 400, bad
        assert re.search(r'id="f-approvals_required"[^>]*aria-invalid="true"', ada.page)
    assert ada.post("/environments/production/approvals", {"approvals_required": "2", "version": version}).status_code == 303
    ada.get("/environments/production")
    assert "need <strong>2 approvals</strong>" in ada.page
    assert audit_actions("environment")[-1] == "update"
    # A stale form and an editor are refused.
    response = ada.post("/environments/production/approvals", {"approvals_required": "0", "version": version})
    assert response.status_code == 409
    erin.get("/environments/production")
    assert "Save approvals" not in erin.page
    assert erin.post("/environments/production/approvals", {"approvals_required": "0",
                                                             "version": str(int(version) + 1)}).status_code == 403
    ada.get("/environments")
    assert "🔒 2" in ada.page


# ---------------------------------------------------------------- scheduled changes

def test_schedule_from_the_targeting_editor_then_the_worker_applies_it(erin, admin):
    boolean_flag(admin, on_in=())
    erin.get(PROD)
    assert "Or schedule these changes for later" in erin.page
    version = Console.version(erin.page)
    # Never configured here: off, and once on the default rule serves "on"; schedule serving "off".
    form = {"enabled": "false", "off_variation": "off", "fallthrough.kind": "variation", "fallthrough.variation": "off",
            "version": version, "action": "schedule"}
    # Nothing changed: nothing to schedule; no time: refused at the field.
    response = erin.post(PROD, {**form, "fallthrough.variation": "on", "at": "2099-01-01T10:00"})
    assert response.status_code == 400 and "same as the live one" in erin.page
    response = erin.post(PROD, {**form, "at": ""})
    assert response.status_code == 400 and re.search(r'id="f-at"[^>]*aria-invalid="true"', erin.page)
    when = (datetime.now(UTC) + timedelta(hours=3)).replace(second=0, microsecond=0)
    response = erin.post(PROD, {**form, "at": when.strftime("%Y-%m-%dT%H:%M"), "comment": "evening"})
    assert response.status_code == 303 and response.headers["Location"] == "/flags/checkout/schedules"
    db.session.expire_all()
    item = db.session.scalars(sa.select(ScheduledChange)).one()
    assert item.patch == {"fallthrough": {"variation": "off"}} and item.at == when and item.state == "pending"
    assert live()["fallthrough"] == {"variation": "on"}
    erin.get("/flags/checkout")
    assert "Scheduled changes" in erin.page and "default rule: off" in erin.page
    Worker(clock=lambda: when + timedelta(seconds=1)).run_once()
    assert live()["fallthrough"] == {"variation": "off"}
    erin.get("/flags/checkout/schedules?state=applied")
    assert "state-applied" in erin.page and "→ version" in erin.page


def test_quick_schedule_cancel_conflict_and_a_failure_reason(erin, admin):
    boolean_flag(admin, on_in=())
    erin.get("/flags/checkout/schedules")
    assert "Turn on or off at a time" in erin.page
    when = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    response = erin.post("/flags/checkout/schedules", {"environment": "staging", "change": "on",
                                                       "at": "2001-01-01T00:00"})
    assert response.status_code == 400 and "has passed" in erin.page
    for env in ("staging", "production"):
        assert erin.post("/flags/checkout/schedules", {"environment": env, "change": "on",
                                                       "at": when.strftime("%Y-%m-%dT%H:%M")}).status_code == 303
    db.session.expire_all()
    staging, production = db.session.scalars(sa.select(ScheduledChange).order_by(ScheduledChange.id)).all()
    assert staging.patch == {"enabled": True}
    erin.get("/flags/checkout/schedules")
    assert "Cancel change 1" in buttons(erin.page)
    response = erin.post(f"/flags/checkout/environments/staging/schedules/{staging.id}/cancel",
                         {"version": str(staging.version + 1)})
    assert response.status_code == 409
    response = erin.post(f"/flags/checkout/environments/staging/schedules/{staging.id}/cancel",
                         {"version": str(staging.version)})
    assert response.status_code == 303
    # Production becomes protected before the change is due: the worker fails it, with the reason.
    protect(admin, "production", 1)
    Worker(clock=lambda: when + timedelta(seconds=1)).run_once()
    erin.get("/schedules")
    assert "state-cancelled" in erin.page and "state-failed" in erin.page
    assert "Why: Environment &#39;production&#39; became protected after this change was scheduled" in erin.page
    erin.get("/flags/checkout/schedules")
    assert "Environments that require approvals are not listed" in erin.page
    assert '<option value="production"' not in re.search(r'id="f-environment".*?</select>', erin.page, re.S).group(0)


# ---------------------------------------------------------------- guarded rollouts

def test_start_a_guarded_rollout_from_the_console(erin, admin):
    boolean_flag(admin)
    assert admin.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"}).status_code == 201
    new = "/flags/checkout/environments/production/rollouts/new"
    erin.get(new)
    assert 'name="steps.3.percent" type="text" value="100"' in erin.page and "purchases (higher is better)" in erin.page
    version = Console.version(erin.page)
    form = {"version": version, "from_variation": "off", "variation": "on", "steps.0.percent": "10",
            "steps.0.hold_hours": "1", "steps.1.percent": "5", "steps.1.hold_hours": "1", "steps.2.percent": "100",
            "steps.2.hold_hours": "0", "guardrails": "purchases", "alpha": "0.05", "action": "save"}
    response = erin.post(new, form)
    assert response.status_code == 400 and re.search(r'id="f-steps-1-percent"[^>]*aria-invalid="true"', erin.page)
    assert "Percents must strictly increase" in erin.page
    response = erin.post(new, {**form, "action": "add_step"})
    assert response.status_code == 200 and 'name="steps.3.percent"' in erin.page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Rollout)) == 0
    response = erin.post(new, {**form, "from_variation": "on", "variation": "off", "steps.1.percent": "50"})
    assert response.status_code == 409 and "The fallthrough must serve" in erin.page
    response = erin.post(new, {**form, "steps.1.percent": "50", "comment": "new checkout"})
    assert response.status_code == 303, erin.page[-2000:]
    location = response.headers["Location"]
    assert location == "/flags/checkout/environments/production/rollouts/1"
    erin.get(location)
    assert "step 1 of 3" in erin.page and "▶ current" in erin.page and "No check yet" in erin.page
    assert 'id="next-check">due now' in erin.page
    assert "Cancel the rollout" in buttons(erin.page)
    response = erin.post(f"{location}/cancel", {"version": "99"})
    assert response.status_code == 409
    assert erin.post(f"{location}/cancel", {"version": Console.version(erin.page)}).status_code == 303
    erin.get(location)
    assert "Cancelled:" in erin.page and live()["fallthrough"] == {"variation": "off"}


def test_a_rollout_in_a_protected_environment_is_proposed_in_a_change_request(erin, admin):
    boolean_flag(admin)
    protect(admin, "production", 1)
    new = "/flags/checkout/environments/production/rollouts/new"
    erin.get(new)
    assert "starting opens a change request" in erin.page
    form = {"version": Console.version(erin.page), "from_variation": "off", "variation": "on",
            "steps.0.percent": "20", "steps.0.hold_hours": "2", "steps.1.percent": "100", "steps.1.hold_hours": "0",
            "alpha": "0.1", "action": "save"}
    response = erin.post(new, form)
    assert response.status_code == 303 and response.headers["Location"] == "/change-requests/1"
    request = cr(1)
    assert request.rollout["steps"] == [{"percent": 20, "hold_hours": 2}, {"percent": 100, "hold_hours": 0}]
    assert request.rollout["alpha"] == 0.1
    erin.get("/change-requests/1")
    assert "starts a guarded rollout" in erin.page and "20 % for 2 h → 100 %" in erin.page
    erin.get("/change-requests/1/edit")
    assert "Guarded rollout" in erin.page and 'name="steps.1.percent"' in erin.page
    response = erin.post("/change-requests/1/edit", {**form, "version": Console.version(erin.page),
                                                     "steps.0.percent": "30"})
    assert response.status_code == 303 and cr(1).rollout["steps"][0]["percent"] == 30 and cr(1).revision == 2


def test_a_rolled_back_rollout_shows_its_checks_plot_and_numbers(erin, admin, sdk):
    boolean_flag(admin)
    rollout = harmful_rollout(admin, lambda body: sdk.post("/sdk/v1/events", json=body).status_code)
    assert rollout["state"] == "rolled_back", rollout
    page = f"/flags/checkout/environments/production/rollouts/{rollout['id']}"
    erin.get(page)
    assert "Rolled back:" in erin.page and "significant harm on guardrail &#39;purchases&#39;" in erin.page
    assert "confidence sequence [" in erin.page  # the numbers behind the decision
    assert "✗ rolled back here" in erin.page and "Cancel the rollout" not in buttons(erin.page)
    svg = re.search(r'<svg[^>]*role="img".*?</svg>', erin.page, re.S).group(0)
    assert "Guardrail purchases" in svg and "harm side: on below off; higher is better" in svg
    assert svg.count("<polygon") >= 2  # the interval band and at least one harm marker (a triangle)
    checks = db.session.scalar(sa.text("SELECT count(*) FROM rollout_checks"))
    assert checks >= 2 and f"Checks ({checks})" in erin.page
    assert erin.page.count("decision-rollback") == 1 and "✗ harm" in erin.page
    assert "(not enough data)" in erin.page  # the first check, before 100 units per arm
    erin.get("/rollouts?state=rolled_back")
    assert f"/rollouts/{rollout['id']}" in erin.page and "rolled back" in erin.page
    erin.get("/rollouts?state=running")
    assert "No guarded rollouts in this state" in erin.page


# ---------------------------------------------------------------- flags as code

def test_export_downloads_yaml_and_json(erin, admin):
    boolean_flag(admin)
    response = erin.get("/export-import/production/export.yaml")
    assert response.status_code == 200 and response.mimetype == "application/yaml"
    assert 'filename="pitcrew-production.yaml"' in response.headers["Content-Disposition"]
    document = yaml.safe_load(response.get_data(as_text=True))
    assert document["environment"] == "production" and document["flags"][0]["key"] == "checkout"
    response = erin.get("/export-import/production/export.json")
    assert response.status_code == 200 and response.json["flags"][0]["targeting"]["enabled"] is True
    assert erin.get("/export-import").headers["Location"] == "/export-import/production"
    assert erin.get("/export-import/nowhere").status_code == 404


def test_import_previews_then_applies_exactly_the_previewed_document(erin, admin):
    boolean_flag(admin)
    document = erin.get("/export-import/staging/export.yaml").get_data(as_text=True)
    changed = document.replace("enabled: false", "enabled: true", 1).replace("\n", "\r\n")  # as a browser sends it
    changed += "\r\n".join(["", "# new metric below", ""])
    changed = changed.replace("metrics: []", "metrics:\r\n- key: orders\r\n  event: order\r\n  type: count")
    before = flag_version()
    erin.get("/export-import/staging")
    response = erin.post("/export-import/staging", {"document": changed, "action": "dry_run"})
    assert response.status_code == 200 and "Preview (dry run): nothing has changed yet." in erin.page
    assert "1 created, 1 changed, 0 unchanged" in erin.page
    assert "targeting.enabled" in erin.page and "+ created" in erin.page
    assert flag_version() == before and live("staging")["enabled"] is False  # a dry run changes nothing
    previewed = re.search(r'name="previewed" value="([0-9a-f]{64})"', erin.page).group(1)
    # A document that differs from the preview is previewed again, not applied.
    response = erin.post("/export-import/staging", {"document": changed.replace("orders", "sales"),
                                                    "previewed": previewed, "action": "apply"})
    assert "differs from the one previewed" in erin.page and "Preview (dry run)" in erin.page
    assert live("staging")["enabled"] is False
    response = erin.post("/export-import/staging", {"document": changed, "previewed": previewed, "action": "apply",
                                                    "comment": "from the repo"})
    assert response.status_code == 200 and "Applied in one transaction." in erin.page
    assert live("staging")["enabled"] is True
    db.session.expire_all()
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "update_targeting")
                               .order_by(AuditEntry.id.desc())).first()
    assert (entry.actor, entry.comment) == ("erin", "from the repo")
    # Applying it again changes nothing.
    erin.post("/export-import/staging", {"document": changed, "action": "dry_run"})
    assert "0 created, 0 changed, 2 unchanged" in erin.page


def test_import_reports_problems_by_path_and_refuses_what_it_must(erin, admin, app):
    boolean_flag(admin)
    bad = "version: 1\nenvironment: staging\nflags:\n- key: checkout\n  kind: boolean\n  variations:\n" \
          "  - {key: on, value: true}\n  - {key: off, value: false}\n  targeting:\n    enabled: true\n" \
          "    off_variation: off\n    fallthrough: {variation: sideways}\n"
    erin.get("/export-import/staging")
    response = erin.post("/export-import/staging", {"document": bad, "action": "dry_run"})
    assert response.status_code == 400 and "Problems by document path" in erin.page
    assert "flags.0.targeting.fallthrough.variation" in erin.page
    response = erin.post("/export-import/staging", {"document": "version: 1\nenvironment: production\n",
                                                    "action": "dry_run"})
    assert response.status_code == 400 and "open &#39;production&#39;" in erin.page
    response = erin.post("/export-import/staging", {"document": "a: &x 1\nb: *x\n", "action": "dry_run"})
    assert response.status_code == 400 and "alias" in erin.page
    # Upload a file (it wins over the textarea).
    from io import BytesIO

    good = erin.get("/export-import/staging/export.json").get_data()
    response = erin.post("/export-import/staging", {"document": "", "action": "dry_run",
                                                    "file": (BytesIO(good), "staging.json")},
                         content_type="multipart/form-data")
    assert response.status_code == 200 and "0 created, 0 changed, 1 unchanged" in erin.page
    # A pasted text beyond the form's field limit is a clear 413; the same text as a file is read.
    big = good.decode() + "\n" * 600_000
    response = erin.post("/export-import/staging", {"document": big, "action": "dry_run"},
                         content_type="multipart/form-data")  # as the page's form sends it
    assert response.status_code == 413 and "a text field at most 500 kB" in erin.page
    response = erin.post("/export-import/staging", {"document": "", "action": "dry_run",
                                                    "file": (BytesIO(big.encode()), "big.json")},
                         content_type="multipart/form-data")
    assert response.status_code == 200 and "0 created, 0 changed, 1 unchanged" in erin.page
    # In a protected environment the targeting change would open a change request.
    protect(admin, "staging", 1)
    changed = good.decode().replace('"enabled": false', '"enabled": true')
    erin.post("/export-import/staging", {"document": changed, "action": "dry_run"})
    assert "staging requires approvals:" in erin.page and "would open a change request" in erin.page
    # CSRF and roles.
    assert erin.post("/export-import/staging", {"document": changed, "action": "dry_run"}, csrf=False).status_code == 400
    viewer = signed_in(app, "viewer", "vic")
    viewer.get("/export-import/staging")
    assert "Download staging as YAML" in viewer.page and "Preview changes" not in viewer.page
    assert viewer.post("/export-import/staging", {"document": changed, "action": "dry_run"}).status_code == 403
    assert viewer.get("/export-import/staging/export.yaml").status_code == 200

