"""The console over Flask's test client: sign-in and sessions, CSRF, roles,
version conflicts, the targeting editor's field errors, and that every write
goes through the domain (audit entries, versions)."""

import re

import pytest
import sqlalchemy as sa

from service.domain import Actor
from service.domain import flags as flag_domain
from service.domain import tokens as token_domain
from service.extensions import db
from service.models import AuditEntry, Flag, Token

from .helpers import Console, signed_in, token

BOOLEAN = {"key": "checkout", "kind": "boolean",
           "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]}


@pytest.fixture
def console(app):
    return signed_in(app, "editor", "erin")


@pytest.fixture
def flag(admin):
    response = admin.post("/api/v1/flags", json=BOOLEAN)
    assert response.status_code == 201
    return response.json


def audit_count() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


def stored_flag(key="checkout") -> Flag:
    db.session.expire_all()
    return flag_domain.get(key)


# ---------------------------------------------------------------- sign-in and sessions

def test_pages_need_a_session_and_sign_in_sets_a_safe_cookie(app):
    c = Console(app.test_client())
    response = c.get("/flags?tag=x")
    assert response.status_code == 303 and "/login?next=/flags?tag%3Dx" in response.headers["Location"]
    c.get("/login")
    assert c.post("/login", {"token": "pc_admin_nope"}).status_code == 401
    assert "Invalid or revoked token" in c.page
    sdk_key = token_domain.create_sdk_key(Actor("t"), __import__("service.domain.environments", fromlist=["get"])
                                          .get("production"))[1]
    assert c.post("/login", {"token": sdk_key}).status_code == 401 and "SDK key" in c.page
    response = c.post("/login?next=/flags?tag%3Dx", {"token": token("viewer")})
    assert response.status_code == 303 and response.headers["Location"] == "/flags?tag=x"
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie" and "pitcrew_session=" in v)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert c.get("/flags").status_code == 200
    secret = token("viewer")
    assert secret not in cookie  # the cookie never carries the token


def test_cookie_is_secure_over_https_and_forwarded_proto_needs_a_trusted_proxy(app):
    client = app.test_client()
    c = Console(client)
    c.get("/login", base_url="https://console.example")
    csrf = c.csrf()
    response = client.post("/login", base_url="https://console.example",
                           data={"token": token("viewer"), "csrf_token": csrf},
                           headers={"Referer": "https://console.example/login"})
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    plain = Console(app.test_client())
    plain.get("/login", headers={"X-Forwarded-Proto": "https"})
    response = plain.post("/login", {"token": token("viewer")}, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 303 and "Secure" not in response.headers["Set-Cookie"]


def test_forwarded_proto_counts_behind_a_configured_proxy(database_url):
    from service import create_app
    from service.config import normalise_database_url

    proxied = create_app({"SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url), "TESTING": True,
                          "TRUSTED_PROXIES": 1})
    client = proxied.test_client()
    response = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200 and "Secure" in response.headers["Set-Cookie"]


def test_revoking_the_token_ends_the_session(app):
    c = Console(app.test_client())
    secret = token("editor", "temp")
    c.login(secret)
    assert c.get("/flags").status_code == 200
    token_id = db.session.scalar(sa.select(Token.id).where(Token.name == "temp"))
    token_domain.revoke_token(Actor("tests"), token_id)
    response = c.get("/flags")
    assert response.status_code == 303 and "ended=1" in response.headers["Location"]
    assert c.get("/flags").status_code == 303  # the session is gone for good


def test_logout_clears_the_session_and_needs_csrf(console):
    assert console.post("/logout", csrf=False).status_code == 400
    assert console.get("/flags").status_code == 200
    console.get("/flags")
    response = console.post("/logout")
    assert response.status_code == 303
    assert console.get("/flags").status_code == 303


def _session_cookie(console) -> str:
    cookie = console.client.get_cookie("pitcrew_session")
    assert cookie is not None
    return cookie.value


def test_a_copy_of_the_cookie_is_refused_after_sign_out(app, console):
    stolen = _session_cookie(console)
    assert console.post("/logout").status_code == 303
    thief = Console(app.test_client())
    thief.client.set_cookie("pitcrew_session", stolen)
    response = thief.get("/flags")
    assert response.status_code == 303 and "ended=1" in response.headers["Location"]


def test_signing_out_ends_only_that_browser(app):
    secret = token("editor", "two-browsers")
    laptop, phone = Console(app.test_client()), Console(app.test_client())
    laptop.login(secret)
    phone.login(secret)
    assert laptop.post("/logout").status_code == 303
    assert phone.get("/flags").status_code == 200
    assert laptop.get("/flags").status_code == 303


def test_the_cookie_holds_a_session_id_not_the_token_and_an_expired_session_ends(app, console):
    from flask.sessions import SecureCookieSessionInterface

    from service.models import ConsoleSession
    from service.models.types import utcnow

    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    data = serializer.loads(_session_cookie(console))
    row = db.session.scalar(sa.select(ConsoleSession).where(
        ConsoleSession.session_hash == token_domain.hash_secret(data["sid"])))
    assert row is not None and row.ended_at is None
    assert token("editor", "erin") not in str(data)
    row.expires_at = utcnow() - __import__("datetime").timedelta(seconds=1)
    db.session.commit()
    response = console.get("/flags")
    assert response.status_code == 303 and "ended=1" in response.headers["Location"]


def test_housekeeping_forgets_sessions_ended_or_expired_a_day_ago(app, console):
    from datetime import timedelta

    from service.models import ConsoleSession
    from service.models.types import utcnow

    assert console.post("/logout").status_code == 303
    live = Console(app.test_client())
    live.login(token("viewer"))
    count = lambda: db.session.scalar(sa.select(sa.func.count()).select_from(ConsoleSession))  # noqa: E731
    before = count()
    assert token_domain.prune_console_sessions(utcnow()) == 0  # ended just now: kept for a day
    assert token_domain.prune_console_sessions(utcnow() + timedelta(days=1, minutes=1)) >= 1
    assert count() < before
    assert live.get("/flags").status_code == 200  # a live session is never pruned before it expires


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "evil"])
def test_sign_in_never_redirects_off_site(app, target):
    c = Console(app.test_client())
    c.get("/login")
    response = c.post(f"/login?next={target}", {"token": token("viewer")})
    assert response.headers["Location"] == "/"


