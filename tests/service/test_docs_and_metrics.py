"""/api/docs works offline, the OpenAPI document declares the statuses the service answers, /metrics
names its charset once."""

import re


def test_docs_page_loads_only_local_assets(anonymous):
    page = anonymous.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/api/docs/assets/") for u in urls), urls
    assert "http://" not in html and "https://" not in html  # no CDN
    for url in urls:
        asset = anonymous.get(url)
        assert asset.status_code == 200 and len(asset.data) > 1000, url
        assert asset.mimetype in ("text/css", "text/javascript", "application/javascript"), asset.mimetype
    assert "SwaggerUIBundle" in anonymous.get("/api/docs/assets/swagger-ui-bundle.js").get_data(as_text=True)
    missing = anonymous.get("/api/docs/assets/..%2Fsecret-key")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def test_openapi_declares_400_not_422_for_validation_errors(anonymous):
    spec = anonymous.get("/api/openapi.json").json
    declared = {status for item in spec["paths"].values() for operation in item.values()
                if isinstance(operation, dict) for status in operation.get("responses", {})}
    assert "422" not in declared
    flags_post = spec["paths"]["/api/v1/flags"]["post"]["responses"]
    assert "400" in flags_post
    evaluate = spec["paths"]["/sdk/v1/evaluate"]["post"]["responses"]
    assert "400" in evaluate and "422" not in evaluate


def test_validation_error_status_matches_the_document(editor):
    response = editor.post("/api/v1/flags", json={"key": "Bad Key", "kind": "boolean", "variations": []})
    assert response.status_code == 400 and response.json["error"]["code"] == "validation_error"


def test_metrics_content_type_names_one_charset(anonymous):
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain") and content_type.count("charset") == 1, content_type
