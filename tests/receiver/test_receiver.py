"""The receiver in-process: what each webhook stores, what it replies, what it refuses."""

from __future__ import annotations

import base64
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from callstatus.core.plivo import RETRY_FRAGMENT
from tests.factories import app_client, metric, rows, signed_headers, signed_request, wait_until

TOKEN = "main-account-token"
SUB_TOKEN = "sub-account-token"
BASE = "https://calls.example.com"
SIGNED = {"PLIVO_AUTH_TOKEN": f"{TOKEN},{SUB_TOKEN}", "PUBLIC_BASE_URL": BASE}

# path -> (kind, reply: "dial" XML, "empty-xml" <Response/>, "empty" body)
WEBHOOKS = {
    "/plivo/answer": ("answer", "dial"),
    "/plivo/fallback": ("fallback", "dial"),
    "/plivo/dial/action": ("dial_action", "empty-xml"),
    "/plivo/dial/callback": ("dial_callback", "empty"),
    "/plivo/hangup": ("hangup", "empty"),
    "/plivo/ring": ("ring", "empty"),
    "/plivo/machine-detection": ("machine_detection", "empty"),
}


def _check_reply(response: Any, reply: str) -> None:
    assert response.status_code == 200, response.text
    if reply == "empty":
        assert response.content == b""
        return
    assert response.headers["content-type"].split(";")[0] == "application/xml"
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    if reply == "empty-xml":
        assert list(root) == []
    else:
        assert [child.tag for child in root] == ["Speak", "Dial"]
        assert root[1].get("action") == f"{BASE}/plivo/dial/action{RETRY_FRAGMENT}"


def test_every_path_and_method_stores_one_row(tmp_path: Path) -> None:
    with app_client(tmp_path, DIAL_NUMBERS="+14155550100", **SIGNED) as client:
        for path, (kind, reply) in WEBHOOKS.items():
            for method in ("GET", "POST"):
                call_uuid = f"{kind}-{method}"
                pairs = [
                    ("CallUUID", call_uuid),
                    ("Tag", "one"),
                    ("Tag", "two"),
                    ("SomethingPlivoAddsLater", "x"),
                    ("CallerName", "José Ñúñez 李"),
                    ("AnswerTime", ""),
                ]
                token = TOKEN if method == "GET" else SUB_TOKEN  # both configured tokens work
                response = signed_request(client, method, path, pairs, token=token, base=BASE)
                _check_reply(response, reply)
                (row,) = rows(
                    "SELECT kind, http_method, params, signature, duplicate, call_uuid"
                    " FROM webhook_events WHERE call_uuid = ?",
                    [call_uuid],
                )
                assert row["kind"] == kind
                assert row["http_method"] == method
                assert row["signature"] == "valid"
                assert row["duplicate"] is False
                assert json.loads(row["params"]) == {
                    "CallUUID": call_uuid,
                    "Tag": ["one", "two"],
                    "SomethingPlivoAddsLater": "x",
                    "CallerName": "José Ñúñez 李",
                    "AnswerTime": "",
                }
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 14


