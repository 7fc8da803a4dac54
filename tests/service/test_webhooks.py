"""Webhooks end to end: a real receiver on a loopback port, signatures checked with the
``standardwebhooks`` package, retries over simulated time, restarts, rollbacks, SSRF refusals."""

import base64
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.domain import Actor, unit_of_work, webhooks
from service.domain import flags as flag_domain
from service.domain import schedules as schedule_domain
from service.extensions import db
from service.models import AuditEntry, ScheduledChange, Webhook, WebhookAttempt, WebhookDelivery
from service.worker import Worker

from .webhook_receiver import Receiver, verify

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
ACTOR = Actor("tests")


class Clock:
    def __init__(self, now: datetime | None = None):
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def private(monkeypatch):
    """Loopback destinations allowed (WEBHOOK_ALLOW_PRIVATE=1): the receiver lives on 127.0.0.1."""
    monkeypatch.setattr(webhooks.settings, "allow_private", True)
    monkeypatch.setattr(webhooks.settings, "timeout", 2.0)


@pytest.fixture
def receiver():
    server = Receiver().up()
    yield server
    server.release.set()
    server.down()


def subscribe(admin, url, **extra) -> dict:
    response = admin.post("/api/v1/webhooks", json={"url": url, "events": ["*"], **extra})
    assert response.status_code == 201, response.json
    return response.json


def make_flag(key="checkout") -> None:
    flag_domain.create(ACTOR, {"key": key, "kind": "boolean", "variations": BOOL})


def deliveries(**where) -> list[WebhookDelivery]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(WebhookDelivery).filter_by(**where).order_by(WebhookDelivery.id)))


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


# ---------------------------------------------------------------- subscriptions

def test_secret_shown_once_stored_encrypted_never_logged(admin, editor, viewer, private, receiver):
    created = subscribe(admin, receiver.url, events=["flag.created", "targeting.updated"],
                        environments=["production"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert created["events"] == ["flag.created", "targeting.updated"] and created["enabled"] is True
    shown = admin.get(f"/api/v1/webhooks/{created['id']}")
    assert shown.status_code == 200 and "secret" not in shown.json
    assert "secret" not in admin.get("/api/v1/webhooks").json["items"][0]
    stored = db.session.scalar(sa.select(Webhook.secret))
    assert secret not in stored and secret[6:] not in stored
    # Nothing secret in the audit log.
    entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.resource_type == "webhook")).all()
    assert [e.action for e in entries] == ["create"]
    assert secret[6:] not in json.dumps([e.after for e in entries])
    # Admin only, reads included (URLs may carry tokens).
    for client in (editor, viewer):
        assert client.get("/api/v1/webhooks").status_code == 403
        assert client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["*"]}).status_code == 403


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
    ({"url": "http://user:pw@example.com/x", "events": ["*"]}, "url"),
    ({"url": "http:///nohost", "events": ["*"]}, "url"),
    ({"url": "https://example.com/x", "events": ["flag.exploded"]}, "events.0"),
    ({"url": "https://example.com/x", "events": ["*", "flag.created"]}, "events"),
    ({"url": "https://example.com/x", "events": []}, "events"),
    ({"url": "https://example.com/x", "events": ["*"], "environments": ["nowhere"]}, "environments.0"),
    ({"url": "https://example.com/x", "events": ["*"], "format": "xml"}, "format"),
    ({"url": "https://example.com/x", "events": ["*"], "secret": "whsec_mine"}, "secret"),
])
def test_invalid_subscriptions_are_refused_and_change_nothing(admin, body, field):
    response = admin.post("/api/v1/webhooks", json=body)
    assert response.status_code == 400, response.json
    assert field in response.json["error"]["details"], response.json
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Webhook)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.resource_type == "webhook")) == 0


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "[::1]", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
    "[fe80::1]", "224.0.0.1", "0.0.0.0", "100.64.0.1", "[::ffff:127.0.0.1]", "2130706433", "[fd00::1]",
])
def test_private_loopback_link_local_multicast_destinations_are_refused(admin, host):
    response = admin.post("/api/v1/webhooks", json={"url": f"http://{host}:8080/hook", "events": ["*"]})
    assert response.status_code == 400, (host, response.json)
    assert "WEBHOOK_ALLOW_PRIVATE" in response.json["error"]["details"]["url"][0]


