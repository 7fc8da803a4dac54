"""End to end in headless Chromium (Debian's chromium, driven by Playwright)
against a live gunicorn server sharing the test database.

Every page load is watched: a request to any host but 127.0.0.1 is blocked
and recorded, and any browser console error or page error fails the test.
Screenshots of the main pages go to build/console-screenshots/ (not
committed).
"""

import json
import os
import random
import re
import shutil
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from pitcrew import Client
from service.domain import flags as flag_domain
from service.domain import rollouts as rollout_domain
from service.extensions import db
from service.models import Rollout
from service.worker import Worker

from ..support import ROOT, make_sdk_key, make_token
from .process_support import boolean_flag, events_for, http_post, protect, send

CHROMIUM = os.environ.get("PITCREW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "build" / "console-screenshots"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    expect = sync_playwright = None
else:
    expect.set_options(timeout=30_000)  # assertions wait for the page (a loaded CI machine)

if sync_playwright is None or not shutil.which(CHROMIUM):
    reason = "needs Playwright and Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        raise RuntimeError(reason)  # CI installs both: never skip there
    pytestmark = pytest.mark.skip(reason=reason)


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Watch:
    """Blocks and records requests leaving 127.0.0.1; collects console and page errors."""

    def __init__(self):
        self.external: list[str] = []
        self.errors: list[str] = []

    def route(self, route):
        host = urlsplit(route.request.url).hostname
        if host != "127.0.0.1":
            self.external.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def attach(self, page):
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: d.accept())  # data-confirm prompts
        page.set_default_timeout(60000)  # a loaded CI machine
        return page

    def check(self):
        assert self.external == [], self.external
        assert self.errors == [], self.errors


