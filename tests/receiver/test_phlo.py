"""PHLO reports on /plivo/phlo: each encoding and spelling, the secret three ways, signatures,
refusals kept without the secret, Dials counted once, and the writer's durability."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import pytest
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)
from starlette.testclient import TestClient
from streamlit.runtime import Runtime

import callstatus.receiver.writer
from callstatus.app.asgi import build_app
from callstatus.core.records import EventRecord
from callstatus.core.storage import InboxAppender
from callstatus.receiver.phlo import signature_fields
from callstatus.receiver.signatures import sign
from tests.factories import app_client, make_settings, rows, wait_until

SECRET = "phlo-shared-secret-7f3a9c"
TOKEN = "main-account-token"
BASE = "https://calls.example.com"
PATH = "/plivo/phlo"

# The five keys of the guide, and the values a PHLO's HTTP Request component fills in.
GUIDE_KEYS = ("DialStatus", "DialRingStatus", "DialHangupCause", "DialALegUUID", "DialBLegUUID")
VALUES = ("completed", "true", "NORMAL_CLEARING", "a-leg-1", "b-leg-1")
SPELLINGS = {
    "guide": GUIDE_KEYS,
    "snake": (
        "dial_status", "dial_ring_status", "dial_hangup_cause", "dial_a_leg_uuid", "dial_b_leg_uuid"
    ),
    "lower": ("dialstatus", "dialringstatus", "dialhangupcause", "dialaleguuid", "dialbleguuid"),
    "capitalised snake": (
        "Dial_Status", "Dial_Ring_Status", "Dial_Hangup_Cause", "Dial_A_Leg_UUID", "Dial_B_Leg_UUID"
    ),
    "upper, hyphens": (
        "DIAL-STATUS", "DIAL-RING-STATUS", "DIAL-HANGUP-CAUSE", "DIAL-A-LEG-UUID", "DIAL-B-LEG-UUID"
    ),
}  # fmt: skip
TYPED = (
    "SELECT dial_status, dial_ring_status, dial_hangup_cause, dial_a_leg_uuid, dial_b_leg_uuid"
    " FROM webhook_events"
)
DIALS = "SELECT a_leg_uuid, b_leg_uuid, dial_status, dial_ring_status, dial_hangup_cause, source"


def report(keys: Sequence[str] = GUIDE_KEYS, **changes: str) -> dict[str, str]:
    values = dict(zip(GUIDE_KEYS, VALUES, strict=True)) | changes
    return {key: values[guide] for key, guide in zip(keys, GUIDE_KEYS, strict=True)}


def send(
    client: TestClient,
    encoding: str,
    params: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    query: Sequence[tuple[str, str]] = (),
) -> Any:
    """A report as PHLO's HTTP Request component sends it: a JSON or form body (POST), or a
    query string (GET); `query` is the component's own query parameters."""
    if encoding == "query":
        pairs = [*query, *((k, str(v)) for k, v in params.items())]
        return client.get(f"{PATH}?{urlencode(pairs)}", headers=headers)
    url = f"{PATH}?{urlencode(list(query))}" if query else PATH
    if encoding == "json":
        return client.post(url, json=params, headers=headers)
    return client.post(url, data=params, headers=headers)


def sdk_signature(method: str, url: str, params: Mapping[str, Any], nonce: str) -> str:
    """The V3 signature Plivo's SDK computes for a request to `url` with these params (a JSON
    body's object, a form's fields): the SDK's own functions, not ours."""
    if method == "GET":
        base = construct_get_url(url, dict(params))
    else:
        base = construct_post_url(url, dict(params))
    signed: bytes = get_signature_v3(TOKEN.encode(), base.decode("utf-8"), nonce.encode())
    return signed.decode("ascii")


def signed_headers(method: str, url: str, params: Mapping[str, Any], token: str = TOKEN) -> dict:
    nonce = "31415926535897932384"
    signature = sdk_signature(method, url, params, nonce)
    if token != TOKEN:
        signature = sign(method, url, signature_fields(params), nonce, token)
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