def test_development_mode_stores_unchecked(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        assert client.get("/plivo/ring", params={"CallUUID": "g"}).status_code == 200
        forged = {"X-Plivo-Signature-V3": "bogus", "X-Plivo-Signature-V3-Nonce": "1"}
        response = client.post("/plivo/ring", data={"CallUUID": "p"}, headers=forged)
        assert response.status_code == 200
        assert client.get("/healthz").json()["signature_checks"] == "off (development mode)"
        stored = rows("SELECT call_uuid, signature FROM webhook_events ORDER BY call_uuid")
    assert stored == [
        {"call_uuid": "g", "signature": "unchecked"},
        {"call_uuid": "p", "signature": "unchecked"},
    ]


def test_post_with_query_in_the_url_merges_and_verifies(tmp_path: Path) -> None:
    with app_client(tmp_path, **SIGNED) as client:
        response = signed_request(
            client,
            "POST",
            "/plivo/hangup",
            [("CallUUID", "q1"), ("Leg", "body")],
            query=[("tenant", "acme"), ("Leg", "url"), ("blank", "")],
            base=BASE,
        )
        assert response.status_code == 200, response.text
        (row,) = rows("SELECT params, signature FROM webhook_events")
    assert row["signature"] == "valid"
    # URL query first, then the body; a key in both becomes a list.
    assert json.loads(row["params"]) == {
        "tenant": "acme",
        "Leg": ["url", "body"],
        "blank": "",
        "CallUUID": "q1",
    }


def test_typed_columns(tmp_path: Path) -> None:
    hangup = {
        "CallUUID": "a-leg",
        "Event": "Hangup",
        "Direction": "inbound",
        "From": "+14155550100",
        "To": "+14155550111",
        "CallStatus": "completed",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "HangupSource": "Caller",
        "Duration": "42",
        "BillDuration": "60.0",
        "StartTime": "2026-11-02 14:30:00",
        "AnswerTime": "",
        "EndTime": "2026-11-02 14:30:42.250000",
    }
    dial_action = {
        "CallUUID": "a-leg2",
        "DialStatus": "completed",
        "DialRingStatus": "True",
        "DialHangupCause": "NORMAL_CLEARING",
        "DialALegUUID": "a-leg2",
        "DialBLegUUID": "",
    }
    dial_callback = {
        "CallUUID": "a-leg3",
        "DialAction": "hangup",
        "DialBLegStatus": "hangup",
        "DialALegUUID": "a-leg3",
        "DialBLegUUID": "b-leg",
        "DialBLegFrom": "+1",
        "DialBLegTo": "sip:agent@phone.plivo.com",
        "DialBLegPosition": "2",
        "DialBLegDuration": "abc",
        "DialBLegBillDuration": "0",
        "DialBLegHangupCause": "LOSE_RACE",
        "DialBLegHangupCauseCode": "9000",
        "DialBLegHangupCauseName": "Lost Race",
        "DialBLegHangupSource": "Plivo",
    }
    machine = {"CallUUID": "a-leg4", "Machine": "false"}
    with app_client(tmp_path, PLIVO_TIMEZONE="Asia/Kolkata") as client:
        for path, params in [
            ("/plivo/hangup", hangup),
            ("/plivo/dial/action", dial_action),
            ("/plivo/dial/callback", dial_callback),
            ("/plivo/machine-detection", machine),
        ]:
            assert client.post(path, data=params).status_code == 200
        # A parameter sent twice: the typed copy takes the last value.
        assert client.get("/plivo/hangup?CallUUID=a-leg5&Duration=5&Duration=7").status_code == 200
        typed = {row["call_uuid"]: row for row in rows("SELECT * FROM webhook_events")}
    h = typed["a-leg"]
    assert (h["event"], h["direction"], h["from_number"], h["to_number"]) == (
        "Hangup",
        "inbound",
        "+14155550100",
        "+14155550111",
    )
    assert (h["call_status"], h["hangup_cause"], h["hangup_cause_name"], h["hangup_source"]) == (
        "completed",
        "NORMAL_CLEARING",
        "Normal Hangup",
        "Caller",
    )
    assert (h["hangup_cause_code"], h["duration"], h["bill_duration"]) == (4000, 42, 60)
    # Plivo's local times (Asia/Kolkata, +05:30) stored in UTC; an empty AnswerTime is NULL.
    assert h["start_time"] == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert h["end_time"] == datetime(2026, 11, 2, 9, 0, 42, 250000, tzinfo=UTC)
    assert h["answer_time"] is None
    d = typed["a-leg2"]
    assert (d["dial_status"], d["dial_ring_status"], d["dial_hangup_cause"]) == (
        "completed",
        True,
        "NORMAL_CLEARING",
    )
    assert (d["dial_a_leg_uuid"], d["dial_b_leg_uuid"]) == ("a-leg2", None)
    c = typed["a-leg3"]
    assert (c["dial_action"], c["dial_b_leg_status"], c["dial_b_leg_uuid"]) == (
        "hangup",
        "hangup",
        "b-leg",
    )
    assert (c["dial_b_leg_from"], c["dial_b_leg_to"]) == ("+1", "sip:agent@phone.plivo.com")
    assert (c["dial_b_leg_position"], c["dial_b_leg_duration"], c["dial_b_leg_bill_duration"]) == (
        2,
        None,
        0,
    )
    assert (
        c["dial_b_leg_hangup_cause"],
        c["dial_b_leg_hangup_cause_code"],
        c["dial_b_leg_hangup_cause_name"],
        c["dial_b_leg_hangup_source"],
    ) == ("LOSE_RACE", 9000, "Lost Race", "Plivo")
    assert typed["a-leg4"]["machine"] is False
    assert typed["a-leg5"]["duration"] == 7


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
def test_out_of_range_times_do_not_poison_a_batch(tmp_path: Path, zone: str) -> None:
    # Times that are valid text but fall outside datetime's range once moved to UTC.
    odd = {"CallUUID": "odd", "StartTime": "0001-01-01 00:00:00", "EndTime": "9999-12-31 23:59:59"}
    with app_client(tmp_path, PLIVO_TIMEZONE=zone) as client:
        assert client.post("/plivo/hangup", data=odd).status_code == 200
        assert client.post("/plivo/hangup", data={"CallUUID": "next"}).status_code == 200
        stored = rows("SELECT call_uuid, start_time, end_time FROM webhook_events ORDER BY 1")
        health = client.get("/healthz").json()
    assert [row["call_uuid"] for row in stored] == ["next", "odd"]
    assert health["status"] == "ok", health
    assert health["spool_depth"] == 0


def _forgeries() -> list[tuple[str, dict[str, Any], str]]:
    """(name, headers, reason) for a POST of CallUUID=forged to /plivo/hangup?tenant=acme."""
    url = f"{BASE}/plivo/hangup?tenant=acme"
    from callstatus.receiver.signatures import sign

    good = {"CallUUID": ["forged"]}
    nonce = "n0nce"
    return [
        ("unsigned", {}, "missing_signature"),
        ("nonce-only", {"X-Plivo-Signature-V3-Nonce": nonce}, "missing_signature"),
        (
            "wrong-token",
            {
                "X-Plivo-Signature-V3": sign("POST", url, good, nonce, "guess"),
                "X-Plivo-Signature-V3-Nonce": nonce,
            },
            "bad_signature",
        ),
        (
            "tampered",
            {
                "X-Plivo-Signature-V3": sign("POST", url, {"CallUUID": ["other"]}, nonce, TOKEN),
                "X-Plivo-Signature-V3-Nonce": nonce,
            },
            "bad_signature",
        ),
        (
            "other-path",
            {
                "X-Plivo-Signature-V3": sign(
                    "POST", url.replace("hangup", "ring"), good, nonce, TOKEN
                ),
                "X-Plivo-Signature-V3-Nonce": nonce,
            },
            "bad_signature",
        ),
        (
            "query-dropped",
            {
                "X-Plivo-Signature-V3": sign("POST", f"{BASE}/plivo/hangup", good, nonce, TOKEN),
                "X-Plivo-Signature-V3-Nonce": nonce,
            },
            "bad_signature",
        ),
        (
            "non-ascii-header",
            {
                "X-Plivo-Signature-V3": "é".encode("latin-1") * 44,
                "X-Plivo-Signature-V3-Nonce": nonce,
            },
            "bad_signature",
        ),
    ]


def test_forged_requests_are_refused_and_recorded(tmp_path: Path) -> None:
    forgeries = _forgeries()
    with app_client(tmp_path, **SIGNED) as client:
        for name, headers, reason in forgeries:
            response = client.post(
                "/plivo/hangup?tenant=acme",
                content=urlencode({"CallUUID": "forged"}).encode(),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 403, name
            assert response.json()["error"]["code"] == reason, name
            assert response.json()["error"]["message"], name
        wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == len(forgeries))
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
        refused = rows("SELECT * FROM rejected_webhooks")
    assert sorted(r["reason"] for r in refused) == sorted(reason for _, _, reason in forgeries)
    for row in refused:
        assert row["path"] == "/plivo/hangup"
        assert row["http_method"] == "POST"
        assert row["checked_url"] == f"{BASE}/plivo/hangup?tenant=acme"
        assert json.loads(row["params"]) == {"tenant": "acme", "CallUUID": "forged"}
        assert json.loads(row["headers"])["host"] == "testserver"
        assert row["truncated"] is False


def test_a_wrong_public_base_url_rejects_genuine_webhooks(tmp_path: Path) -> None:
    wrong = "https://old-name.example.com"
    with app_client(tmp_path, PLIVO_AUTH_TOKEN=TOKEN, PUBLIC_BASE_URL=wrong) as client:
        response = signed_request(
            client,
            "POST",
            "/plivo/hangup",
            [("CallUUID", "genuine")],
            query=[("t", "1")],
            base=BASE,
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "bad_signature"
        assert wrong in response.json()["error"]["message"]
        wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == 1)
        (row,) = rows("SELECT * FROM rejected_webhooks")
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
    assert row["checked_url"] == f"{wrong}/plivo/hangup?t=1"
    assert json.loads(row["params"]) == {"t": "1", "CallUUID": "genuine"}
    assert "x-plivo-signature-v3" in json.loads(row["headers"])


@pytest.mark.parametrize("host", ["[evil", "evil]:80", "[::1"])
def test_a_host_that_is_no_url_is_a_recorded_403_not_a_500(tmp_path: Path, host: str) -> None:
    # Without PUBLIC_BASE_URL the signed URL is built from Host; urlsplit refuses these.
    body = urlencode({"CallUUID": "odd-host"}).encode()
    with app_client(tmp_path, PLIVO_AUTH_TOKEN=TOKEN) as client:
        url = f"http://{host}/plivo/hangup"
        # Signed as for a valid host: the check must get as far as rebuilding the URL.
        headers = signed_headers("POST", BASE + "/plivo/hangup", {"CallUUID": ["odd-host"]}, TOKEN)
        response = client.post(
            "/plivo/hangup",
            content=body,
            headers={**headers, "Host": host, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "bad_signature"
        wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == 1)
        (row,) = rows("SELECT reason, checked_url, headers FROM rejected_webhooks")
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
        assert client.get("/healthz").json()["status"] == "ok"
    assert row["reason"] == "bad_signature"
    assert row["checked_url"] == url
    assert json.loads(row["headers"])["host"] == host


def test_without_public_base_url_the_request_host_is_verified(tmp_path: Path) -> None:
    with app_client(tmp_path, PLIVO_AUTH_TOKEN=TOKEN) as client:
        for method in ("GET", "POST"):
            response = signed_request(
                client,
                method,
                "/plivo/ring",
                [("CallUUID", method)],
                query=[("q", "1")],
                base="http://testserver",
            )
            assert response.status_code == 200, response.text
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 2


def test_rejected_webhooks_are_bounded_per_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app_client(tmp_path, **SIGNED) as client:
        rt = client.app.runtime
        assert rt is not None
        monkeypatch.setattr(rt.intake.rejections, "limit", 3)
        before_overflow = metric(client, "callstatus_rejections_not_stored_total")
        before_reason = metric(client, "callstatus_rejections_total", reason="missing_signature")
        for i in range(5):
            response = client.post("/plivo/ring", data={"CallUUID": f"r{i}"})
            assert response.status_code == 403
        wait_until(lambda: rt.writer.queue_depth() == 0)
        signed_request(client, "POST", "/plivo/ring", [("CallUUID", "ok")], base=BASE)
        assert len(rows("SELECT * FROM rejected_webhooks")) == 3
        overflow = metric(client, "callstatus_rejections_not_stored_total") - before_overflow
        by_reason = (
            metric(client, "callstatus_rejections_total", reason="missing_signature")
            - before_reason
        )
    assert overflow == 2
    assert by_reason == 5


def test_a_rejected_row_is_at_most_64_kib(tmp_path: Path) -> None:
    # Control characters take 3 bytes percent-encoded and 6 as JSON escapes.
    big = urlencode({"Big": "\x01" * 15_000})
    places = ["query", "body", "header", "everywhere"]
    with app_client(tmp_path, **SIGNED) as client:
        for where in places:
            query = big if where in ("query", "everywhere") else "small=1"
            body = big if where in ("body", "everywhere") else "small=1"
            agent = "é" * 40_000 if where in ("header", "everywhere") else "test"
            response = client.post(
                f"/plivo/ring?{query}&where={where}",
                content=body.encode(),
                headers={
                    b"X-Plivo-Signature-V3": b"x",
                    b"X-Plivo-Signature-V3-Nonce": b"1",
                    b"Content-Type": b"application/x-www-form-urlencoded",
                    b"User-Agent": agent.encode("latin-1"),
                },
            )
            assert response.status_code == 403, where
        wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == len(places))
        sizes = rows(
            "SELECT truncated, octet_length(encode(headers::VARCHAR)) + "
            "octet_length(encode(params::VARCHAR)) + "
            "octet_length(encode(coalesce(checked_url, ''))) AS size FROM rejected_webhooks"
        )
    assert all(row["truncated"] for row in sizes), sizes
    assert all(row["size"] <= 64 * 1024 for row in sizes), sizes


def test_duplicates_are_flagged(tmp_path: Path) -> None:
    first = [("CallUUID", "d1"), ("Duration", "42")]
    with app_client(tmp_path, **SIGNED) as client:
        sends: list[tuple[str, str, Sequence[tuple[str, str]], str]] = [
            ("first", "/plivo/hangup", first, "POST"),
            ("exact repeat", "/plivo/hangup", first, "POST"),
            ("other nonce", "/plivo/hangup", first, "POST"),
            ("other nonce, GET", "/plivo/hangup", first, "GET"),
            ("other kind", "/plivo/ring", first, "POST"),
            ("other value", "/plivo/hangup", [("CallUUID", "d1"), ("Duration", "43")], "POST"),
            ("key order", "/plivo/hangup", [("Duration", "42"), ("CallUUID", "d1")], "POST"),
        ]
        nonce = "same-nonce"
        for name, path, pairs, method in sends:
            use_nonce = nonce if name in ("first", "exact repeat") else None
            response = signed_request(client, method, path, pairs, base=BASE, nonce=use_nonce)
            assert response.status_code == 200, name
        flags = [
            row["duplicate"]
            for row in rows("SELECT duplicate FROM webhook_events ORDER BY received_at")
        ]
        (repeats,) = rows("SELECT sum(repeats)::INTEGER AS n FROM webhook_repeats")
    # Three deliveries of the first are stored (flagged from the second on); its fourth and
    # fifth (GET, other key order: the same fingerprint) are counted, not stored.
    assert flags == [False, True, True, False, False]
    assert repeats["n"] == 2


def test_healthz(tmp_path: Path) -> None:
    with app_client(tmp_path, **SIGNED) as client:
        before = client.get("/healthz")
        signed_request(client, "POST", "/plivo/hangup", [("CallUUID", "h")], base=BASE)
        after = client.get("/healthz")
    assert before.status_code == 200
    assert before.json()["last_event_at"] is None
    body = after.json()
    assert set(body) >= {
        "status",
        "database",
        "writer_queue_depth",
        "last_event_at",
        "spool_depth",
        "snapshot_age_s",
        "signature_checks",
    }
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["writer_queue_depth"] == 0
    assert body["spool_depth"] == 0
    assert body["signature_checks"] == "on"
    last = datetime.fromisoformat(body["last_event_at"])
    assert abs((datetime.now(UTC) - last).total_seconds()) < 60


def test_healthz_shows_details_to_the_operator_only(tmp_path: Path) -> None:
    password = "correct-horse-battery"
    secret = f"IOException: could not write {tmp_path}/callstatus.duckdb: No space left"
    with app_client(tmp_path, DASHBOARD_PASSWORD=password) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        rt = client.app.runtime
        assert rt is not None
        rt.writer.last_error = secret
        try:
            public = client.get("/healthz")
            wrong = client.get("/healthz", headers=_basic("wrong"))
            operator = client.get("/healthz", headers=_basic(password))
            head = client.head("/healthz")
        finally:
            rt.writer.last_error = None
        healthy = client.get("/healthz")
    # Degraded is a 503 (monitors alert on non-2xx); the public learns nothing else.
    assert (public.status_code, public.json()) == (503, {"status": "degraded"})
    assert (wrong.status_code, wrong.json()) == (503, {"status": "degraded"})
    assert str(tmp_path) not in public.text and "IOException" not in public.text
    assert head.status_code == 503 and head.content == b""
    assert operator.status_code == 503
    assert operator.json()["status"] == "degraded"
    assert operator.json()["database"] == secret
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})