def test_public_addresses_are_destinations():
    # Classification only: nothing is sent anywhere.
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert webhooks.address_problem(address) is None
    for address in ("127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "ff02::1", "::ffff:10.0.0.1"):
        assert webhooks.address_problem(address) is not None


def test_rebinding_is_caught_at_delivery_time(admin, monkeypatch, receiver):
    """The name resolved to a public address when the webhook was created, to loopback when sending:
    the attempt is refused after resolution and nothing reaches the receiver."""
    real = socket.getaddrinfo
    answer = {"address": "93.184.216.34"}

    def fake(host, port, *args, **kwargs):
        if host == "hooks.rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["address"], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    created = subscribe(admin, f"http://hooks.rebind.test:{receiver.port}/x")
    answer["address"] = "127.0.0.1"
    make_flag()
    Worker(clock=Clock()).run_once()
    [delivery] = deliveries()
    assert delivery.state == "pending" and delivery.attempts == 1
    assert "Refused" in delivery.last_error and "loopback" in delivery.last_error
    assert receiver.received == []
    log = admin.get(f"/api/v1/webhooks/{created['id']}/deliveries").json["items"][0]
    assert log["attempts"][0]["status"] is None and "loopback" in log["attempts"][0]["error"]


# ---------------------------------------------------------------- delivery and signatures

def test_every_change_is_delivered_signed_per_standard_webhooks(admin, editor, private, receiver):
    hook = subscribe(admin, receiver.url)
    secret = hook["secret"]
    assert editor.post("/api/v1/flags", json={"key": "checkout", "kind": "boolean", "variations": BOOL,
                                              "type": "release"}).status_code == 201
    assert editor.patch("/api/v1/flags/checkout/environments/production", json={"enabled": True}).status_code == 200
    assert editor.patch("/api/v1/flags/checkout", json={"name": "Checkout"}).status_code == 200
    assert editor.delete("/api/v1/flags/checkout").status_code == 200
    assert Worker(clock=Clock()).run_once() >= 4
    payloads = [verify(secret, r) for r in receiver.received]  # raises on a bad signature
    assert [p["type"] for p in payloads] == ["flag.created", "targeting.updated", "flag.updated", "flag.archived"]
    for p, r in zip(payloads, receiver.received, strict=True):
        assert set(p) == {"type", "timestamp", "data"}
        assert datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).tzinfo is not None
        assert r.headers["webhook-signature"].startswith("v1,") and " " not in r.headers["webhook-signature"]
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
        assert r.headers["content-type"] == "application/json"
    targeting = payloads[1]["data"]
    assert targeting["flag"] == "checkout" and targeting["environment"] == "production"
    assert targeting["targeting"]["enabled"] is True and targeting["actor"] == "eddie"
    assert payloads[2]["data"]["changes"] == [{"path": "name", "op": "replace", "before": "checkout",
                                               "after": "Checkout"}]
    # A tampered body fails verification with the independent implementation.
    forged = receiver.received[0]
    forged.body = forged.body.replace(b"checkout", b"checkouT")
    with pytest.raises(Exception, match="signature"):
        verify(secret, forged)
    log = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json["items"]
    assert len(log) == 4 and {d["state"] for d in log} == {"succeeded"}
    first = log[-1]
    assert first["message_id"] == receiver.received[0].id and first["status"] == 200
    assert first["attempts"][0]["latency_ms"] >= 0 and first["response"].startswith("ok xxx")
    assert len(first["response"].encode()) == webhooks.EXCERPT_BYTES
    assert first["payload"]["type"] == "flag.created"