@pytest.fixture
def phlo_client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with PHLO_SECRET set and signature checks off (no PLIVO_AUTH_TOKEN)."""
    with app_client(tmp_path, PHLO_SECRET=SECRET) as client:
        yield client


def rejected() -> list[dict[str, Any]]:
    wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) > 0)
    return rows("SELECT * FROM rejected_webhooks ORDER BY received_at")


# --- encodings and spellings ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form", "query"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_encoding_and_spelling_is_stored_verbatim_and_typed(
    phlo_client: TestClient, encoding: str, spelling: str
) -> None:
    sent = report(SPELLINGS[spelling]) | {"Agent team": "sales", "From": "+14155550100"}
    response = send(phlo_client, encoding, sent, headers={"X-Callstatus-Secret": SECRET})
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert "content-type" not in response.headers
    (row,) = rows(f"SELECT kind, http_method, signature, params, from_number, {TYPED[7:]}")
    assert row["kind"] == "phlo"
    assert row["http_method"] == ("GET" if encoding == "query" else "POST")
    assert row["signature"] == "secret"
    # Verbatim: the user's own spelling and extra keys, nothing added, nothing renamed.
    assert json.loads(row["params"]) == sent
    assert (
        row["dial_status"],
        row["dial_ring_status"],
        row["dial_hangup_cause"],
        row["dial_a_leg_uuid"],
        row["dial_b_leg_uuid"],
        row["from_number"],
    ) == ("completed", True, "NORMAL_CLEARING", "a-leg-1", "b-leg-1", "+14155550100")
    (dial,) = rows(f"{DIALS} FROM dials")
    assert dial == {
        "a_leg_uuid": "a-leg-1",
        "b_leg_uuid": "b-leg-1",
        "dial_status": "completed",
        "dial_ring_status": True,
        "dial_hangup_cause": "NORMAL_CLEARING",
        "source": "phlo",
    }


def test_json_values_are_kept_as_received(phlo_client: TestClient) -> None:
    body = {
        "DialStatus": " no-answer ",
        "DialRingStatus": True,
        "DialALegUUID": "a-json",
        "DialBLegUUID": "",
        "attempt": 2,
        "score": 0.5,
        "note": None,
        "agent": {"name": "Zoë", "skills": ["fr", "de"]},
        "tags": ["vip", "rückruf"],
    }
    url = f"{PATH}?tenant=acme&attempt=1"
    response = phlo_client.post(url, json=body, headers={"X-Callstatus-Secret": SECRET})
    assert response.status_code == 200, response.text
    (row,) = rows(f"SELECT params, {TYPED[7:]}")
    # Query first, then the body; a key in both becomes a list.
    assert json.loads(row["params"]) == {**body, "tenant": "acme", "attempt": ["1", 2]}
    assert (row["dial_status"], row["dial_ring_status"], row["dial_b_leg_uuid"]) == (
        "no-answer",
        True,
        None,
    )
    assert rows(f"{DIALS} FROM dials")[0]["b_leg_uuid"] is None


def test_a_json_key_sent_twice_becomes_a_list(phlo_client: TestClient) -> None:
    body = b'{"DialStatus": "busy", "tag": "a", "DialALegUUID": "a-dup", "tag": {"b": 1}}'
    response = phlo_client.post(
        PATH,
        content=body,
        headers={"Content-Type": "application/json", "X-Callstatus-Secret": SECRET},
    )
    assert response.status_code == 200, response.text
    (row,) = rows("SELECT params FROM webhook_events")
    assert json.loads(row["params"])["tag"] == ["a", {"b": 1}]


def test_plivos_spelling_wins_over_another_of_the_same_key(phlo_client: TestClient) -> None:
    body = {"dial_status": "busy", "DialStatus": "completed", "dialstatus": "failed"}
    body |= {"dial_a_leg_uuid": "a-2", "Dial_A_Leg_UUID": "a-1"}
    response = send(phlo_client, "json", body, headers={"X-Callstatus-Secret": SECRET})
    assert response.status_code == 200
    (row,) = rows(TYPED)
    # Plivo's own spelling first; otherwise the first key in sorted order (not arrival order,
    # which a spool replay does not keep): "Dial_A_Leg_UUID" sorts before "dial_a_leg_uuid".
    assert (row["dial_status"], row["dial_a_leg_uuid"]) == ("completed", "a-1")


def test_a_report_without_a_dial_status_is_stored_but_no_dial(phlo_client: TestClient) -> None:
    body = {"DialALegUUID": "a-test", "DialStatus": "", "note": "Fetch Response"}
    assert (
        send(phlo_client, "json", body, headers={"X-Callstatus-Secret": SECRET}).status_code == 200
    )
    assert len(rows("SELECT * FROM webhook_events WHERE kind = 'phlo'")) == 1
    assert rows("SELECT * FROM dials") == []


# --- the secret ----------------------------------------------------------------------------------


def _with_secret(place: str, secret: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(headers, query parameters) carrying `secret` the way PHLO's component is told to."""
    if place == "bearer":
        return {"Authorization": f"Bearer {secret}"}, []
    if place == "header":
        return {"X-Callstatus-Secret": secret}, []
    return {}, [("secret", secret)]