def test_a_get_body_is_ignored(tmp_path: Path) -> None:
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    with app_client(tmp_path) as client:
        response = client.request(
            "GET", "/plivo/hangup?CallUUID=g1", content=b"CallUUID=smuggled&X=1", headers=form_type
        )
        assert response.status_code == 200, response.text
        # Not read at all: neither its type nor its size is refused.
        odd = client.request("GET", "/plivo/ring?CallUUID=g2", content=b'{"x": 1}' * 10_000)
        assert odd.status_code == 200, odd.text
        stored = rows("SELECT params FROM webhook_events ORDER BY call_uuid")
    assert [json.loads(row["params"]) for row in stored] == [{"CallUUID": "g1"}, {"CallUUID": "g2"}]
    with app_client(tmp_path / "signed", **SIGNED) as client:
        # Signed over the query only, as Plivo signs a GET: the body does not break it.
        query = "/plivo/hangup?CallUUID=g3"
        headers = {**signed_headers("GET", BASE + query, {}, TOKEN), **form_type}
        response = client.request("GET", query, content=b"Extra=1", headers=headers)
        assert response.status_code == 200, response.text
        # A signature that covers the body as well does not verify.
        headers = {**signed_headers("GET", BASE + query, {"Extra": ["1"]}, TOKEN), **form_type}
        response = client.request("GET", query, content=b"Extra=1", headers=headers)
        assert response.status_code == 403, response.text
        (row,) = rows("SELECT params, signature FROM webhook_events")
    assert json.loads(row["params"]) == {"CallUUID": "g3"}
    assert row["signature"] == "valid"


