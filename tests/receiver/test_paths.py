"""The webhook paths, kinds and replies come from one table (callstatus.core.plivo): each path
stores its kind and answers as the table says; the error body has one shape everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callstatus.core import plivo
from callstatus.receiver.errors import error_body
from callstatus.receiver.protocol import error_bytes
from callstatus.simulator.traffic import PATHS
from tests.factories import app_client, rows

PHLO_SECRET = "phlo-shared-secret-for-paths"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_path_stores_its_kind_and_replies_as_the_table_says(
    tmp_path: Path, method: str
) -> None:
    with app_client(tmp_path, DIAL_NUMBERS="+14155550100", PHLO_SECRET=PHLO_SECRET) as client:
        replies = {}
        for webhook in plivo.WEBHOOKS:
            params = {"CallUUID": webhook.kind}
            # PHLO reports need the shared secret (here as a query parameter, never stored).
            path = webhook.path
            if webhook.kind == plivo.PHLO_KIND:
                path += f"?{plivo.PHLO_SECRET_PARAM}={PHLO_SECRET}"
            if method == "GET":
                query = dict(params)
                if webhook.kind == plivo.PHLO_KIND:
                    query[plivo.PHLO_SECRET_PARAM] = PHLO_SECRET
                replies[webhook.kind] = client.get(webhook.path, params=query)
            else:
                replies[webhook.kind] = client.post(path, data=params)
        stored = rows("SELECT kind, call_uuid FROM webhook_events")
    assert sorted((r["kind"], r["call_uuid"]) for r in stored) == sorted(
        (kind, kind) for kind in plivo.KINDS
    )
    for webhook in plivo.WEBHOOKS:
        reply = replies[webhook.kind]
        assert reply.status_code == 200, webhook.path
        if webhook.reply is plivo.Reply.EMPTY:
            assert reply.content == b"", webhook.path
        else:
            assert reply.headers["content-type"] == "application/xml", webhook.path
            dials = plivo.DIAL_ACTION_PATH in reply.text
            assert dials == (webhook.reply is plivo.Reply.ANSWER_XML), webhook.path


def test_the_simulator_sends_each_kind_to_its_path() -> None:
    assert {webhook.kind: webhook.path for webhook in plivo.WEBHOOKS} == PATHS
    assert len(set(plivo.KINDS)) == len(plivo.WEBHOOKS) == 8


def test_one_error_body_for_endpoints_and_the_protocol() -> None:
    body = error_body("body_too_large", "request body is över 65536 bytes")
    assert json.loads(body) == {
        "error": {"code": "body_too_large", "message": "request body is över 65536 bytes"}
    }
    raw = error_bytes(431, "headers_too_large", "too big", [])
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert payload == error_body("headers_too_large", "too big")
    assert b"content-length: %d" % len(payload) in head