def test_filters_on_event_types_and_environments(admin, editor, private, receiver):
    subscribe(admin, receiver.url, events=["targeting.updated", "flag.created"], environments=["staging"])
    make_flag()
    for env in ("production", "staging", "development"):
        flag_domain.patch_targeting(ACTOR, "checkout", env, {"enabled": True})
    flag_domain.update(ACTOR, "checkout", {"description": "not subscribed"})
    Worker(clock=Clock()).run_once()
    types = [(json.loads(r.body)["type"], json.loads(r.body)["data"].get("environment")) for r in receiver.received]
    assert types == [("flag.created", None), ("targeting.updated", "staging")]


def test_slack_format_sends_a_text_summary(admin, private, receiver):
    subscribe(admin, receiver.url, format="slack", events=["targeting.updated"])
    make_flag()
    flag_domain.patch_targeting(Actor("rita"), "checkout", "production", {"enabled": True})
    Worker(clock=Clock()).run_once()
    [received] = receiver.received
    assert json.loads(received.body) == {"text": "rita changed the targeting of flag `checkout` in production."}


def test_nothing_is_sent_for_a_change_that_rolled_back(admin, editor, private, receiver):
    subscribe(admin, receiver.url)
    # A dry run writes every change through the domain, then rolls back.
    document = {"version": 1, "environment": "production", "flags": [
        {"key": "dry", "kind": "boolean", "variations": BOOL,
         "targeting": {"enabled": True, "off_variation": "off", "fallthrough": {"variation": "on"}}}]}
    result = editor.post("/api/v1/import?dry_run=true", json=document)
    assert result.status_code == 200 and result.json["summary"]["created"] == 1
    # A unit of work that fails after its announcements.
    with pytest.raises(RuntimeError):
        with unit_of_work.deferred():
            make_flag("doomed")
            flag_domain.patch_targeting(ACTOR, "doomed", "production", {"enabled": True})
            db.session.flush()  # the outbox rows exist inside the transaction...
            assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 2
            raise RuntimeError("the transaction fails after the change")
    db.session.rollback()
    # A refused write (400) announces nothing either.
    assert editor.put("/api/v1/flags/missing/environments/production", json={}).status_code in (400, 404)
    assert Worker(clock=Clock()).run_once() == 0
    assert deliveries() == [] and receiver.received == []


def test_outage_of_minutes_then_recovery_and_restarts_deliver_each_once(admin, private, receiver):
    """The receiver is down (connection refused, then 503) for about ten simulated minutes while
    changes keep coming; every worker pass is a fresh Worker (a restart). Afterwards each message
    arrived, and after deduplication by webhook-id exactly once, verified."""
    hook = subscribe(admin, receiver.url, events=["flag.created", "targeting.updated"])
    clock = Clock()
    receiver.down()
    expected = 0
    for minute in range(10):
        make_flag(f"flag-{minute}")
        flag_domain.patch_targeting(ACTOR, f"flag-{minute}", "production", {"enabled": True})
        expected += 2
        if minute == 5:
            receiver.up()
            receiver.status = 503  # back, but failing
        Worker(clock=clock).run_once()
        clock.advance(minutes=1)
    assert deliveries(state="succeeded") == []  # refused, then 503: nothing succeeded yet
    failed = deliveries(state="pending")
    assert len(failed) == expected and all(d.attempts >= 1 for d in failed)
    # Backoff: after the first failure, the next attempt comes 5 s (+-10 %) later; then 5 min.
    first = min(failed, key=lambda d: d.id)
    attempts = db.session.scalars(sa.select(WebhookAttempt.attempted_at).where(
        WebhookAttempt.delivery_id == first.id).order_by(WebhookAttempt.id)).all()
    assert len(attempts) >= 3
    assert timedelta(seconds=4.5) <= attempts[1] - attempts[0] <= timedelta(seconds=60)
    assert timedelta(minutes=4.5) <= attempts[2] - attempts[1] <= timedelta(minutes=6)
    receiver.status = 200
    for _ in range(60):  # a few simulated hours, a restart each time
        Worker(clock=clock).run_once()
        clock.advance(minutes=5)
        if not deliveries(state="pending"):
            break
    assert deliveries(state="pending") == []
    seen = receiver.unique()
    sent = {d.message_id for d in deliveries()}
    assert set(seen) == sent and len(sent) == expected
    secret_payloads = [verify(hook["secret"], r) for r in seen.values()]
    keys = sorted((p["type"], p["data"]["flag"] if isinstance(p["data"]["flag"], str) else p["data"]["flag"]["key"])
                  for p in secret_payloads)
    assert keys == sorted([("flag.created", f"flag-{i}") for i in range(10)]
                          + [("targeting.updated", f"flag-{i}") for i in range(10)])
    assert {d.state for d in deliveries()} == {"succeeded"}