def test_security_headers(console):
    response = console.get("/flags")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"


# ---------------------------------------------------------------- CSRF

def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(console, flag):
    before = audit_count()
    response = console.post("/flags/new", {"key": "sneaky", "kind": "boolean", "variations.0.key": "on",
                                           "variations.0.value": "true", "variations.1.key": "off",
                                           "variations.1.value": "false"}, csrf=False)
    assert response.status_code == 400 and "security token" in console.page
    toggle = console.post("/flags/checkout/environments/production/toggle",
                          {"enabled": "true", "version": str(flag["version"])}, csrf=False)
    assert toggle.status_code == 400
    forged = console.post("/flags/checkout/environments/production/toggle",
                          {"enabled": "true", "version": str(flag["version"]), "csrf_token": "forged"}, csrf=False)
    assert forged.status_code == 400
    assert audit_count() == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Flag).where(Flag.key == "sneaky")) == 0
    assert stored_flag().version == flag["version"]
    assert flag_domain.targeting_for(stored_flag(), __import__("service.domain.environments", fromlist=["get"])
                                     .get("production"))["enabled"] is False


def test_the_api_with_a_bearer_token_needs_no_csrf_token_and_ignores_the_session(app, console, admin):
    response = admin.post("/api/v1/flags", json={**BOOLEAN, "key": "via-api"})
    assert response.status_code == 201
    # The console's session cookie does not authenticate the API (so it cannot be forged into an API call).
    response = console.client.post("/api/v1/flags", json={**BOOLEAN, "key": "via-cookie"})
    assert response.status_code == 401


