"""POST /api/erase in the running app: counts, a dry run, the number only in the body; the
dashboard's password may erase, an API token may not (403)."""

from __future__ import annotations

import base64
from pathlib import Path

from starlette.testclient import TestClient

from callstatus.core import rollups, server
from tests.factories import app_client, rows

NUMBER = "+447911222333"
PASSWORD = "a-long-dashboard-password"
TOKEN = "a-read-only-api-token"


def post_call(client: TestClient, uuid: str, caller: str) -> None:
    for path in ("/plivo/answer", "/plivo/hangup"):
        reply = client.post(path, data={"CallUUID": uuid, "From": caller, "To": "18005550199"})
        assert reply.status_code == 200


def test_erase_through_the_api(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        post_call(client, "dddddddd-0000-0000-0000-000000000001", NUMBER[1:])
        post_call(client, "dddddddd-0000-0000-0000-000000000002", "15550009999")
        dry = client.post("/api/erase", json={"number": NUMBER, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json()["counts"]["webhook_events"] == 2 and dry.json()["dry_run"]
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 4
        done = client.post("/api/erase", json={"number": NUMBER})
        body = done.json()
        assert body["counts"]["webhook_events"] == 2 and body["counts"]["calls_rollup"] == 1
        assert body["snapshot"] == "rewritten" and NUMBER[1:] not in done.text
        left = rows("SELECT from_number FROM webhook_events")
        assert [r["from_number"] for r in left] == ["15550009999"] * 2
        handle = server.installed()
        assert handle is not None and rollups.is_current(handle.database.cursor())
        refused = client.post("/api/erase", json={"number": "not a number"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "not_a_number"


def test_api_tokens_may_not_erase(tmp_path: Path) -> None:
    settings = {"DASHBOARD_PASSWORD": PASSWORD, "CALLSTATUS_API_TOKENS": TOKEN}
    with app_client(tmp_path, **settings) as client:
        body = {"number": NUMBER, "dry_run": True}
        token = client.post("/api/erase", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert token.status_code == 403
        assert client.post("/api/erase", json=body).status_code == 401
        basic = base64.b64encode(f"x:{PASSWORD}".encode()).decode()
        allowed = client.post("/api/erase", json=body, headers={"Authorization": f"Basic {basic}"})
        assert allowed.status_code == 200
        # Reading with the token still works.
        assert (
            client.get("/api/v1/kpis", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            != 403
        )
