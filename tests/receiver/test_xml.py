"""Answer, fallback and Dial action XML, parsed back with xml.etree; the retry fragment on its
URLs, and webhooks Plivo sends to them."""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urldefrag, urlencode

import httpx
import pydantic
import pytest
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

from callstatus.core.plivo import RETRY_FRAGMENT
from callstatus.receiver.xml import NO_NUMBERS_NOTICE, answer_xml, callback_url, empty_xml
from tests.factories import app_client, make_settings, rows, signed_request

BASE = "https://calls.example.com"
ACTION = f"{BASE}/plivo/dial/action{RETRY_FRAGMENT}"
CALLBACK = f"{BASE}/plivo/dial/callback{RETRY_FRAGMENT}"


def _parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "Response"
    return root


def test_speak_then_dial_numbers_and_sip_users(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        DIAL_NUMBERS="+14155550100, sip:agent@phone.plivo.com ,SIP:desk@phone.plivo.com,4420718",
        ANSWER_SPEAK_TEXT="Hello & <welcome>",
    )
    root = _parse(answer_xml(settings, BASE))
    assert [child.tag for child in root] == ["Speak", "Dial"]
    assert root[0].text == "Hello & <welcome>"
    dial = root[1]
    assert [(child.tag, child.text) for child in dial] == [
        ("Number", "+14155550100"),
        ("User", "sip:agent@phone.plivo.com"),
        ("User", "SIP:desk@phone.plivo.com"),
        ("Number", "4420718"),
    ]
    assert dial.get("action") == ACTION
    assert dial.get("method") == "POST"
    assert dial.get("callbackUrl") == CALLBACK
    assert dial.get("callbackMethod") == "POST"
    # Plivo's defaults apply when DIAL_TIMEOUT / DIAL_CALLER_ID are unset.
    assert dial.get("timeout") is None
    assert dial.get("callerId") is None


def test_default_greeting(tmp_path: Path) -> None:
    root = _parse(answer_xml(make_settings(tmp_path, DIAL_NUMBERS="+1"), BASE))
    assert root[0].tag == "Speak"
    assert root[0].text == "Connecting your call"


def test_dial_timeout_and_caller_id(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, DIAL_NUMBERS="+14155550100", DIAL_TIMEOUT="25", DIAL_CALLER_ID="+14155550199"
    )
    dial = _parse(answer_xml(settings, BASE)).find("Dial")
    assert dial is not None
    assert dial.get("timeout") == "25"
    assert dial.get("callerId") == "+14155550199"


@pytest.mark.parametrize("numbers", [None, "", " , "])
def test_no_dial_numbers_speaks_and_hangs_up(tmp_path: Path, numbers: str | None) -> None:
    values = {} if numbers is None else {"DIAL_NUMBERS": numbers}
    root = _parse(answer_xml(make_settings(tmp_path, **values), BASE))
    assert [child.tag for child in root] == ["Speak", "Hangup"]
    assert root[0].text == NO_NUMBERS_NOTICE


def test_empty_xml() -> None:
    root = _parse(empty_xml())
    assert list(root) == []
    assert root.text is None


@pytest.mark.parametrize(
    ("public_base_url", "client_to_expected"),
    [
        pytest.param(BASE, {"http://testserver": BASE}, id="public-base-url"),
        pytest.param(f"{BASE}/hooks/", {"http://testserver": f"{BASE}/hooks"}, id="with-path"),
        pytest.param(
            None,
            {
                "http://testserver": "http://testserver",
                "http://127.0.0.1:8123": "http://127.0.0.1:8123",
            },
            id="from-request-host",
        ),
    ],
)
def test_answer_reply_uses_absolute_urls(
    tmp_path: Path, public_base_url: str | None, client_to_expected: dict[str, str]
) -> None:
    values: dict[str, object] = {"DIAL_NUMBERS": "+14155550100"}
    if public_base_url:
        values["PUBLIC_BASE_URL"] = public_base_url
    with app_client(tmp_path, **values) as client:
        for client_base, expected_base in client_to_expected.items():
            for path in ("/plivo/answer", "/plivo/fallback"):
                for method in ("GET", "POST"):
                    case = (client_base, path, method)
                    response = client.request(
                        method, f"{client_base}{path}", params={"CallUUID": "u1"}
                    )
                    assert response.status_code == 200, case
                    assert response.headers["content-type"].split(";")[0] == "application/xml"
                    dial = _parse(response.text).find("Dial")
                    assert dial is not None, case
                    action = f"{expected_base}/plivo/dial/action{RETRY_FRAGMENT}"
                    assert dial.get("action") == action, case
                    callback = f"{expected_base}/plivo/dial/callback{RETRY_FRAGMENT}"
                    assert dial.get("callbackUrl") == callback, case