def test_retry_schedule_spans_more_than_a_day_then_the_webhook_is_disabled(admin, private, receiver):
    hook = subscribe(admin, receiver.url, events=["flag.created"])
    receiver.status = 500
    clock = Clock()
    make_flag()
    times = []
    for _ in range(200):
        worker = Worker(clock=clock)
        if worker.run_once():
            times.append(clock.now)
        [delivery] = deliveries()
        if delivery.state != "pending":
            break
        clock.advance(minutes=10)
    [delivery] = deliveries()
    assert delivery.state == "failed" and delivery.attempts == len(webhooks.RETRY_DELAYS) + 1 == 8
    assert times[-1] - times[0] >= timedelta(hours=24)
    webhook = admin.get(f"/api/v1/webhooks/{hook['id']}").json
    assert webhook["enabled"] is False and "more than 24 hours" in webhook["disabled_reason"]
    # Disabled: new changes are not queued for it; enabling it again starts clean.
    make_flag("later")
    assert len(deliveries()) == 1
    enabled = admin.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}).json
    assert enabled["enabled"] and enabled["failing_since"] is None and enabled["disabled_reason"] is None
    actions = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.resource_type == "webhook")
                                 .order_by(AuditEntry.id)).all()
    assert actions == ["create", "disable", "update"]


def test_410_disables_at_once_and_manual_retry_redelivers(admin, private, receiver):
    hook = subscribe(admin, receiver.url, events=["flag.created"])
    receiver.status = 410
    make_flag()
    Worker(clock=Clock()).run_once()
    webhook = admin.get(f"/api/v1/webhooks/{hook['id']}").json
    assert webhook["enabled"] is False and "410" in webhook["disabled_reason"]
    [delivery] = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json["items"]
    assert delivery["status"] == 410 and delivery["attempt_count"] == 1
    retry = f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry"
    assert admin.post(retry).status_code == 409  # disabled: enable first
    assert admin.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}).status_code == 200
    receiver.status = 200
    assert admin.post(retry).status_code == 202
    Worker(clock=Clock()).run_once()
    again = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}").json
    assert again["state"] == "succeeded" and again["attempt_count"] == 2
    assert [a["manual"] for a in again["attempts"]] == [True, False]
    assert [r.id for r in receiver.received] == [delivery["message_id"]] * 2  # the same webhook-id
    assert admin.post(f"/api/v1/webhooks/{hook['id']}/deliveries/999999/retry").status_code == 404