@pytest.mark.parametrize("encoding", ["json", "form", "query"])
@pytest.mark.parametrize("place", ["bearer", "header", "query"])
def test_the_secret_three_ways_and_never_stored(
    phlo_client: TestClient, place: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers, query = _with_secret(place, SECRET)
    sent = report(DialALegUUID="a-right")
    response = send(phlo_client, encoding, sent, headers=headers, query=[*query, ("t", "1")])
    assert response.status_code == 200, response.text
    wrong = "not-the-secret-0000"
    headers, query = _with_secret(place, wrong)
    with caplog.at_level(logging.WARNING):
        refused = send(
            phlo_client,
            encoding,
            report(DialALegUUID="a-wrong"),
            headers=headers,
            query=[*query, ("t", "1")],
        )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "bad_secret"
    (stored,) = rows("SELECT params, signature, dial_a_leg_uuid FROM webhook_events")
    assert json.loads(stored["params"]) == {**sent, "t": "1"}
    assert (stored["signature"], stored["dial_a_leg_uuid"]) == ("secret", "a-right")
    (row,) = rejected()
    assert (row["reason"], row["path"]) == ("bad_secret", PATH)
    assert json.loads(row["params"]) == {**report(DialALegUUID="a-wrong"), "t": "1"}
    assert "t=1" in row["checked_url"]
    kept = json.dumps(row, default=str) + caplog.text
    assert wrong not in kept and SECRET not in kept
    assert "secret=" not in row["checked_url"]


def test_without_the_secret_nothing_is_stored(phlo_client: TestClient) -> None:
    for encoding in ("json", "form", "query"):
        response = send(phlo_client, encoding, report())
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "missing_secret"
        assert "X-Callstatus-Secret" in response.json()["error"]["message"]
    wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == 3)
    assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
    assert {r["reason"] for r in rejected()} == {"missing_secret"}


def test_the_query_parameter_is_dropped_in_any_case_and_the_rest_kept(
    phlo_client: TestClient,
) -> None:
    url = f"{PATH}?Secret={SECRET}&tenant=acme&SECRET={SECRET}x"
    assert phlo_client.post(url, json=report()).status_code == 200
    wrong = f"{PATH}?SECRET=guess&tenant=acme&x=%20"
    assert phlo_client.post(wrong, json=report(DialALegUUID="a-2")).status_code == 403
    (stored,) = rows("SELECT params FROM webhook_events")
    assert json.loads(stored["params"]) == {**report(), "tenant": "acme"}
    (row,) = rejected()
    assert row["checked_url"] == "http://testserver/plivo/phlo?tenant=acme&x=%20"


def test_a_secret_in_the_body_is_not_stored_and_not_accepted(phlo_client: TestClient) -> None:
    for encoding in ("json", "form"):
        response = send(phlo_client, encoding, {**report(), "secret": SECRET})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "missing_secret"
    wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == 2)
    for row in rejected():
        assert json.loads(row["params"]) == report()
        assert SECRET not in json.dumps(row, default=str)


@pytest.mark.parametrize("settings", [{}, {"PLIVO_AUTH_TOKEN": TOKEN}])
def test_without_phlo_secret_only_a_signature_passes(tmp_path: Path, settings: dict) -> None:
    with app_client(tmp_path, **settings) as client:
        tries = [
            send(client, "json", report(), headers={"X-Callstatus-Secret": "anything"}),
            send(client, "json", report(), headers={"Authorization": "Bearer "}),
            send(client, "query", report()),
        ]
        assert [r.status_code for r in tries] == [403, 403, 403]
        assert [r.json()["error"]["code"] for r in tries] == [
            "bad_secret",
            "missing_secret",
            "missing_secret",
        ]
        assert "PHLO_SECRET is not set" in tries[2].json()["error"]["message"]
        wait_until(lambda: len(rows("SELECT * FROM rejected_webhooks")) == 3)
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0


# --- signatures ----------------------------------------------------------------------------------