def test_metrics(tmp_path: Path) -> None:
    with app_client(tmp_path, **SIGNED) as client:
        names = [
            ("callstatus_webhooks_total", {"kind": "hangup", "result": "stored"}),
            ("callstatus_webhooks_total", {"kind": "hangup", "result": "rejected"}),
            ("callstatus_webhooks_total", {"kind": "hangup", "result": "invalid"}),
            ("callstatus_webhooks_total", {"kind": "ring", "result": "invalid"}),
            ("callstatus_rejections_total", {"reason": "bad_signature"}),
            ("callstatus_rejections_total", {"reason": "unsupported_media_type"}),
            ("callstatus_writer_batch_size_count", {}),
            ("callstatus_writer_commit_seconds_count", {}),
        ]
        before = [metric(client, name, **labels) for name, labels in names]
        signed_request(client, "POST", "/plivo/hangup", [("CallUUID", "m1")], base=BASE)
        bad = {"X-Plivo-Signature-V3": "AAAA", "X-Plivo-Signature-V3-Nonce": "1"}
        assert client.post("/plivo/hangup", data={"CallUUID": "m2"}, headers=bad).status_code == 403
        assert client.post("/plivo/ring", json={"CallUUID": "m3"}).status_code == 415
        response = client.get("/metrics")
        after = [metric(client, name, **labels) for name, labels in names]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    deltas = {
        f"{name}{sorted(labels.items())}": a - b
        for (name, labels), a, b in zip(names, after, before, strict=True)
    }
    # one webhook stored, one forged (rejected, not also "invalid"), one JSON body (invalid)
    assert list(deltas.values())[:6] == [1, 1, 0, 1, 1, 1], deltas
    # the stored webhook and the recorded refusal: one or two commits
    assert list(deltas.values())[6:] in ([1, 1], [2, 2]), deltas
    assert "callstatus_spool_depth 0.0" in response.text
    assert "callstatus_writer_queue_depth" in response.text
    assert 'callstatus_writer_batch_size_bucket{le="1.0"}' in response.text
    assert 'callstatus_writer_commit_seconds_bucket{le="0.001"}' in response.text


def _basic(password: str, user: str = "ops") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_dashboard_password_protects_the_dashboard_and_metrics_only(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(12)
    with app_client(tmp_path, DASHBOARD_PASSWORD=password) as client:
        for path in ("/", "/metrics"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert refused.json()["error"]["code"] == "unauthorized"
            assert client.get(path, headers=_basic("wrong")).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Basic !!!"}).status_code == 401
            assert client.get(path, headers=_basic(password)).status_code == 200, path
            assert client.get(path, headers=_basic(password, user="")).status_code == 200, path
        assert client.get("/healthz").status_code == 200
        assert client.post("/plivo/hangup", data={"CallUUID": "open"}).status_code == 200
        assert client.get("/plivo/ring", params={"CallUUID": "open2"}).status_code == 200
        assert client.get("/plivo/nope").status_code == 404


def test_no_dashboard_password_leaves_the_dashboard_open(receiver_client: TestClient) -> None:
    assert receiver_client.get("/").status_code == 200
    assert receiver_client.get("/metrics").status_code == 200