def test_rotation_signs_with_both_secrets_during_the_overlap(admin, private, receiver):
    hook = subscribe(admin, receiver.url, events=["flag.created"])
    old = hook["secret"]
    rotated = admin.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", json={"overlap_hours": 2})
    assert rotated.status_code == 200
    new = rotated.json["secret"]
    assert new != old and rotated.json["previous_secret_expires_at"] is not None
    make_flag("during")
    clock = Clock()
    Worker(clock=clock).run_once()
    during = receiver.received[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(new, during)
    verify(old, during)
    clock.advance(hours=3)
    make_flag("after")
    Worker(clock=clock).run_once()
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verify(new, after)
    with pytest.raises(Exception, match="signature"):
        verify(old, after)
    assert "secret" not in json.dumps(db.session.scalars(sa.select(AuditEntry.after).where(
        AuditEntry.action == "rotate_secret")).all()).replace("previous_secret_expires_at", "")


def test_a_slow_endpoint_holds_neither_the_worker_nor_longer_than_the_timeout(admin, private, receiver, monkeypatch):
    monkeypatch.setattr(webhooks.settings, "timeout", 1.0)
    subscribe(admin, receiver.url, events=["flag.created"])
    receiver.hang.set()  # the receiver never answers (until released)
    for i in range(6):
        make_flag(f"slow-{i}")
    make_flag("scheduled")
    flag_domain.patch_targeting(ACTOR, "scheduled", "staging", {"enabled": True})
    worker = Worker(poll_interval=0.05, senders=2)
    runner = threading.Thread(target=_run_in_app(worker), daemon=True)
    runner.start()
    try:
        # A scheduled change due now is applied while every sender is stuck on the endpoint.
        schedule_domain.create(ACTOR, "scheduled", "staging", {
            "at": datetime.now(UTC) + timedelta(milliseconds=300), "patch": {"enabled": False}})
        wait_for(lambda: _applied() == 1, 10)
        # Each attempt ends at the deadline, and at most max_in_flight (2) hit the endpoint at once.
        wait_for(lambda: len([d for d in deliveries() if d.attempts >= 1]) >= 2, 10)
    finally:
        worker.stop()
        runner.join(15)
        receiver.release.set()
    attempts = db.session.scalars(sa.select(WebhookAttempt)).all()
    assert attempts and all(a.status is None and "timed out" in a.error and a.latency_ms < 2500 for a in attempts)
    # At most max_in_flight (2) attempts overlapped in time (each attempt: [end - latency, end]).
    spans = [(a.attempted_at - timedelta(milliseconds=a.latency_ms), a.attempted_at) for a in attempts]
    overlap = max(sum(1 for s, e in spans if s < end - timedelta(milliseconds=50) and e > end - timedelta(
        milliseconds=50)) for _, end in spans)
    assert len(attempts) >= 2 and 1 <= overlap <= webhooks.settings.max_in_flight == 2
    assert not runner.is_alive()


def _applied() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(ScheduledChange).where(
        ScheduledChange.state == "applied"))


def _run_in_app(worker):
    from flask import current_app

    app = current_app._get_current_object()

    def run():
        with app.app_context():
            worker.run()

    return run


def test_a_worker_killed_mid_delivery_is_replaced_and_each_message_arrives_once(admin, private, receiver,
                                                                                database_url, tmp_path):
    """Real worker processes: the first is killed (SIGKILL) while its requests hang at the receiver;
    its leases expire and a new worker sends them again. After deduplication by webhook-id the
    receiver has each message exactly once, each verified."""
    import signal

    from .test_process_workers import start_worker_with, stop

    hook = subscribe(admin, receiver.url, events=["flag.created"])
    receiver.hang.set()
    make_flag("first")
    make_flag("second")
    extra = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT": "2"}  # leases of 6 s
    with open(tmp_path / "worker.log", "wb") as log:
        killed = start_worker_with(database_url, log, extra)
        try:
            wait_for(lambda: len(receiver.received) >= 2, 30)  # both requests are in flight, held
            killed.send_signal(signal.SIGKILL)
            killed.wait(10)
        finally:
            stop(killed)
        assert deliveries(state="pending") and not db.session.scalars(sa.select(WebhookAttempt)).all()
        receiver.hang.clear()
        receiver.release.set()
        replacement = start_worker_with(database_url, log, extra)
        try:
            wait_for(lambda: not deliveries(state="pending"), 60)
        finally:
            stop(replacement)
    assert len(receiver.received) >= 4  # each sent twice: once to the dead worker's held request
    seen = receiver.unique()
    assert set(seen) == {d.message_id for d in deliveries()} and len(seen) == 2
    assert sorted(verify(hook["secret"], r)["data"]["flag"]["key"] for r in seen.values()) == ["first", "second"]
    assert {d.state for d in deliveries()} == {"succeeded"}