def test_json_signature_fields_match_plivos_sdk() -> None:
    url = f"{BASE}{PATH}?tenant=acme"
    body = {
        "DialStatus": "completed",
        "DialRingStatus": True,
        "n": 3,
        "x": 0.25,
        "none": None,
        "tags": ["b", "a"],
        "agent": {"name": "Zoë", "id": 7},
    }
    nonce = "27182818284590452353"
    ours = sign("POST", url, signature_fields(body), nonce, TOKEN)
    assert validate_v3_signature("POST", url, nonce, TOKEN, ours, params=body)
    assert not validate_v3_signature("POST", url, nonce, TOKEN, ours, params={**body, "n": 4})


@pytest.mark.parametrize("encoding", ["json", "form", "query"])
@pytest.mark.parametrize("phlo_secret", [None, SECRET])
def test_a_valid_v3_signature_is_accepted(
    tmp_path: Path, encoding: str, phlo_secret: str | None
) -> None:
    settings: dict[str, Any] = {"PLIVO_AUTH_TOKEN": TOKEN, "PUBLIC_BASE_URL": BASE}
    if phlo_secret:
        settings["PHLO_SECRET"] = phlo_secret
    body: dict[str, Any] = report(DialALegUUID="a-signed")
    if encoding == "json":
        body |= {"attempt": 2, "vip": False}
    with app_client(tmp_path, **settings) as client:
        if encoding == "query":
            url = f"{PATH}?{urlencode({'tenant': 'acme', **body})}"
            headers = signed_headers("GET", BASE + url, {})
            response = client.get(url, headers=headers)
        else:
            url = f"{PATH}?tenant=acme"
            headers = signed_headers("POST", BASE + url, body)
            if encoding == "json":
                response = client.post(url, json=body, headers=headers)
            else:
                response = client.post(url, data=body, headers=headers)
        assert response.status_code == 200, response.text
        (row,) = rows("SELECT signature, params, dial_a_leg_uuid FROM webhook_events")
    assert row["signature"] == "valid"
    assert json.loads(row["params"]) == {"tenant": "acme", **body}
    assert row["dial_a_leg_uuid"] == "a-signed"


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_a_wrong_signature_is_refused_and_kept(tmp_path: Path, encoding: str) -> None:
    settings = {"PLIVO_AUTH_TOKEN": TOKEN, "PUBLIC_BASE_URL": BASE, "PHLO_SECRET": SECRET}
    body = report(DialALegUUID="a-forged")
    with app_client(tmp_path, **settings) as client:
        headers = signed_headers("POST", BASE + PATH, body, token="guess")
        response = send(client, encoding, body, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "bad_signature"
        (row,) = rejected()
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
    assert row["reason"] == "bad_signature"
    assert row["checked_url"] == BASE + PATH
    assert json.loads(row["params"]) == body
    assert "x-plivo-signature-v3" in json.loads(row["headers"])


def test_a_signature_without_plivo_auth_token_is_no_credential(phlo_client: TestClient) -> None:
    body = report()
    headers = signed_headers("POST", "http://testserver" + PATH, body)
    response = send(phlo_client, "json", body, headers=headers)
    assert response.status_code == 403
    assert "PLIVO_AUTH_TOKEN" in response.json()["error"]["message"]


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"DialStatus=completed", 415),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--", 415),
        ("application/json", b"[1, 2]", 400),
        ("application/json", b'{"DialStatus": NaN}', 400),
        ("application/json", b'{"n": 1e999}', 400),
        ("application/json", b'{"DialStatus": "\xff"}', 400),
        ("application/json", b'{"DialStatus": "\\ud800"}', 400),
        ("application/json", b'{"a": ' * 40 + b"1" + b"}" * 40, 400),
        ("application/json", b'{"a": ' * 5000 + b"1" + b"}" * 5000, 400),
        ("application/json", b"{", 400),
    ],
)
def test_bad_bodies_get_the_error_shape(
    phlo_client: TestClient, content_type: str, body: bytes, status: int
) -> None:
    response = phlo_client.post(
        PATH, content=body, headers={"Content-Type": content_type, "X-Callstatus-Secret": SECRET}
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}
    assert phlo_client.get("/healthz").json()["status"] == "ok"