# ---------------------------------------------------------------- roles

def test_a_viewer_sees_no_write_controls_and_cannot_post(app, flag, admin):
    admin.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"})
    admin.post("/api/v1/experiments", json={"key": "exp", "flag": "checkout", "environment": "production",
                                            "primary_metric": "buys"})
    c = Console(app.test_client())
    c.login(token("viewer", "vic"))
    for path in ("/flags", "/flags/checkout", "/flags/checkout/targeting/production", "/flags/checkout/compare",
                 "/flags/checkout/history", "/segments", "/experiment-metrics", "/experiment-metrics/buys", "/environments",
                 "/environments/production", "/experiments", "/experiments/exp", "/audit"):
        assert c.get(path).status_code == 200, path
        forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]*)"', c.page)
        assert forms == ["/logout"], (path, forms)  # the only form a viewer gets is sign-out
        assert "Turn on" not in c.page and "New flag" not in c.page and "Save" not in c.page
    assert c.get("/tokens").status_code == 403
    assert "Tokens" not in re.search(r"<nav.*?</nav>", c.page, re.S).group(0)
    before, flag_version = audit_count(), stored_flag().version
    response = c.post("/flags/checkout/environments/production/toggle",
                      {"enabled": "true", "version": str(flag_version)})
    assert response.status_code == 403
    assert c.post("/experiments/exp/start", {"version": "1"}).status_code == 403
    assert c.post("/tokens", {"name": "x", "role": "admin"}).status_code == 403
    assert audit_count() == before and stored_flag().version == flag_version
    # The calculator changes nothing: viewers may use it.
    assert c.post("/tools/sample-size", {"metric": "conversion", "baseline": "10", "mde_scale": "relative",
                                         "mde": "5", "alpha": "0.05", "power": "0.8",
                                         "variations": "2"}).status_code == 200


def test_an_editor_cannot_manage_tokens_or_keys(console):
    assert console.get("/tokens").status_code == 403
    assert console.post("/environments/production/sdk-keys", {"name": "x"}).status_code == 403
    assert console.post("/environments", {"key": "qa"}).status_code == 403


# ---------------------------------------------------------------- flags

def test_create_flag_toggle_and_audit_name_the_console_user(console):
    console.get("/flags/new")
    response = console.post("/flags/new", {"key": "new-flag", "name": "New", "kind": "string",
                                           "variations.0.key": "a", "variations.0.value": "blue",
                                           "variations.1.key": "b", "variations.1.value": "green",
                                           "tags": "team-x, web", "temporary": "true", "action": "save"})
    assert response.status_code == 303 and response.headers["Location"] == "/flags/new-flag"
    flag = stored_flag("new-flag")
    assert flag.variations[1]["value"] == "green" and flag.tags == ["team-x", "web"]
    console.get("/flags/new-flag")
    version = Console.version(console.page)
    response = console.post("/flags/new-flag/environments/production/toggle",
                            {"enabled": "true", "version": version, "comment": "launch"})
    assert response.status_code == 303
    entry = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (entry.actor, entry.action, entry.environment, entry.comment) == ("erin", "update_targeting",
                                                                              "production", "launch")
    assert console.get("/flags?tag=team-x").status_code == 200 and "new-flag" in console.page
    assert console.get("/flags?tag=other").status_code == 200 and "new-flag" not in console.page


def test_create_flag_errors_are_shown_at_the_fields(console):
    console.get("/flags/new")
    response = console.post("/flags/new", {"key": "Bad Key", "kind": "number", "variations.0.key": "a",
                                           "variations.0.value": "not-a-number", "action": "save"})
    assert response.status_code == 400
    assert re.search(r'id="f-key"[^>]*aria-invalid="true"', console.page)
    response = console.post("/flags/new", {"key": "good", "kind": "number", "variations.0.key": "a",
                                           "variations.0.value": "abc", "variations.1.key": "b",
                                           "variations.1.value": "2", "action": "save"})
    assert response.status_code == 400
    assert re.search(r'id="f-variations-0-value"[^>]*aria-invalid="true"', console.page)
    assert "must be a number value" in console.page


