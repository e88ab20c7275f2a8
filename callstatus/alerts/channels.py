"""Sending one message to one channel: Slack incoming webhook, email over SMTP, signed webhook.

A message's `text` is complete on its own: its first line is the title and its second the
one-line summary (callstatus/alerts/messages.py and reports.py write them so). Slack shows the
title as a header, the summary, the fields as a grid and the link as a button; email sends the
text and an HTML version with the PNGs shown inline; a webhook gets the message as JSON.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from typing import Any
from urllib.parse import urlsplit

import httpx

from callstatus.alerts.model import Channel, Message
from callstatus.core.settings import Settings

log = logging.getLogger("callstatus.alerts")

HTTP_TIMEOUT_S = 10.0
SMTP_TIMEOUT_S = 30.0
SIGNATURE_HEADER = "X-Callstatus-Signature"
DELIVERY_HEADER = "X-Callstatus-Delivery"
USER_AGENT = "callstatus-alerts"
# Slack's limits (Block Kit): header text, section text, field text, fields per section, URL.
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_FIELDS_PER_SECTION = 10
SLACK_URL_MAX = 3000
SLACK_ICONS = {
    "firing": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "report": ":bar_chart:",
}
_ERROR_SNIPPET = 200
_SPACES = re.compile(r"\s+")


class DeliveryError(Exception):
    """A channel did not take a message; the text (one line) says why and is shown on the
    Alerts page, so it never holds the channel's URL or secret."""


def send(
    channel: Channel, message: Message, settings: Settings, *, delivery_id: str | None = None
) -> None:
    """Deliver `message` through `channel` or raise DeliveryError. `delivery_id` (the outbox
    row) goes along in the X-Callstatus-Delivery header, so a receiver can drop a retry of a
    message it already has."""
    if channel.type == "slack":
        _post(channel, slack_payload(message), delivery_id, secret=None)
    elif channel.type == "webhook":
        _post(channel, webhook_payload(message), delivery_id, secret=channel.secret)
    elif channel.type == "email":
        _send_email(channel, message, settings)
    else:
        raise DeliveryError(f"channel {channel.name}: unknown type {channel.type!r}")


def summary(message: Message) -> str:
    """The message's second line (the first is its title); the title when there is none."""
    lines = message.text.splitlines()
    rest = lines[1:] if lines and lines[0].strip() == message.title.strip() else lines
    return next((line for line in rest if line.strip()), message.title)


# --- Slack -------------------------------------------------------------------------------


def slack_payload(message: Message) -> dict[str, Any]:
    """Block Kit for an incoming webhook, with `text` for notifications and old clients."""
    icon = SLACK_ICONS.get(message.kind, ":telephone_receiver:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{icon} {message.title}", SLACK_HEADER_MAX),
                "emoji": True,
            },
        },
        {"type": "section", "text": _mrkdwn(_cut(summary(message), SLACK_TEXT_MAX))},
    ]
    fields = [
        _mrkdwn(_cut(f"*{_slack_escape(label)}*\n{_slack_escape(value)}", SLACK_FIELD_MAX))
        for label, value in message.fields
    ]
    for start in range(0, len(fields), SLACK_FIELDS_PER_SECTION):
        blocks.append(
            {"type": "section", "fields": fields[start : start + SLACK_FIELDS_PER_SECTION]}
        )
    if message.link and len(message.link) <= SLACK_URL_MAX:
        button = {"type": "plain_text", "text": "Open in the dashboard"}
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": button, "url": message.link}],
            }
        )
    elif message.link:  # too long for a button: a plain link still works
        blocks.append(
            {"type": "context", "elements": [_mrkdwn(f"<{message.link}|Open in the dashboard>")]}
        )
    return {"text": f"{message.title}: {summary(message)}", "blocks": blocks}


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack leaves names, URLs and channel words in our values alone.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup (links, mentions): everything else is plain."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Webhook -----------------------------------------------------------------------------


def webhook_payload(message: Message) -> dict[str, Any]:
    """The message as JSON; the PNGs are named only (email carries them)."""
    return {
        "kind": message.kind,
        "title": message.title,
        "summary": summary(message),
        "text": message.text,
        "fields": dict(message.fields),
        "link": message.link,
        "images": [name for name, _ in message.images],
    }


