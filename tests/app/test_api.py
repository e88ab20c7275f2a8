"""The API beside the webhooks: the OpenAPI document (webhook paths included), the docs page,
the password in front of /api/, and the receiver answering 503 until the server started."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient
from streamlit.runtime import Runtime

from callstatus.app.asgi import build_app
from callstatus.core import plivo
from tests.factories import app_client, make_settings

PASSWORD = "correct-horse-battery"


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_the_openapi_document_describes_the_webhooks_and_healthz(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert {webhook.path for webhook in plivo.WEBHOOKS} <= set(paths)
    assert len(plivo.WEBHOOKS) == 8  # Plivo's seven, and PHLO reports
    for webhook in plivo.WEBHOOKS:
        item = paths[webhook.path]
        assert set(item) == {"get", "post"}, webhook.path
        form = item["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        assert set(form["schema"]["properties"]) == set(webhook.parameters), webhook.path
        query = {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
        # A PHLO report may carry its shared secret in the query too.
        secret = {plivo.PHLO_SECRET_PARAM} if webhook.kind == plivo.PHLO_KIND else set()
        assert query == set(webhook.parameters) | secret, webhook.path
        assert webhook.kind in item["post"]["summary"]
        for operation in item.values():
            assert "403" in operation["responses"] and "200" in operation["responses"]
            xml = "application/xml" in operation["responses"]["200"].get("content", {})
            assert xml == (webhook.reply is not plivo.Reply.EMPTY), webhook.path
    assert (
        "CallUUID"
        in paths["/plivo/hangup"]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"]["properties"]
    )
    assert "DialBLegHangupCauseCode" in {
        p["name"] for p in paths["/plivo/dial/callback"]["get"]["parameters"]
    }
    phlo = paths[plivo.PHLO_PATH]["post"]
    assert "application/json" in phlo["requestBody"]["content"]
    assert "PHLO_SECRET" in phlo["responses"]["403"]["description"]
    health = paths["/healthz"]
    assert set(health) == {"get"}
    assert {"200", "503"} <= set(health["get"]["responses"])
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_the_openapi_document_is_valid_openapi_with_its_security_and_error_shape(
    tmp_path: Path,
) -> None:
    settings = {"DASHBOARD_PASSWORD": PASSWORD, "CALLSTATUS_API_TOKENS": "a-token-0123456789"}
    with app_client(tmp_path, **settings) as client:
        document = client.get("/api/openapi.json", headers=_basic(PASSWORD)).json()
    validate(document)  # raises on any departure from the OpenAPI 3.1 schema
    assert set(document["components"]["securitySchemes"]) == {"password", "token"}
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    for path, method, operation in operations:
        # Bad parameters are answered 400 in the one error shape, never FastAPI's 422.
        assert "422" not in operation["responses"], (path, method)
        protected = path.startswith(("/api/", "/metrics"))
        assert ("security" in operation) is protected, (path, method)
    assert document["paths"]["/api/reconcile"]["post"]["security"] == [{"password": []}]
    assert document["paths"]["/api/reconcile"]["post"]["responses"]["400"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
    }


def test_the_docs_page_is_html_pointing_at_the_document(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/api/openapi.json" in response.text


@pytest.mark.parametrize("path", ["/api/docs", "/api/openapi.json", "/api/nothing", "/metrics"])
def test_the_api_is_behind_the_dashboard_password(tmp_path: Path, path: str) -> None:
    with app_client(tmp_path, DASHBOARD_PASSWORD=PASSWORD) as client:
        missing = client.get(path)
        wrong = client.get(path, headers=_basic("guess"))
        right = client.get(path, headers=_basic(PASSWORD))
        open_health = client.get("/healthz")
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert right.status_code == (404 if path == "/api/nothing" else 200)
    assert open_health.json() == {"status": "ok"}


def test_api_errors_use_the_one_json_shape_and_never_redirect(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        unknown = client.get("/api/v1/nothing", follow_redirects=False)
        method = client.post("/metrics")
        healthz_slash = client.get("/healthz/", follow_redirects=False)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (method.status_code, method.json()["error"]["code"]) == (405, "method_not_allowed")
    assert method.headers["allow"] == "GET"
    assert healthz_slash.status_code == 200 and "location" not in healthz_slash.headers


def test_before_the_lifespan_starts_the_server_webhooks_and_healthz_say_starting(
    tmp_path: Path,
) -> None:
    app = build_app(make_settings(tmp_path))
    # No `with`: the lifespan never runs, so the database is not even opened.
    client = TestClient(app, base_url="http://testserver")
    webhook = client.post("/plivo/hangup", data={"CallUUID": "early"})
    health = client.get("/healthz")
    assert (webhook.status_code, webhook.json()["error"]["code"]) == (503, "starting")
    assert (health.status_code, health.json()) == (503, {"status": "starting"})
    assert not (tmp_path / "callstatus.duckdb").exists()


def test_after_stop_webhooks_are_refused_not_left_waiting(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path))
    try:
        with TestClient(app, base_url="http://testserver") as client:
            assert client.post("/plivo/hangup", data={"CallUUID": "in"}).status_code == 200
    finally:
        Runtime._instance = None  # Streamlit's singleton, as app_client resets it
    late = TestClient(app, base_url="http://testserver").post("/plivo/hangup", data={"A": "1"})
    assert (late.status_code, late.json()["error"]["code"]) == (503, "starting")