def test_dial_action_replies_empty_response(tmp_path: Path) -> None:
    with app_client(tmp_path, DIAL_NUMBERS="+14155550100") as client:
        for method in ("GET", "POST"):
            response = client.request(
                method, "/plivo/dial/action", params={"DialStatus": "completed"}
            )
            assert response.status_code == 200
            assert response.headers["content-type"].split(";")[0] == "application/xml"
            assert list(_parse(response.text)) == []


def _fragment_settings() -> dict[str, str]:
    assert RETRY_FRAGMENT.startswith("#") and RETRY_FRAGMENT.count("#") == 1
    pairs = parse_qs(RETRY_FRAGMENT[1:], keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in pairs.values()), pairs
    return {key: values[0] for key, values in pairs.items()}


def test_the_retry_fragment_retries_a_503_within_plivos_bounds() -> None:
    # Plivo's documented ranges and defaults (plivo-webhooks.md section 8).
    fragment = _fragment_settings()
    assert set(fragment) <= {"ct", "rt", "tt", "rc", "rp"}
    retried = set(fragment["rp"].split(","))
    # A 503 (starting, disk full) must be retried, and so must what Plivo retries by default;
    # a 4xx is a refusal that a retry would meet again.
    assert {"5xx", "ct", "rt"} <= retried
    assert retried.isdisjoint({"4xx", "all"})
    retries = int(fragment["rc"])
    assert 1 < retries <= 5
    connect = int(fragment.get("ct", "2000"))
    read = int(fragment.get("rt", "40000"))
    total = int(fragment.get("tt", "55000"))
    assert 100 <= connect <= 10_000 and 100 <= read <= 40_000 and 100 <= total <= 55_000
    # Every attempt, each timing out on its read, ends before the total timeout cuts one off.
    assert (retries + 1) * read <= total


def test_the_fragment_is_escaped_in_the_xml_text(tmp_path: Path) -> None:
    text = answer_xml(make_settings(tmp_path, DIAL_NUMBERS="+14155550100"), BASE)
    escaped = RETRY_FRAGMENT.replace("&", "&amp;")
    assert "&" in RETRY_FRAGMENT  # else this test proves nothing
    assert f'action="{BASE}/plivo/dial/action{escaped}"' in text
    assert f'callbackUrl="{BASE}/plivo/dial/callback{escaped}"' in text
    assert text.count("&") == text.count("&amp;")
    # A strict parser reads the attributes back unescaped (the parse fails on a bare "&").
    dial = _parse(text).find("Dial")
    assert dial is not None
    assert dial.get("action") == ACTION


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (BASE, f"{BASE}/plivo/dial/action"),
        (f"{BASE}/", f"{BASE}/plivo/dial/action"),
        (f"{BASE}/hooks", f"{BASE}/hooks/plivo/dial/action"),
        # Bases ending in a bare "#" or "?" (PUBLIC_BASE_URL refuses them; a Host header may not).
        (f"{BASE}/#", f"{BASE}/plivo/dial/action"),
        (f"{BASE}?", f"{BASE}/plivo/dial/action"),
        (f"{BASE}/hooks/#", f"{BASE}/hooks/plivo/dial/action"),
        # From a Host header when PUBLIC_BASE_URL is unset: anything may arrive.
        ("http://calls.example.com#x&rc=0", "http://calls.example.com/plivo/dial/action"),
        ("http://calls.example.com?t=1", "http://calls.example.com/plivo/dial/action?t=1"),
        ("http://calls.example.com?t=1#x", "http://calls.example.com/plivo/dial/action?t=1"),
        ("http://a]b", "http://a]b/plivo/dial/action"),
    ],
)
def test_callback_url_has_one_fragment_after_our_path(base_url: str, expected: str) -> None:
    url = callback_url(base_url, "/plivo/dial/action")
    assert url == expected + RETRY_FRAGMENT
    assert url.count("#") == 1


