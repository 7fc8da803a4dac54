"""Health, readiness, Prometheus metrics, JSON request logs, the OpenAPI document, the audit log."""

import logging

from service.observability import JsonFormatter


def test_health_and_readiness(anonymous):
    assert anonymous.get("/healthz").json == {"status": "ok"}
    response = anonymous.get("/readyz")
    assert response.status_code == 200 and response.json["database"] == "ok"


def test_metrics_count_requests_by_route_and_status(anonymous, viewer):
    viewer.get("/api/v1/environments")
    body = anonymous.get("/metrics").get_data(as_text=True)
    assert 'pitcrew_http_requests_total{method="GET",route="/api/v1/environments",status="200"}' in body
    assert "pitcrew_http_request_duration_seconds_bucket" in body


def test_request_log_is_json_without_secrets(viewer, caplog):
    with caplog.at_level(logging.INFO, logger="pitcrew.request"):
        viewer.get("/api/v1/environments", headers={"X-Request-Id": "abc123"})
    records = [r for r in caplog.records if r.name == "pitcrew.request"]
    assert records, "no request log line"
    fields = records[-1].fields
    assert fields["request_id"] == "abc123" and fields["route"] == "/api/v1/environments"
    assert fields["status"] == 200 and fields["actor"] == "vera"
    line = JsonFormatter().format(records[-1])
    assert viewer.token not in line and "Bearer" not in line


def test_openapi_document_and_docs(anonymous):
    spec = anonymous.get("/api/openapi.json")
    assert spec.status_code == 200
    paths = spec.json["paths"]
    assert "/api/v1/environments" in paths and "/api/v1/tokens/{token_id}" in paths
    assert spec.json["openapi"].startswith("3.")
    assert anonymous.get("/api/docs").status_code == 200


def test_audit_filters_and_pagination(admin):
    for i in range(5):
        admin.post("/api/v1/environments", json={"key": f"env-{i}"})
    first = admin.get("/api/v1/audit?resource_type=environment&limit=2").json
    assert len(first["items"]) == 2 and first["next_cursor"]
    seen = [e["resource_key"] for e in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = admin.get(f"/api/v1/audit?resource_type=environment&limit=2&cursor={cursor}").json
        seen += [e["resource_key"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [f"env-{i}" for i in reversed(range(5))]
    assert admin.get("/api/v1/audit?actor=nobody").json["items"] == []
    assert admin.get("/api/v1/audit?since=2999-01-01T00:00:00Z").json["items"] == []
    bad = admin.get("/api/v1/audit?cursor=zzz")
    assert bad.status_code == 400 and "cursor" in bad.json["error"]["details"]
