"""Answer, fallback and Dial action XML, parsed back with xml.etree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from callstatus.receiver.xml import NO_NUMBERS_NOTICE, answer_xml, empty_xml
from tests.factories import app_client, make_settings

BASE = "https://calls.example.com"


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
    assert dial.get("action") == f"{BASE}/plivo/dial/action"
    assert dial.get("method") == "POST"
    assert dial.get("callbackUrl") == f"{BASE}/plivo/dial/callback"
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
                    assert dial.get("action") == f"{expected_base}/plivo/dial/action", case
                    assert dial.get("callbackUrl") == f"{expected_base}/plivo/dial/callback", case


def test_dial_action_replies_empty_response(tmp_path: Path) -> None:
    with app_client(tmp_path, DIAL_NUMBERS="+14155550100") as client:
        for method in ("GET", "POST"):
            response = client.request(
                method, "/plivo/dial/action", params={"DialStatus": "completed"}
            )
            assert response.status_code == 200
            assert response.headers["content-type"].split(";")[0] == "application/xml"
            assert list(_parse(response.text)) == []