@pytest.mark.parametrize("suffix", [RETRY_FRAGMENT, "/#", "?", "/hooks/#"])
def test_a_public_base_url_with_a_fragment_is_refused(tmp_path: Path, suffix: str) -> None:
    # The receiver appends paths to PUBLIC_BASE_URL to rebuild the URL Plivo signed: after a
    # "#" or "?" every genuine webhook would fail verification.
    with pytest.raises(pydantic.ValidationError, match="fragment"):
        make_settings(tmp_path, PUBLIC_BASE_URL=f"{BASE}{suffix}")


def test_a_host_header_with_a_fragment_gives_one_fragment(tmp_path: Path) -> None:
    with app_client(tmp_path, DIAL_NUMBERS="+14155550100") as client:
        for host in ("calls.example.com#rc=0", "calls.example.com]#"):
            response = client.post("/plivo/answer", headers={"host": host}, data={"CallUUID": host})
            assert response.status_code == 200, host
            dial = _parse(response.text).find("Dial")
            assert dial is not None
            netloc = host.partition("#")[0]
            assert dial.get("action") == f"http://{netloc}/plivo/dial/action{RETRY_FRAGMENT}"


TOKEN = "main-account-token"
SIGNED = {"PLIVO_AUTH_TOKEN": TOKEN, "PUBLIC_BASE_URL": BASE, "DIAL_NUMBERS": "+14155550100"}


def _as_plivo_sends(client: Any, xml_url: str, params: dict[str, str]) -> httpx.Response:
    """POST `params` to a URL of our XML as Plivo does: the request goes to the URL without its
    fragment, signed by the plivo SDK's own V3 code for that URL."""
    called = urldefrag(xml_url).url
    assert "#" not in called
    nonce = secrets.token_hex(10)
    signed_text = construct_post_url(called, dict(params))
    signature = get_signature_v3(TOKEN, signed_text, nonce).decode("ascii")
    headers = {
        "X-Plivo-Signature-V3": signature,
        "X-Plivo-Signature-V3-Nonce": nonce,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    # httpx, like any HTTP client, leaves the fragment out of the request it sends (the caller
    # checks the request's raw path).
    response: httpx.Response = client.post(
        xml_url, content=urlencode(params).encode(), headers=headers
    )
    return response


def test_dial_webhooks_to_the_xml_urls_verify_without_their_fragment(tmp_path: Path) -> None:
    with app_client(tmp_path, **SIGNED) as client:
        answer = signed_request(client, "POST", "/plivo/answer", [("CallUUID", "a1")], base=BASE)
        assert answer.status_code == 200, answer.text
        dial = _parse(answer.text).find("Dial")
        assert dial is not None
        assert (dial.get("action"), dial.get("callbackUrl")) == (ACTION, CALLBACK)
        sent = {
            "dial_action": (ACTION, {"DialStatus": "completed", "DialALegUUID": "a1"}),
            "dial_callback": (CALLBACK, {"DialAction": "answer", "DialALegUUID": "a1"}),
        }
        for kind, (url, params) in sent.items():
            response = _as_plivo_sends(client, url, {"CallUUID": f"{kind}-1", **params})
            assert response.status_code == 200, (kind, response.text)
            assert b"#" not in response.request.url.raw_path
        stored = rows(
            "SELECT kind, signature, params FROM webhook_events WHERE kind LIKE 'dial_%' "
            "ORDER BY kind"
        )
        # The same webhook signed for the URL with its fragment (as if Plivo signed the
        # fragment too) is refused: what verifies above is the URL without it.
        nonce = secrets.token_hex(10)
        literal = ACTION + "?CallUUIDx"
        forged = {
            "X-Plivo-Signature-V3": get_signature_v3(TOKEN, literal, nonce).decode("ascii"),
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
        refused = client.post(ACTION, data={"CallUUID": "x"}, headers=forged)
        assert refused.status_code == 403
    assert [(row["kind"], row["signature"]) for row in stored] == [
        ("dial_action", "valid"),
        ("dial_callback", "valid"),
    ]
    assert json.loads(stored[0]["params"])["CallUUID"] == "dial_action-1"