def test_targeting_editor_adds_a_rule_with_a_rollout_and_maps_errors_to_fields(console, flag):
    console.get("/flags/checkout/targeting/production")
    version = Console.version(console.page)
    base = {"version": version, "enabled": "true", "off_variation": "off", "fallthrough.kind": "variation",
            "fallthrough.variation": "off"}
    # A structural action re-renders with a new rule and saves nothing.
    response = console.post("/flags/checkout/targeting/production", {**base, "action": "add_rule"})
    assert response.status_code == 200 and 'name="rules.0.id" type="text" value="rule-1"' in console.page
    assert stored_flag().version == flag["version"]
    rule = {"rules.0.id": "beta", "rules.0.conditions.0.attribute": "age", "rules.0.conditions.0.op": "gt",
            "rules.0.conditions.0.values": "oops", "rules.0.serve.kind": "rollout",
            "rules.0.serve.rollout.weights.0.0": "on", "rules.0.serve.rollout.weights.0.1": "30",
            "rules.0.serve.rollout.weights.1.0": "off", "rules.0.serve.rollout.weights.1.1": "60"}
    response = console.post("/flags/checkout/targeting/production", {**base, **rule, "action": "save"})
    assert response.status_code == 400
    assert re.search(r'id="f-rules-0-conditions-0-values"[^>]*aria-invalid="true"', console.page)
    assert "must be a number" in console.page and "weights must sum to 10000, not 9000" in console.page
    assert stored_flag().version == flag["version"]
    rule.update({"rules.0.conditions.0.values": "18", "rules.0.serve.rollout.weights.1.1": "70"})
    response = console.post("/flags/checkout/targeting/production", {**base, **rule, "action": "save"})
    assert response.status_code == 303
    _, targeting = flag_domain.get_targeting("checkout", "production")
    assert targeting["enabled"] is True
    assert targeting["rules"] == [{"id": "beta", "description": "", "conditions": [
        {"op": "gt", "negate": False, "attribute": "age", "values": [18]}],
        "serve": {"rollout": {"weights": [["on", 3000], ["off", 7000]]}}}]


def test_checkbox_fields_read_the_box_after_its_hidden_default(console, flag):
    console.get("/flags/checkout/targeting/production")
    response = console.post("/flags/checkout/targeting/production", {
        "version": Console.version(console.page), "enabled": ["false", "true"], "off_variation": "off",
        "fallthrough.kind": "variation", "fallthrough.variation": "on", "action": "save"})
    assert response.status_code == 303
    assert flag_domain.get_targeting("checkout", "production")[1]["enabled"] is True


def test_a_stale_edit_is_a_conflict_not_an_overwrite(console, flag, admin):
    console.get("/flags/checkout/targeting/production")
    stale = Console.version(console.page)
    # Someone else changes the flag meanwhile.
    changed = admin.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True})
    assert changed.status_code == 200
    current = stored_flag().version
    response = console.post("/flags/checkout/targeting/production", {
        "version": stale, "enabled": "false", "off_variation": "on", "fallthrough.kind": "variation",
        "fallthrough.variation": "on", "action": "save"})
    assert response.status_code == 409 and "Conflict: this changed since you opened it" in console.page
    assert stored_flag().version == current
    _, targeting = flag_domain.get_targeting("checkout", "production")
    assert targeting["enabled"] is True and targeting["off_variation"] == "off"
    # A toggle rendered from the old version is refused too.
    response = console.post("/flags/checkout/environments/staging/toggle", {"enabled": "true", "version": stale})
    assert response.status_code == 409 and stored_flag().version == current


