"""A holdout in headless Chromium against a live gunicorn server: created on its page,
joined from the targeting editor, fed by a real SDK client, read on the results page
(table and forest plot) at desktop and tablet widths. Same fixtures and checks as
test_browser.py (no request leaves 127.0.0.1, no console errors, labelled controls)."""

import random
import re

from pitcrew import Client, Reason

from ..support import make_sdk_key
from . import test_browser
from .test_browser import assert_accessible_basics, browser, session, shot  # noqa: F401

pytestmark = getattr(test_browser, "pytestmark", [])  # skipped without chromium, as there

ONOFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def test_holdout_created_joined_and_read_in_the_browser(session, live_server, admin):  # noqa: F811
    admin.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": ONOFF})
    admin.post("/api/v1/metrics", json={"key": "purchases", "event": "purchase", "type": "conversion"})
    page = session("editor", "hana")
    page.goto("/holdouts")
    page.get_by_label("Key", exact=True).fill("h10")
    page.get_by_label("Held out (%)").fill("10")
    assert_accessible_basics(page)
    page.get_by_role("button", name="Create holdout").click()
    page.wait_for_url(re.compile(r"/holdouts/h10$"))

    page.goto("/flags/checkout/targeting/production")
    page.get_by_label("On: serve the targeting below").check()
    page.get_by_label("Join holdout").select_option("h10")
    page.get_by_role("button", name="Save targeting").first.click()
    page.wait_for_url(re.compile(r"/flags/checkout$"))
    assert "holdout h10" in page.content()

    client = Client(live_server.url, make_sdk_key("production"), poll_interval=1, flush_interval=0.2)
    rng = random.Random(7)
    try:
        assert client.wait_until_ready(10)
        held = 0
        for u in range(3000):
            detail = client.variation_detail("checkout", {"id": f"user-{u}"}, False)
            held += detail.reason == Reason.HOLDOUT
            if rng.random() < (0.2 if detail.reason == Reason.HOLDOUT else 0.4):
                client.track("purchase", {"id": f"user-{u}"})
        assert 200 < held < 400
        assert client.flush(20)
    finally:
        client.close()

    page.goto("/holdouts/h10")
    page.get_by_role("link", name="Results of h10").click()
    page.get_by_label("Metrics", exact=True).select_option(["purchases"])
    page.get_by_role("button", name="Show results").click()
    page.wait_for_url(re.compile(r"metric=purchases"))
    forest = page.locator("svg.chart").first
    assert "Relative lift, measured slice vs held-out units (%)" in forest.inner_html()
    assert page.get_by_role("table").count() == 1 and "winner" in page.content()
    assert_accessible_basics(page)
    shot(page, "holdout-results")
    page.set_viewport_size({"width": 820, "height": 1180})
    page.reload()
    assert_accessible_basics(page)
    shot(page, "holdout-results-tablet")