def test_a_json_body_with_a_charset_and_a_vendor_type(phlo_client: TestClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.phlo+json"):
        response = phlo_client.post(
            PATH,
            content=json.dumps(report(DialALegUUID=content_type)).encode(),
            headers={"Content-Type": content_type, "X-Callstatus-Secret": SECRET},
        )
        assert response.status_code == 200, response.text
    assert len(rows("SELECT * FROM dials")) == 2


# --- counted once, duplicates --------------------------------------------------------------------


def test_a_phlo_report_and_a_dial_action_for_one_a_leg_count_once(phlo_client: TestClient) -> None:
    action = {
        "CallUUID": "a-both",
        "DialALegUUID": "a-both",
        "DialStatus": "no-answer",
        "DialRingStatus": "true",
        "DialBLegUUID": "",
    }
    headers = {"X-Callstatus-Secret": SECRET}
    assert (
        send(phlo_client, "json", report(DialALegUUID="a-both"), headers=headers).status_code == 200
    )
    assert (
        send(phlo_client, "json", report(DialALegUUID="a-phlo"), headers=headers).status_code == 200
    )
    assert phlo_client.post("/plivo/dial/action", data=action).status_code == 200
    dials = rows(f"{DIALS} FROM dials ORDER BY a_leg_uuid")
    assert [(d["a_leg_uuid"], d["dial_status"], d["source"]) for d in dials] == [
        ("a-both", "no-answer", "webhooks"),
        ("a-phlo", "completed", "phlo"),
    ]


def test_a_repeated_report_is_a_duplicate_however_its_secret_came(phlo_client: TestClient) -> None:
    body = report()
    sends = [
        ("json", {"X-Callstatus-Secret": SECRET}, []),
        ("json", {"Authorization": f"Bearer {SECRET}"}, []),
        ("json", {}, [("secret", SECRET)]),
    ]
    for encoding, headers, query in sends:
        assert send(phlo_client, encoding, body, headers=headers, query=query).status_code == 200
    flags = rows("SELECT duplicate FROM webhook_events ORDER BY received_at")
    assert [row["duplicate"] for row in flags] == [False, True, True]
    assert len(rows("SELECT * FROM dials")) == 1


# --- durability: the writer's path ---------------------------------------------------------------


@pytest.fixture
def failing_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Every append to webhook_inbox fails until called with False."""
    state = {"failing": True}
    real = InboxAppender.append

    def append(appender: InboxAppender, records: Sequence[EventRecord]) -> None:
        if state["failing"]:
            raise duckdb.IOException("IO Error: No space left on device")
        real(appender, records)

    monkeypatch.setattr(InboxAppender, "append", append)
    monkeypatch.setattr(callstatus.receiver.writer, "SPOOL_RETRY_S", 0.1)
    return lambda failing: state.update(failing=failing)


def test_reports_spool_while_the_database_refuses_and_replay_typed(
    tmp_path: Path, failing_disk: Callable[[bool], None]
) -> None:
    headers = {"X-Callstatus-Secret": SECRET}
    with app_client(tmp_path, PHLO_SECRET=SECRET) as client:
        for i, spelling in enumerate(sorted(SPELLINGS)):
            body = report(SPELLINGS[spelling], DialALegUUID=f"a-{i}")
            response = send(client, "json", body, headers=headers, query=[("secret", SECRET)])
            assert response.status_code == 200, response.text
        # The same report again while spooling: flagged all the same.
        repeat = report(SPELLINGS["lower"], DialALegUUID="a-2")
        assert sorted(SPELLINGS)[2] == "lower"
        assert send(client, "json", repeat, headers=headers).status_code == 200
        spooled = (tmp_path / "spool").glob("spool-*.jsonl")
        text = "".join(path.read_text() for path in spooled)
        assert text.count('"kind": "phlo"') == len(SPELLINGS) + 1
        assert SECRET not in text
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0

        failing_disk(False)
        wait_until(lambda: rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 6)
        stored = rows(
            "SELECT dial_a_leg_uuid, dial_status, dial_ring_status, duplicate, signature"
            " FROM webhook_events ORDER BY received_at"
        )
        dials = rows("SELECT a_leg_uuid, dial_status FROM dials ORDER BY a_leg_uuid")
    assert [row["dial_a_leg_uuid"] for row in stored] == [f"a-{i}" for i in range(5)] + ["a-2"]
    assert all(row["dial_status"] == "completed" and row["dial_ring_status"] for row in stored)
    assert [row["duplicate"] for row in stored] == [False] * 5 + [True]
    assert {row["signature"] for row in stored} == {"secret"}
    assert dials == [{"a_leg_uuid": f"a-{i}", "dial_status": "completed"} for i in range(5)]


def test_reports_are_refused_with_503_while_starting(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path, PHLO_SECRET=SECRET))
    try:
        client = TestClient(app)  # no `with`: the lifespan never runs, the writer never starts
        response = send(client, "json", report(), headers={"X-Callstatus-Secret": SECRET})
    finally:
        Runtime._instance = None
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "starting"