def test_compare_copy_history_and_rollback(console, flag, admin):
    admin.patch("/api/v1/flags/checkout/environments/staging", json={"enabled": True})
    console.get("/flags/checkout/compare?left=staging&right=production")
    assert "Differences (1)" in console.page
    version = Console.version(console.page)
    response = console.post("/flags/checkout/copy", {"source": "staging", "target": "production",
                                                     "version": version})
    assert response.status_code == 303
    assert flag_domain.get_targeting("checkout", "production")[1]["enabled"] is True
    console.get("/flags/checkout/compare?left=staging&right=production")
    assert "identical targeting" in console.page
    console.get("/flags/checkout/history")
    assert "copy_targeting" in console.page and "environments.production.enabled" in console.page
    current = stored_flag().version
    response = console.post("/flags/checkout/rollback", {"target": "1", "version": str(current)})
    assert response.status_code == 303
    flag_now = stored_flag()
    assert flag_now.version == current + 1
    assert flag_domain.get_targeting("checkout", "production")[1]["enabled"] is False
    assert flag_domain.get_targeting("checkout", "staging")[1]["enabled"] is False


def test_flag_list_shows_status_and_last_evaluation(console, flag, sdk, admin):
    admin.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True})
    response = sdk.post("/sdk/v1/events", json={"events": [], "evaluations": [
        {"flag": "checkout", "variation": "on", "count": 7, "start": "2024-01-01T00:00:00Z",
         "end": "2024-01-01T00:00:10Z"}]})
    assert response.status_code == 202
    console.get("/flags")
    row = re.search(r"<tr>\s*<td><a href=\"/flags/checkout\".*?</tr>", console.page, re.S).group(0)
    assert row.count("status-on") == 1 and row.count("status-off") == 2
    assert "evaluated" in row and "never evaluated" in row


# ---------------------------------------------------------------- environments, keys, tokens

def test_sdk_key_secret_is_shown_once_and_works(app, admin):
    c = Console(app.test_client())
    c.login(token("admin", "ada"))
    c.get("/environments/production")
    response = c.post("/environments/production/sdk-keys", {"name": "web"})
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    secret = re.search(r'value="(pc_sdk_[^"]+)" data-secret', c.page).group(1)
    assert 'data-copy="#new-sdk-key"' in c.page
    config = app.test_client().get("/sdk/v1/config", headers={"Authorization": f"Bearer {secret}"})
    assert config.status_code == 200
    c.get("/environments/production")
    assert secret not in c.page and secret[:11] in c.page  # only the prefix, afterwards


def test_tokens_page_creates_and_revokes(app):
    c = Console(app.test_client())
    c.login(token("admin", "ada"))
    c.get("/tokens")
    response = c.post("/tokens", {"name": "pat", "role": "editor"})
    assert response.status_code == 201
    secret = re.search(r'value="(pc_admin_[^"]+)" data-secret', c.page).group(1)
    other = Console(app.test_client())
    other.login(secret)
    assert other.get("/flags").status_code == 200
    token_id = db.session.scalar(sa.select(Token.id).where(Token.name == "pat"))
    c.get("/tokens")
    assert c.post(f"/tokens/{token_id}/revoke").status_code == 303
    assert other.get("/flags").status_code == 303
    bad = c.post("/tokens", {"name": "", "role": "root"})
    assert bad.status_code == 400 and re.search(r'id="f-role"[^>]*aria-invalid="true"', c.page)


def test_audit_filters(console, flag):
    console.get("/audit?resource_type=flag&resource_key=checkout")
    assert "checkout" in console.page and "create" in console.page
    console.get("/audit?actor=nobody")
    assert "No entries match" in console.page
    assert console.get("/audit?since=not-a-date").status_code == 400


# ---------------------------------------------------------------- experiments and tools

