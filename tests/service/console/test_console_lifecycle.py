"""Console pages of webhooks, flag lifecycle (list column and filter, cleanup) and insights,
over Flask's test client: secrets shown once, roles, actions through the domain."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.domain import Actor, webhooks
from service.domain import flags as flag_domain
from service.extensions import db
from service.models import AuditEntry, Flag, Webhook, WebhookDelivery

from .helpers import Console, signed_in

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]


@pytest.fixture
def admin_console(app):
    return signed_in(app, "admin", "ada")


@pytest.fixture
def editor_console(app):
    return signed_in(app, "editor", "erin")


def make_flag(key, created=None, **fields):
    flag_domain.create(Actor("tests"), {"key": key, "kind": "boolean", "variations": BOOL, **fields})
    if created:
        db.session.execute(sa.update(Flag).where(Flag.key == key).values(created_at=created))
        db.session.commit()


def test_webhooks_page_creates_shows_the_secret_once_and_lists_deliveries(admin_console, monkeypatch):
    monkeypatch.setattr(webhooks.settings, "allow_private", True)
    admin_console.get("/webhooks")
    assert "New webhook" in admin_console.page and "No webhooks yet" in admin_console.page
    response = admin_console.post("/webhooks", {"url": "http://127.0.0.1:9/hook", "all_events": "false",
                                                "events": ["flag.created", "targeting.updated"],
                                                "environments": ["production"], "format": "standard"})
    assert response.status_code == 201
    secret = re.search(r'value="(whsec_[^"]+)"', admin_console.page).group(1)
    assert "only time it is shown" in admin_console.page
    stored = db.session.scalars(sa.select(Webhook)).one()
    assert stored.events == ["flag.created", "targeting.updated"] and stored.environments == ["production"]
    assert secret not in admin_console.get("/webhooks").get_data(as_text=True)
    assert secret not in admin_console.get(f"/webhooks/{stored.id}").get_data(as_text=True)
    make_flag("checkout")
    page = admin_console.get(f"/webhooks/{stored.id}").get_data(as_text=True)
    assert "flag.created" in page and "not sent yet" in page and "pending" in page
    # Rotation shows the new secret once; disabling and deleting go through the domain.
    version = Console.version(page)
    rotated = admin_console.post(f"/webhooks/{stored.id}/rotate", {"version": version})
    assert rotated.status_code == 200 and "New signing secret" in admin_console.page
    assert re.search(r'value="(whsec_[^"]+)"', admin_console.page).group(1) != secret
    version = Console.version(admin_console.page)
    assert admin_console.post(f"/webhooks/{stored.id}", {"action": "toggle", "enabled": "false",
                                                         "version": version}).status_code == 303
    db.session.rollback()
    assert db.session.get(Webhook, stored.id).enabled is False
    actions = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == "webhook")
                                 .order_by(AuditEntry.id)).all()
    assert actions == ["create", "rotate_secret", "update"]
    version = Console.version(admin_console.get(f"/webhooks/{stored.id}").get_data(as_text=True))
    assert admin_console.post(f"/webhooks/{stored.id}/delete", {"version": version}).status_code == 303
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


def test_webhook_form_errors_are_shown_and_nothing_is_stored(admin_console):
    response = admin_console.post("/webhooks", {"url": "http://10.0.0.1/x", "all_events": "true"})
    assert response.status_code == 400
    assert "WEBHOOK_ALLOW_PRIVATE" in admin_console.page and 'aria-invalid="true"' in admin_console.page
    response = admin_console.post("/webhooks", {"url": "https://example.com/x", "all_events": "false"})
    assert response.status_code == 400 and "at least one event type" in admin_console.page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Webhook)) == 0


def test_webhooks_are_for_admins_only(editor_console):
    assert editor_console.get("/webhooks").status_code == 403
    assert editor_console.post("/webhooks", {"url": "https://example.com/x", "all_events": "true"}).status_code == 403
    assert "/webhooks" not in editor_console.get("/").get_data(as_text=True)


def test_flag_list_shows_the_stage_and_filters_on_it(editor_console):
    long_ago = datetime.now(UTC) - timedelta(days=60)
    make_flag("old-release", created=long_ago)
    make_flag("fresh")
    make_flag("switch", type="kill-switch", temporary=False)
    page = editor_console.get("/flags").get_data(as_text=True)
    row = re.search(r'<tr>\s*<td><a href="/flags/old-release".*?</tr>', page, re.S).group(0)
    assert "ready to archive" in row or "potentially stale" in row
    assert "never evaluated" in row and "release, temporary" in row
    filtered = editor_console.get("/flags?lifecycle=new").get_data(as_text=True)
    assert "/flags/fresh" in filtered and "/flags/switch" in filtered and "/flags/old-release" not in filtered
    assert '<option value="new" selected>' in filtered
    by_type = editor_console.get("/flags?type=kill-switch").get_data(as_text=True)
    assert "/flags/switch" in by_type and "/flags/fresh" not in by_type
    # An unknown option is ignored, not an error.
    assert editor_console.get("/flags?lifecycle=bogus").status_code == 200


def test_flag_type_is_set_at_creation_and_in_settings(editor_console):
    editor_console.get("/flags/new")
    response = editor_console.post("/flags/new", {"key": "ops-limit", "kind": "boolean", "type": "operational",
                                                  "variations.0.key": "on", "variations.0.value": "true",
                                                  "variations.1.key": "off", "variations.1.value": "false",
                                                  "temporary": "true", "action": "save"})
    assert response.status_code == 303
    assert db.session.scalar(sa.select(Flag.type).where(Flag.key == "ops-limit")) == "operational"
    page = editor_console.get("/flags/ops-limit").get_data(as_text=True)
    assert "operational" in page and "stage-new" in page
    version = Console.version(page)
    response = editor_console.post("/flags/ops-limit/settings", {"name": "Ops limit", "type": "permission",
                                                                 "temporary": "false", "version": version})
    assert response.status_code == 303
    db.session.rollback()
    assert db.session.scalar(sa.select(Flag.type).where(Flag.key == "ops-limit")) == "permission"


def test_cleanup_lists_stale_and_archivable_flags_with_reasons_and_archives(editor_console):
    make_flag("old-release", created=datetime.now(UTC) - timedelta(days=45))
    make_flag("old-switch", created=datetime.now(UTC) - timedelta(days=45), type="kill-switch", temporary=False)
    make_flag("fresh")
    page = editor_console.get("/cleanup").get_data(as_text=True)
    assert "/flags/old-release" in page and "/flags/old-switch" not in page and "/flags/fresh" not in page
    assert "Launched for" in page or "expected lifetime 40 days" in page
    version = str(db.session.scalar(sa.select(Flag.version).where(Flag.key == "old-release")))
    assert editor_console.post("/cleanup/old-release/archive", {"version": version}).status_code == 303
    db.session.rollback()
    assert db.session.scalar(sa.select(Flag.archived).where(Flag.key == "old-release")) is True
    assert "Nothing to clean up" in editor_console.get("/cleanup").get_data(as_text=True)


def test_insights_dashboard_renders_kpis_and_charts(editor_console):
    make_flag("checkout")
    flag_domain.put_targeting(Actor("tests"), "checkout", "production", {
        "enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}})
    response = editor_console.get("/insights")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 7
    assert "Median days to full rollout" in page and "Data-driven releases" in page
    assert re.search(r"<dt>Flags created</dt><dd>1</dd>", page)
    assert 'role="img"' in page and "<desc" in page
    bad = editor_console.get("/insights?from=2025-05-01&to=2025-01-01")
    assert bad.status_code == 400 and "The period is invalid" in bad.get_data(as_text=True)