@pytest.fixture
def session(browser, live_server):
    """A browser context (its own cookies) factory; every context is watched."""
    contexts = []
    watch = Watch()

    def new(role: str, name: str, width: int = 1280, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=live_server.url)
        context.route("**/*", watch.route)
        contexts.append(context)
        page = watch.attach(context.new_page())
        secret = make_token(role, name)
        page.goto("/")
        assert "/login" in page.url
        page.get_by_label("Personal admin token").fill(secret)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/$"))
        return page

    new.watch = watch
    yield new
    for context in contexts:
        context.close()
    watch.check()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_accessible_basics(page) -> None:
    """Every visible form control has a label; the page does not scroll sideways."""
    unlabeled = page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea'))
        .filter(e => e.type !== 'hidden' && !e.closest('.default-submit') && e.offsetParent !== null)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.name || e.id)""")
    assert unlabeled == [], unlabeled
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page scrolls sideways by {overflow}px"


def config(live_server, sdk_key: str) -> dict:
    request = urllib.request.Request(f"{live_server.url}/sdk/v1/config",
                                     headers={"Authorization": f"Bearer {sdk_key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_flag_created_targeted_and_turned_on_reaches_the_sdk_config(session, live_server):
    sdk_key = make_sdk_key("production")
    before = config(live_server, sdk_key)
    page = session("editor", "erin")
    # Keyboard users start at the skip link.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"

    page.get_by_role("link", name="Flags").first.click()
    page.get_by_role("link", name="New flag").click()
    page.get_by_label("Key", exact=True).fill("new-checkout")
    page.get_by_label("Name", exact=True).fill("New checkout")
    page.get_by_label("Tags (comma separated)").fill("checkout, web")
    assert_accessible_basics(page)
    page.get_by_role("button", name="Create flag").click()
    page.wait_for_url(re.compile(r"/flags/new-checkout$"))
    shot(page, "flag-new")

    page.get_by_role("link", name="Edit targeting in production").click()
    page.get_by_role("button", name="Add rule").click()
    page.get_by_label("Attribute", exact=True).fill("country")
    page.get_by_label("Operator", exact=True).select_option("in")
    page.get_by_label("Values (one per line)").fill("DE\nAT")
    page.locator("select[name='rules.0.serve.kind']").select_option("rollout")
    page.get_by_label("% to on").first.fill("25")
    page.get_by_label("% to off").first.fill("75")
    assert page.locator("select[name='rules.0.serve.variation']").is_hidden()  # the JS shows one serve kind
    assert_accessible_basics(page)
    shot(page, "targeting-editor")
    page.get_by_role("button", name="Save targeting").first.click()
    page.wait_for_url(re.compile(r"/flags/new-checkout$"))
    assert "Saved targeting of new-checkout in production" in page.content()

    page.get_by_role("button", name="Turn on in production").click()
    page.wait_for_url(re.compile(r"/flags/new-checkout$"))
    expect(page.get_by_text("new-checkout is now on in production")).to_be_visible()
    shot(page, "flag")

    after = config(live_server, sdk_key)
    assert after["version"] != before["version"]
    served = after["flags"]["new-checkout"]
    targeting = served["targeting"]
    assert targeting["enabled"] is True
    assert targeting["rules"][0]["conditions"][0] == {"op": "in", "negate": False, "attribute": "country",
                                                      "values": ["DE", "AT"]}
    assert targeting["rules"][0]["serve"] == {"rollout": {"weights": [["on", 2500], ["off", 7500]]}}

    page.get_by_role("link", name="Flags").first.click()
    page.get_by_label("Tag").fill("checkout")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name="new-checkout")).to_be_visible()
    assert_accessible_basics(page)
    shot(page, "flags")
    page.screenshot(path=str(SHOTS / "readme-flags.jpg"), type="jpeg", quality=80)
    # The same list on a tablet, portrait.
    page.set_viewport_size({"width": 820, "height": 1180})
    page.reload()
    assert_accessible_basics(page)
    shot(page, "flags-tablet")


def test_a_viewer_sees_no_write_controls(session, admin):
    admin.post("/api/v1/flags", json={"key": "read-only", "kind": "boolean",
                                      "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    page = session("viewer", "vera")
    for path in ("/flags", "/flags/read-only", "/flags/read-only/targeting/production", "/experiments",
                 "/experiment-metrics", "/segments", "/environments/production"):
        page.goto(path)
        posting = page.locator("form[method='post']")
        assert posting.count() == 1 and posting.get_attribute("action") == "/logout", path
        for name in ("New flag", "Turn on in production", "Save targeting", "Create metric", "Create SDK key"):
            assert page.get_by_role("button", name=name).count() == 0, (path, name)
    assert page.get_by_role("link", name="Tokens").count() == 0


def test_a_stale_edit_in_another_tab_shows_a_conflict(session, admin):
    admin.post("/api/v1/flags", json={"key": "two-tabs", "kind": "boolean",
                                      "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    first = session("editor", "ed")
    second = first.context.new_page()
    session.watch.attach(second)
    for page in (first, second):
        page.goto("/flags/two-tabs/targeting/production")
    first.get_by_label("On: serve the targeting below").check()
    first.get_by_role("button", name="Save targeting").first.click()
    first.wait_for_url(re.compile(r"/flags/two-tabs$"))
    saved = flag_domain.get_targeting("two-tabs", "production")

    second.get_by_label("When off, serve").select_option("on")
    with second.expect_response(lambda r: r.request.method == "POST") as posted:
        second.get_by_role("button", name="Save targeting").first.click()
    assert posted.value.status == 409
    expect(second.get_by_text("Conflict: this changed since you opened it.")).to_be_visible()
    shot(second, "conflict")
    db.session.expire_all()
    flag, targeting = flag_domain.get_targeting("two-tabs", "production")
    assert targeting == saved[1] and targeting["off_variation"] == "off" and targeting["enabled"] is True
    # The document's 409 is the only thing the browser complained about.
    session.watch.errors[:] = [e for e in session.watch.errors if "status of 409" not in e]


def backdated_events(days: int, per_day: int, rng: random.Random) -> list[dict]:
    """Earlier days of the experiment (exposures and purchases), as an SDK would have sent them."""
    events = []
    today = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    for d in range(days, 0, -1):
        for i in range(per_day):
            unit = f"early-{d}-{i}"
            variation = "on" if i % 2 else "off"
            at = today - timedelta(days=d, minutes=i)
            events.append({"id": str(uuid.uuid4()), "type": "exposure", "ts": at.isoformat(), "unit": unit,
                           "experiment": "checkout-test", "variation": variation})
            if rng.random() < (0.36 if variation == "on" else 0.2):
                events.append({"id": str(uuid.uuid4()), "type": "track", "ts": (at + timedelta(minutes=3))
                               .isoformat(), "unit": unit, "event": "purchase"})
    return events


def test_experiment_created_started_and_read_in_the_console(session, live_server, admin):
    admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean",
                                      "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    page = session("editor", "pia")
    page.goto("/experiment-metrics")
    page.get_by_label("Key", exact=True).fill("purchases")
    page.get_by_label("Track event key").fill("purchase")
    page.get_by_label("Type").select_option("conversion")
    page.get_by_role("button", name="Create metric").click()
    expect(page.get_by_role("link", name="purchases")).to_be_visible()

    page.goto("/experiments/new")
    page.get_by_label("Key", exact=True).fill("checkout-test")
    page.get_by_label("Name", exact=True).fill("New checkout")
    page.get_by_label("Hypothesis").fill("A shorter checkout makes more people buy.")
    page.get_by_label("Flag", exact=True).select_option("checkout")
    page.get_by_label("Environment").select_option("production")
    page.get_by_label("Primary metric").select_option("purchases")
    page.get_by_label("Target MDE (relative, % of control)").fill("10")
    assert_accessible_basics(page)
    page.get_by_role("button", name="Create draft").click()
    page.wait_for_url(re.compile(r"/experiments/checkout-test$"))
    # Control is "off": set it in the draft's setup.
    page.get_by_text("Edit setup").click()
    page.get_by_label("Control", exact=True).select_option("off")
    page.get_by_role("button", name="Save setup").click()
    page.wait_for_url(re.compile(r"/experiments/checkout-test$"))
    page.goto("/flags/checkout")
    page.get_by_role("button", name="Turn on in production").click()
    page.goto("/experiments/checkout-test")
    page.get_by_role("button", name="Start experiment").click()
    page.wait_for_url(re.compile(r"/experiments/checkout-test$"))
    expect(page.get_by_role("button", name="Stop experiment")).to_be_visible()

    # Traffic: earlier days posted to the events endpoint, today's users through the SDK client.
    sdk_key = make_sdk_key("production")
    rng = random.Random(42)
    early = backdated_events(3, 400, rng)
    request = urllib.request.Request(f"{live_server.url}/sdk/v1/events", data=json.dumps({"events": early}).encode(),
                                     headers={"Authorization": f"Bearer {sdk_key}",
                                              "Content-Type": "application/json"}, method="POST")
    for i in range(0, len(early), 1000):
        request.data = json.dumps({"events": early[i:i + 1000]}).encode()
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 202
    client = Client(live_server.url, sdk_key, poll_interval=1, flush_interval=0.2)
    try:
        assert client.wait_until_ready(10)
        for u in range(800):
            context = {"id": f"user-{u}", "plan": "pro" if u % 3 else "free"}
            detail = client.variation_detail("checkout", context, False)
            assert detail.in_experiment and detail.experiment == "checkout-test", detail
            if rng.random() < (0.36 if detail.variation == "on" else 0.2):
                client.track("purchase", context)
        assert client.flush(20)
    finally:
        client.close()

    page.reload()
    html = page.content()
    expect(page.locator("#verdict").get_by_text("winner").first).to_be_visible()
    assert page.locator("svg.chart").count() == 2  # forest plot and lift over time
    forest = page.locator("svg.chart").nth(0)
    assert "Relative lift of purchases vs control off (%)" in forest.inner_html()
    series = page.locator("svg.chart").nth(1)
    assert "Day (UTC, cumulative to the end of the day)" in series.inner_html()
    assert series.locator("polyline").count() == 1 and series.locator("polygon").count() >= 1
    assert "control" in html and "Download CSV" in html
    assert_accessible_basics(page)
    shot(page, "experiment")
    page.locator("#results").screenshot(path=str(SHOTS / "readme-results.jpg"), type="jpeg", quality=80)
    page.set_viewport_size({"width": 820, "height": 1180})
    page.reload()
    assert_accessible_basics(page)
    shot(page, "experiment-tablet")
    page.set_viewport_size({"width": 1280, "height": 900})

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].endswith("chance_to_beat_control,risk") and "purchases" in text

    page.get_by_label("Decision").select_option("ship")
    page.get_by_label("Variation shipped").select_option("on")
    page.get_by_label("Serve to everyone the rule matches").select_option("on")
    page.get_by_label("Summary").fill("Clear win on purchases.")
    page.get_by_role("button", name="Conclude experiment").click()
    page.wait_for_url(re.compile(r"/experiments/checkout-test$"))
    expect(page.get_by_text("Decision: ship")).to_be_visible()

    page.goto("/tools/sample-size")
    page.get_by_label("Absolute: percentage points").check()
    page.get_by_label("Effect to detect").fill("2")
    page.get_by_role("button", name="Calculate").click()
    expect(page.get_by_text("absolute (percentage points)").first).to_be_visible()
    shot(page, "sample-size")
    page.goto("/audit?resource_type=experiment")
    expect(page.get_by_text("conclude").first).to_be_visible()
    shot(page, "audit")
    db.session.expire_all()
    assert db.session.execute(sa.text("SELECT count(*) FROM events")).scalar() > 1500


# ---------------------------------------------------------------- process: change requests, guarded rollouts, flags as code

def test_a_change_request_opened_approved_and_applied_reaches_the_sdk_config(session, live_server, admin):
    boolean_flag(admin, on_in=())
    protect(admin, "production", 1)
    sdk_key = make_sdk_key("production")
    before = config(live_server, sdk_key)
    author = session("editor", "erin")
    author.goto("/flags/checkout")
    author.get_by_role("link", name="Edit targeting in production").click()
    expect(author.get_by_text("This environment requires 1 approval; saving opens a change request")).to_be_visible()
    assert author.get_by_role("button", name="Save targeting").count() == 0
    author.get_by_label("On: serve the targeting below").check()
    author.get_by_label("Comment for the reviewers (what and why)").fill("Launch the new checkout")
    assert_accessible_basics(author)
    shot(author, "change-request-editor")
    author.get_by_role("button", name="Open change request").first.click()
    author.wait_for_url(re.compile(r"/change-requests/1$"))
    expect(author.get_by_text("Opened change request #1")).to_be_visible()
    assert author.get_by_role("button", name="Approve").count() == 0  # the author never approves
    assert config(live_server, sdk_key)["version"] == before["version"]  # nothing live changed yet

    reviewer = session("editor", "rita")
    expect(reviewer.get_by_text("Change requests awaiting your review (1)")).to_be_visible()
    reviewer.locator("#to-review").get_by_role("link", name="#1").click()
    reviewer.wait_for_url(re.compile(r"/change-requests/1$"))
    expect(reviewer.locator("table.diff").get_by_text("enabled")).to_be_visible()
    reviewer.get_by_label("Review comment").fill("Looks right")
    reviewer.get_by_role("button", name="Approve").click()
    reviewer.wait_for_url(re.compile(r"/change-requests/1$"))
    expect(reviewer.get_by_text("Approved change request #1 (state: approved).")).to_be_visible()
    assert_accessible_basics(reviewer)
    shot(reviewer, "change-request-approved")

    author.reload()
    author.get_by_role("button", name="Apply now").click()
    author.wait_for_url(re.compile(r"/change-requests/1$"))
    expect(author.get_by_text("Applied change request #1")).to_be_visible()
    shot(author, "change-request-applied")
    after = config(live_server, sdk_key)
    assert after["version"] != before["version"]
    assert after["flags"]["checkout"]["targeting"]["enabled"] is True
    author.set_viewport_size({"width": 820, "height": 1180})
    author.reload()
    assert_accessible_basics(author)
    shot(author, "change-request-tablet")
    author.set_viewport_size({"width": 1280, "height": 900})
    author.get_by_role("link", name="Change requests").first.click()
    author.wait_for_url(re.compile(r"/change-requests$"))  # loaded, its script listening, before the change
    author.get_by_label("State").select_option("applied")  # the filter form submits on change
    author.wait_for_url(re.compile(r"state=applied"))
    expect(author.get_by_role("link", name="#1")).to_be_visible()
    assert_accessible_basics(author)
    shot(author, "change-requests")
    # Staging is not protected: schedule turning the flag on there, as a quick change.
    author.goto("/flags/checkout/schedules")
    quick = author.get_by_role("form", name="Turn on or off at a time")
    quick.get_by_label("Environment").select_option("staging")
    quick.get_by_label("At (UTC)").fill((datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    assert "in your browser's time zone" in author.locator(".local-time").first.text_content()
    quick.get_by_role("button", name="Schedule", exact=True).click()
    author.wait_for_url(re.compile(r"/flags/checkout/schedules$"))
    expect(author.get_by_role("button", name="Cancel change 1")).to_be_visible()
    assert_accessible_basics(author)
    shot(author, "schedules")


def test_a_guarded_rollout_started_in_the_console_shows_its_guardrail_plot(session, live_server, admin):
    boolean_flag(admin)
    assert admin.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase",
                                               "type": "conversion"}).status_code == 201
    page = session("editor", "erin")
    page.goto("/flags/checkout")
    page.get_by_role("link", name="Guarded rollout in production").click()
    page.get_by_label("Guardrail metrics (harm on any rolls back)").select_option("purchases")
    page.get_by_label("Step 1: percent").fill("10")
    page.get_by_label("Step 1: hold (hours)").fill("1")
    assert_accessible_basics(page)
    shot(page, "rollout-new")
    page.get_by_role("button", name="Start guarded rollout").click()
    page.wait_for_url(re.compile(r"/rollouts/1$"))
    expect(page.get_by_text("step 1 of 4")).to_be_visible()

    # Traffic (exposures and purchases as an SDK sends them), then the real worker's checks.
    sdk_key = make_sdk_key("production")
    db.session.expire_all()
    rollout = db.session.get(Rollout, 1)
    t0, experiment = rollout.step_started_at, rollout_domain.to_dict(rollout)["experiment"]
    rng, post = random.Random(5), http_post(live_server.url, sdk_key)
    for k, size in enumerate((60, 240, 400)):
        send(post, events_for(experiment, range(k * 1000, k * 1000 + size), {"on": 0.3, "off": 0.6}, rng))
        Worker(clock=lambda k=k: t0 + timedelta(minutes=1 + 6 * k)).run_once()
    db.session.expire_all()
    assert db.session.get(Rollout, 1).state == "rolled_back"

    page.reload()
    expect(page.locator("#reason").get_by_text("significant harm on guardrail 'purchases'")).to_be_visible()
    plot = page.locator("figure.guardrail svg.chart")
    expect(plot).to_have_count(1)
    expect(plot).to_be_visible()
    assert "harm side: on below off; higher is better" in plot.inner_html()
    assert plot.locator("polygon").count() >= 2 and plot.locator("polyline").count() == 1
    checks = db.session.scalar(sa.text("SELECT count(*) FROM rollout_checks"))
    assert checks >= 2 and page.locator("table.checks tbody tr").count() == checks
    expect(page.locator("table.checks").get_by_text("not enough data").first).to_be_visible()
    assert_accessible_basics(page)
    shot(page, "rollout")
    page.locator("#h-guardrails ~ figure").first.screenshot(path=str(SHOTS / "rollout-plot.png"))


def test_flags_as_code_preview_then_apply_in_the_browser(session, live_server, admin):
    boolean_flag(admin, on_in=())
    exported = admin.get("/api/v1/export?environment=staging&format=yaml").get_data(as_text=True)
    page = session("editor", "erin")
    page.get_by_role("link", name="Export / import").click()
    page.wait_for_url(re.compile(r"/export-import/production$"))
    page.get_by_role("link", name="staging").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download staging as YAML").click()
    assert Path(download.value.path()).read_text() == exported
    page.get_by_label("Document (YAML or JSON)").fill(exported.replace("enabled: false", "enabled: true", 1))
    page.get_by_role("button", name="Preview changes (dry run)").click()
    expect(page.get_by_text("Preview (dry run): nothing has changed yet.")).to_be_visible()
    expect(page.locator("#diff").get_by_text("targeting.enabled")).to_be_visible()
    shot(page, "import-preview")
    assert flag_domain.get_targeting("checkout", "staging")[1]["enabled"] is False
    page.get_by_role("button", name="Apply to staging").click()
    expect(page.get_by_text("Applied in one transaction.")).to_be_visible()
    db.session.expire_all()
    assert flag_domain.get_targeting("checkout", "staging")[1]["enabled"] is True
    assert_accessible_basics(page)
    shot(page, "import-applied")


def test_webhooks_page_and_insights_dashboard_render(session, admin, monkeypatch):
    from service.domain import Actor, webhooks

    monkeypatch.setattr(webhooks.settings, "allow_private", True)  # this process writes the subscription
    webhook, _ = webhooks.create(Actor("tests"), {"url": "http://127.0.0.1:9/hooks/pitcrew", "events": ["*"]})
    admin.post("/api/v1/flags", json={"key": "dashboard", "kind": "boolean",
                                      "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]})
    admin.patch("/api/v1/flags/dashboard/environments/production", json={"enabled": True})
    page = session("admin", "ada")
    page.goto("/webhooks")
    row = page.get_by_role("row").filter(has_text="127.0.0.1:9/hooks/pitcrew")
    assert row.count() == 1 and "Enabled" in row.inner_text()
    assert_accessible_basics(page)
    row.get_by_role("link").first.click()
    page.wait_for_url(re.compile(rf"/webhooks/{webhook.id}$"))
    deliveries = page.get_by_role("table").first
    assert "flag.created" in deliveries.inner_text() and "targeting.updated" in deliveries.inner_text()
    assert page.get_by_role("button", name="Rotate secret").count() == 1
    assert_accessible_basics(page)
    shot(page, "webhook")
    for width in (1280, 820):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/insights")
        charts = page.locator("svg.chart[role='img']")
        assert charts.count() == 7
        for i in range(7):
            expect(charts.nth(i)).to_be_visible()
        assert page.get_by_text("Median days to full rollout").count() == 1
        assert page.locator("dl.kpis dd").first.inner_text().strip() != ""
        assert_accessible_basics(page)
    shot(page, "insights")
