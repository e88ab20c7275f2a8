"""Channels against real local peers: Slack and webhook POSTs to an HTTP server that checks the
signature, email through aiosmtpd (plain, and STARTTLS with login against a test CA)."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from callstatus.alerts import channels
from callstatus.alerts.channels import DeliveryError, send
from callstatus.alerts.model import Channel, Message
from callstatus.core.settings import Settings
from tests.alerts.peers import http_peer, make_authority, smtp_peer, valid_signature
from tests.factories import make_settings
from tests.servers import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # not a picture: the bytes must arrive as sent
MESSAGE = Message(
    kind="firing",
    title="Firing: Agents <not> picking up",
    text="Firing: Agents <not> picking up\n"
    "dial answer rate is 31.2%, below 50.0%, over the last 15 min (34 Dials).\n"
    "Dashboard: https://calls.example.com/overview?range=Last+hour&dir=inbound",
    fields=(("Rule", "Agents <not> picking up"), ("Value", "31.2%"), ("Filters", "a & b")),
    link="https://calls.example.com/overview?range=Last+hour&dir=inbound",
)
REPORT = Message(
    kind="report",
    title="Daily call outcomes",
    text="Daily call outcomes\n120 calls, dial answer rate 81.0%.\nCalls: 120",
    fields=(("Calls", "120"), ("Top causes", "3000 No Answer: 4\n3010 Busy Line: 2")),
    images=(("answer-rates.png", PNG), ("hangup-causes-a.png", PNG[::-1])),
)


def _settings(tmp_path: Path, **values: object) -> Settings:
    return make_settings(tmp_path, SMTP_STARTTLS=False, **values)


def test_slack_gets_readable_blocks_and_text(tmp_path: Path) -> None:
    with http_peer() as peer:
        channel = Channel("ops-slack", "slack", url=f"{peer.url}/services/T000/B000/XXXX")
        send(channel, MESSAGE, _settings(tmp_path), delivery_id="d-1")
    (received,) = peer.accepted
    assert received.path == "/services/T000/B000/XXXX"
    assert received.headers["Content-Type"].startswith("application/json")
    assert received.headers["X-Callstatus-Delivery"] == "d-1"
    assert "X-Callstatus-Signature" not in received.headers
    payload = received.json()
    assert payload["text"].startswith("Firing: Agents <not> picking up: dial answer rate is 31.2%")
    header, summary, grid, actions = payload["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert header["text"]["text"].endswith("Firing: Agents <not> picking up")
    # mrkdwn reads < > & as markup: they arrive escaped.
    assert summary["text"]["text"].startswith("dial answer rate is 31.2%, below 50.0%")
    assert [f["text"] for f in grid["fields"]] == [
        "*Rule*\nAgents &lt;not&gt; picking up",
        "*Value*\n31.2%",
        "*Filters*\na &amp; b",
    ]
    assert all(f["verbatim"] for f in grid["fields"])
    (button,) = actions["elements"]
    assert button["url"] == MESSAGE.link


def test_slack_splits_many_fields_and_leaves_images_out(tmp_path: Path) -> None:
    many = Message(
        kind="report",
        title="R",
        text="R\nsummary",
        fields=tuple((f"label {i}", str(i)) for i in range(13)),
        images=(("chart.png", PNG),),
    )
    with http_peer() as peer:
        send(Channel("s", "slack", url=peer.url), many, _settings(tmp_path))
    blocks = peer.accepted[0].json()["blocks"]
    sections = [b for b in blocks if "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 3]
    assert "chart.png" not in peer.accepted[0].body.decode()
    assert not any(b["type"] == "actions" for b in blocks), "no link, no button"


def test_webhook_is_signed_json_the_receiver_verifies(tmp_path: Path) -> None:
    with http_peer(secret="change-me") as peer:
        channel = Channel(
            "pager", "webhook", url=f"{peer.url}/hooks/callstatus", secret="change-me"
        )
        send(channel, REPORT, _settings(tmp_path), delivery_id="d-2")
    (received,) = peer.accepted
    assert received.path == "/hooks/callstatus"
    assert valid_signature("change-me", received.headers, received.body)
    body = received.json()
    assert body["kind"] == "report"
    assert body["title"] == "Daily call outcomes"
    assert body["summary"] == "120 calls, dial answer rate 81.0%."
    assert body["fields"]["Top causes"] == "3000 No Answer: 4\n3010 Busy Line: 2"
    assert body["images"] == ["answer-rates.png", "hangup-causes-a.png"]
    assert received.headers["X-Callstatus-Delivery"] == "d-2"


def test_signature_is_hmac_sha256_hex_of_the_exact_body() -> None:
    # The published definition, computed by hand: HMAC-SHA256("key", "The quick brown fox...").
    body = b"The quick brown fox jumps over the lazy dog"
    assert channels.signature(body, "key") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_a_wrong_secret_is_refused_and_the_error_keeps_the_url_secret(tmp_path: Path) -> None:
    with http_peer(secret="the-receivers-secret") as peer:
        url = f"{peer.url}/hooks/secret-path-token"
        channel = Channel("pager", "webhook", url=url, secret="stale-secret")
        with pytest.raises(DeliveryError) as caught:
            send(channel, MESSAGE, _settings(tmp_path))
    assert peer.requests[0].status == 401 and not peer.accepted
    assert "HTTP 401" in str(caught.value)
    assert "secret-path-token" not in str(caught.value)
    assert "stale-secret" not in str(caught.value)


def test_an_unreachable_server_is_a_delivery_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T/B/secret-token"
    with pytest.raises(DeliveryError) as caught:
        send(Channel("s", "slack", url=url), MESSAGE, _settings(tmp_path))
    assert "127.0.0.1" in str(caught.value)
    assert "secret-token" not in str(caught.value)


def _parts(mail: EmailMessage) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for part in mail.walk():
        found.setdefault(part.get_content_type(), []).append(part)
    return found


def test_email_has_text_html_and_the_pngs(tmp_path: Path) -> None:
    with smtp_peer() as peer:
        settings = _settings(
            tmp_path, SMTP_HOST=peer.host, SMTP_PORT=peer.port, SMTP_FROM="alerts@example.com"
        )
        channel = Channel("ops-mail", "email", to=("ops@example.com", "lead@example.com"))
        send(channel, REPORT, settings)
        (mail,) = peer.wait_for(1)
    assert mail.sender == "alerts@example.com"
    assert mail.recipients == ["ops@example.com", "lead@example.com"]
    assert not mail.tls
    message = mail.message
    assert message["Subject"] == "Daily call outcomes"
    assert message["To"] == "ops@example.com, lead@example.com"
    parts = _parts(message)
    (text,) = parts["text/plain"]
    assert text.get_content() == REPORT.text + "\n"
    (html,) = parts["text/html"]
    body = html.get_content()
    assert "<h2" in body and "Daily call outcomes" in body
    assert "3000 No Answer: 4<br>3010 Busy Line: 2" in body
    images = parts["image/png"]
    assert [p.get_filename() for p in images] == ["answer-rates.png", "hangup-causes-a.png"]
    assert [p.get_content() for p in images] == [PNG, PNG[::-1]]
    for image in images:  # each shown in the HTML where it belongs
        assert f"cid:{image['Content-ID'].strip('<>')}" in body


def test_email_html_escapes_what_it_shows(tmp_path: Path) -> None:
    with smtp_peer() as peer:
        settings = _settings(tmp_path, SMTP_HOST=peer.host, SMTP_PORT=peer.port, SMTP_FROM="a@b.c")
        send(Channel("m", "email", to=("ops@example.com",)), MESSAGE, settings)
        (mail,) = peer.wait_for(1)
    (html,) = _parts(mail.message)["text/html"]
    body = html.get_content()
    assert "Agents &lt;not&gt; picking up" in body and "<not>" not in body
    assert 'href="https://calls.example.com/overview?range=Last+hour&amp;dir=inbound"' in body
    assert "image/png" not in _parts(mail.message)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"SMTP_FROM": "a@b.c"}, "SMTP_HOST"),
        ({"SMTP_HOST": "127.0.0.1"}, "SMTP_FROM"),
    ],
)
def test_email_without_its_settings_says_which(
    tmp_path: Path, values: dict[str, str], expected: str
) -> None:
    with pytest.raises(DeliveryError, match=expected):
        send(Channel("m", "email", to=("x@y.z",)), MESSAGE, _settings(tmp_path, **values))


def test_starttls_required_but_not_offered_sends_nothing(tmp_path: Path) -> None:
    with smtp_peer() as peer:
        settings = make_settings(
            tmp_path, SMTP_HOST=peer.host, SMTP_PORT=peer.port, SMTP_FROM="a@b.c"
        )
        assert settings.smtp_starttls, "STARTTLS is the default"
        with pytest.raises(DeliveryError, match="offers no STARTTLS"):
            send(Channel("m", "email", to=("x@y.z",)), MESSAGE, settings)
    assert peer.mails == []


def test_starttls_then_login_with_a_trusted_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = make_authority(tmp_path)
    # ssl.create_default_context() trusts SSL_CERT_FILE: the test CA, as a system would trust
    # its own.
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca))
    with smtp_peer(tls=authority.server_context(), users={"alerts": "s3cret"}) as peer:
        settings = make_settings(
            tmp_path,
            SMTP_HOST=peer.host,
            SMTP_PORT=peer.port,
            SMTP_FROM="alerts@example.com",
            SMTP_USER="alerts",
            SMTP_PASSWORD="s3cret",
        )
        send(Channel("m", "email", to=("ops@example.com",)), REPORT, settings)
        (mail,) = peer.wait_for(1)
    assert mail.tls and mail.login == "alerts"
    assert [p.get_content() for p in _parts(mail.message)["image/png"]] == [PNG, PNG[::-1]]


def test_starttls_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)  # not trusted: SSL_CERT_FILE left alone
    with smtp_peer(tls=authority.server_context()) as peer:
        settings = make_settings(
            tmp_path, SMTP_HOST=peer.host, SMTP_PORT=peer.port, SMTP_FROM="a@b.c"
        )
        with pytest.raises(DeliveryError, match="SSLCertVerificationError"):
            send(Channel("m", "email", to=("x@y.z",)), MESSAGE, settings)
    assert peer.mails == []


def test_a_wrong_smtp_password_is_a_delivery_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = make_authority(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca))
    with smtp_peer(tls=authority.server_context(), users={"alerts": "s3cret"}) as peer:
        settings = make_settings(
            tmp_path,
            SMTP_HOST=peer.host,
            SMTP_PORT=peer.port,
            SMTP_FROM="a@b.c",
            SMTP_USER="alerts",
            SMTP_PASSWORD="wrong",
        )
        with pytest.raises(DeliveryError, match="SMTPAuthenticationError") as caught:
            send(Channel("m", "email", to=("x@y.z",)), MESSAGE, settings)
    assert "wrong" not in str(caught.value)
    assert peer.mails == []


def test_an_smtp_server_that_is_not_there(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_FROM="a@b.c")
    with pytest.raises(DeliveryError, match=f"SMTP 127.0.0.1:{port}"):
        send(Channel("m", "email", to=("x@y.z",)), MESSAGE, settings)


def test_the_summary_is_the_line_after_the_title() -> None:
    assert channels.summary(MESSAGE).startswith("dial answer rate is 31.2%")
    bare = Message(kind="test", title="T", text="just one line")
    assert channels.summary(bare) == "just one line"
    assert json.loads(json.dumps(channels.webhook_payload(bare)))["fields"] == {}