def signature(body: bytes, secret: str) -> str:
    """X-Callstatus-Signature: hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _post(
    channel: Channel, payload: dict[str, Any], delivery_id: str | None, secret: str | None
) -> None:
    if not channel.url:
        raise DeliveryError(f"channel {channel.name} has no url")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    if delivery_id:
        headers[DELIVERY_HEADER] = delivery_id
    host = urlsplit(channel.url).hostname or "?"
    try:
        response = httpx.post(
            channel.url,
            content=body,
            headers=headers,
            timeout=HTTP_TIMEOUT_S,
            verify=_tls_context(),
        )
    except httpx.HTTPError as exc:
        # A Slack webhook URL is a credential: errors name the host only.
        detail = _one_line(str(exc)).replace(channel.url, host)
        raise DeliveryError(f"POST to {host} failed: {type(exc).__name__}: {detail}") from exc
    if not response.is_success:
        snippet = _one_line(response.text)[:_ERROR_SNIPPET]
        raise DeliveryError(f"{host} answered HTTP {response.status_code}: {snippet}".rstrip(": "))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, loaded once: building a context takes most of a POST's time
    (about 0.2 s)."""
    return ssl.create_default_context()


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


# --- Email -------------------------------------------------------------------------------


def _send_email(channel: Channel, message: Message, settings: Settings) -> None:
    host, port = settings.smtp_host, settings.smtp_port
    sender = settings.smtp_from
    if not host:
        raise DeliveryError("SMTP_HOST is not set: email channels need an SMTP server")
    if not sender:
        raise DeliveryError("SMTP_FROM is not set: email channels need a sender address")
    if not channel.to:
        raise DeliveryError(f"channel {channel.name} has no recipients (to)")
    mail = email_message(message, sender, channel.to)
    try:
        with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.ehlo()
            if settings.smtp_starttls:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"SMTP {host}:{port} offers no STARTTLS (SMTP_STARTTLS=false sends "
                        "without TLS)"
                    )
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(mail)
    except (smtplib.SMTPException, OSError) as exc:
        detail = _one_line(str(exc)) or type(exc).__name__
        raise DeliveryError(f"SMTP {host}:{port}: {type(exc).__name__}: {detail}") from exc
    if refused:  # the others have it: sending again would repeat it to them
        log.warning("%s: recipients refused: %s", channel.name, ", ".join(sorted(refused)))


def email_message(message: Message, sender: str, to: tuple[str, ...]) -> EmailMessage:
    """Plain text and HTML alternatives; the PNGs inline in the HTML (multipart/related),
    each with its file name, so mail clients also list them as attachments."""
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "callstatus"
    mail["Message-ID"] = make_msgid(domain=domain)
    cids = [make_msgid(domain=domain) for _ in message.images]
    mail.set_content(message.text)
    html = message.html if message.html is not None else email_html(message, cids)
    mail.add_alternative(html, subtype="html")
    if message.images:
        html_part = next(p for p in mail.iter_parts() if p.get_content_type() == "text/html")
        for (name, png), cid in zip(message.images, cids, strict=True):
            html_part.add_related(
                png, maintype="image", subtype="png", cid=cid, filename=name, disposition="inline"
            )
    return mail


def email_html(message: Message, cids: list[str]) -> str:
    """The HTML body: title, summary, fields as a table, the charts, the link; every value
    escaped."""
    rows = "".join(
        f'<tr><th align="left" style="padding:4px 12px 4px 0;vertical-align:top">'
        f'{escape(label)}</th><td style="padding:4px 0">'
        f"{escape(value).replace(chr(10), '<br>')}</td></tr>"
        for label, value in message.fields
    )
    table = f'<table style="border-collapse:collapse;margin:12px 0">{rows}</table>' if rows else ""
    images = "".join(
        f'<p><img src="cid:{cid.strip("<>")}" alt="{escape(name)}" width="600" '
        f'style="max-width:100%;height:auto"></p>'
        for (name, _), cid in zip(message.images, cids, strict=True)
    )
    link = (
        f'<p><a href="{escape(message.link, quote=True)}">Open in the dashboard</a></p>'
        if message.link
        else ""
    )
    return (
        '<!DOCTYPE html><html><body style="font-family:Arial,Helvetica,sans-serif;'
        'font-size:14px;color:#222">'
        f'<h2 style="margin:0 0 8px">{escape(message.title)}</h2>'
        f"<p>{escape(summary(message))}</p>{table}{images}{link}</body></html>"
    )
