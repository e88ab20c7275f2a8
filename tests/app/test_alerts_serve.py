"""Alerts as `callstatus serve` runs them: a real server process, signed webhooks, a local HTTP
server receiving Slack's POSTs, aiosmtpd receiving a report, and a bad rules file at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.alerts.peers import HttpPeer, http_peer, smtp_peer
from tests.factories import form, signed_headers
from tests.servers import start_server

TOKEN = "alerts-serve-webhook-token"


def _dial(base: str, status: str) -> None:
    a_leg = str(uuid.uuid4())
    params = {"CallUUID": a_leg, "DialALegUUID": a_leg, "DialStatus": status}
    body, headers = form(params)
    url = f"{base}/plivo/dial/action"
    headers.update(signed_headers("POST", url, {k: [v] for k, v in params.items()}, TOKEN))
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _texts(peer: HttpPeer) -> list[str]:
    return [str(r.json()["text"]) for r in peer.accepted]


def test_a_rule_fires_once_resolves_once_and_silence_fires(tmp_path: Path) -> None:
    with http_peer() as slack, smtp_peer() as mail:
        rules = tmp_path / "alerts.toml"
        rules.write_text(
            f"""
[channels.ops-slack]
type = "slack"
url = "{slack.url}/services/T000/B000/XXXX"

[channels.ops-mail]
type = "email"
to = ["ops@example.com"]

[[rules]]
name = "Agents not picking up"
metric = "dial_answer_rate"
window = "15m"
below = 0.5
min_volume = 5
channels = ["ops-slack"]

[[rules]]
name = "No webhooks"
metric = "minutes_since_last_webhook"
above = 0.1
channels = ["ops-slack"]

[[reports]]
name = "Outcomes every minute"
every = "1m"
range = "1h"
channels = ["ops-mail"]
""",
            encoding="utf-8",
        )
        env = {
            "PLIVO_AUTH_TOKEN": TOKEN, "CALLSTATUS_ALERTS": str(rules),
            "CALLSTATUS_ALERT_INTERVAL": "2", "SMTP_HOST": mail.host,
            "SMTP_PORT": str(mail.port), "SMTP_FROM": "callstatus@example.com",
            "SMTP_STARTTLS": "false",
        }  # fmt: skip
        server = start_server(tmp_path / "alerts.duckdb", env)
        try:
            # PUBLIC_BASE_URL is unset: the server checks signatures against its own URL.
            for status in ["completed"] * 2 + ["no-answer"] * 8:
                _dial(server.url, status)

            def fired() -> bool:
                return any("Agents not picking up" in t for t in _texts(slack))

            _until(fired, 30, "one Slack POST naming the rule")
            time.sleep(5)  # two more evaluations: still one message
            firing = [t for t in _texts(slack) if "Agents not picking up" in t]
            assert len(firing) == 1 and "resolved" not in firing[0].lower()
            assert slack.accepted[0].path == "/services/T000/B000/XXXX"
            assert "blocks" in slack.accepted[0].json()

            for _ in range(30):
                _dial(server.url, "completed")

            def resolved() -> bool:
                return any("resolved" in t.lower() and "Agents" in t for t in _texts(slack))

            _until(resolved, 30, "one resolved POST")
            # Traffic stopped: the silence rule fires (0.1 min = 6 s without a webhook).
            _until(lambda: any("No webhooks" in t for t in _texts(slack)), 30, "No webhooks fired")
            agents = [t for t in _texts(slack) if "Agents not picking up" in t]
            assert len(agents) == 2  # fired once, resolved once

            # The report, every minute by the clock: an email with the dashboard's charts.
            mails = mail.wait_for(1, timeout=75)
            report = mails[0]
            pngs = _attachments(report)
            assert pngs and all(data.startswith(b"\x89PNG") for data in pngs.values())
        finally:
            assert server.stop() == 0


def _attachments(mail: Any) -> dict[str, bytes]:
    message = mail.message
    return {
        str(part.get_filename()): part.get_content()
        for part in message.walk()
        if part.get_content_type() == "image/png"
    }


def test_a_malformed_rules_file_stops_serve_at_start(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        '[channels.ops]\ntype = "slack"\nurl = "https://hooks.slack.com/x"\n\n'
        '[[rules]]\nname = "Agents"\nmetric = "dial_answer_rate"\nwindow = "15x"\n'
        'below = 0.5\nchannels = ["ops"]\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLSTATUS_", "PLIVO_"))}
    env["CALLSTATUS_ALERTS"] = str(rules)
    result = subprocess.run(
        [sys.executable, "-m", "callstatus.cli", "serve", "--port", "0", "--db",
         str(tmp_path / "x.duckdb")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("callstatus: error: ")
    for part in ("alerts.toml", "line 8", "Agents", "window"):
        assert part in line, (part, line)