def test_experiment_lifecycle_through_the_console(console, flag, admin):
    admin.post("/api/v1/metrics", json={"key": "buys", "event": "buy", "type": "conversion"})
    console.get("/experiments/new")
    response = console.post("/experiments/new", {"key": "exp", "name": "Checkout test", "flag": "checkout",
                                                 "environment": "production", "primary_metric": "buys",
                                                 "engine": "frequentist", "alpha": "0.05", "target_mde": "10",
                                                 "chance_to_win": "95", "correction": ""})
    assert response.status_code == 303, console.page[-2000:]
    experiment = admin.get("/api/v1/experiments/exp").json
    assert experiment["analysis"]["target_mde"] == pytest.approx(0.1) and experiment["status"] == "draft"
    console.get("/experiments/exp")
    version = Console.version(console.page)
    # Weights that do not sum to 100 % are refused at the field, nothing changes.
    response = console.post("/experiments/exp/setup", {
        "version": version, "variations.0.variation": "on", "variations.0.weight": "60",
        "variations.1.variation": "off", "variations.1.weight": "30", "control": "off", "traffic": "100",
        "primary_metric": "buys", "engine": "frequentist", "alpha": "0.05", "target_mde": "10",
        "chance_to_win": "95"})
    assert response.status_code == 400 and "Weights must sum to 10000" in console.page
    response = console.post("/experiments/exp/setup", {
        "version": version, "variations.0.variation": "on", "variations.0.weight": "50",
        "variations.1.variation": "off", "variations.1.weight": "50", "control": "off", "traffic": "100",
        "primary_metric": "buys", "engine": "frequentist", "alpha": "0.05", "target_mde": "10",
        "chance_to_win": "95"})
    assert response.status_code == 303
    version = str(admin.get("/api/v1/experiments/exp").json["version"])
    assert console.post("/experiments/exp/start", {"version": version}).status_code == 303
    console.get("/experiments/exp")
    assert "Start experiment" not in console.page and "Stop experiment" in console.page
    assert "rule <code>experiment-exp</code>: every unit that reaches it" in console.page
    assert "the flag is off there" in console.page
    assert console.page.count("<svg") >= 1 and "Download CSV" in console.page
    version = Console.version(console.page)
    response = console.post("/experiments/exp/conclude", {"version": version, "outcome": "ship",
                                                          "decision_variation": "", "summary": "x"})
    assert response.status_code == 400 and "names the variation shipped" in console.page
    response = console.post("/experiments/exp/conclude", {"version": version, "outcome": "ship",
                                                          "decision_variation": "on", "released_variation": "on",
                                                          "summary": "Ship it"})
    assert response.status_code == 303
    concluded = admin.get("/api/v1/experiments/exp").json
    assert concluded["status"] == "concluded" and concluded["released_variation"] == "on"
    assert concluded["decision"] == {"outcome": "ship", "variation": "on", "summary": "Ship it"}
    csv_text = console.get("/experiments/exp/results.csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].endswith("chance_to_beat_control,risk")


def test_sample_size_calculator_makes_the_mde_scale_explicit(console):
    from service.analysis import power

    console.get("/tools/sample-size")
    form = {"metric": "conversion", "baseline": "10", "stddev": "", "mde": "5", "units_per_variation": "",
            "alpha": "0.05", "power": "0.8", "variations": "2"}
    console.post("/tools/sample-size", {**form, "mde_scale": "relative"})
    relative = power.sample_size(0.10, 0.05).per_variation
    assert f"{relative:,}" in console.page and "relative (% of baseline)" in console.page
    console.post("/tools/sample-size", {**form, "mde_scale": "absolute", "mde": "1"})
    absolute = power.sample_size(0.10, 0.01, relative=False).per_variation
    assert f"{absolute:,}" in console.page and "absolute (percentage points)" in console.page
    response = console.post("/tools/sample-size", {**form, "mde_scale": "relative", "baseline": "150"})
    assert response.status_code == 400 and re.search(r'id="f-baseline"[^>]*aria-invalid="true"', console.page)
