"""The loaded file's channels are kept by name and type (never their URLs or secrets), so the
Alerts page offers every channel for a test message, those only reports use included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from callstatus.alerts import rules, state
from callstatus.core.db import Database

TEXT = """
[channels.ops-slack]
type = "slack"
url = "https://hooks.slack.com/services/T000/B000/SECRETPART"

[channels.pager]
type = "webhook"
url = "https://example.com/hook"
secret = "never-stored"

[[rules]]
name = "Calls"
metric = "calls"
window = "1h"
below = 1
channels = ["ops-slack"]

[[reports]]
name = "Hourly"
every = "hour"
channels = ["pager"]
"""


def test_every_channel_is_stored_by_name_and_type_only(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(TEXT, encoding="utf-8")
    config = rules.load(path)
    db = Database(tmp_path / "channels.duckdb")
    cur = db.cursor()
    state.replace_rules(cur, config, datetime(2026, 12, 1, tzinfo=UTC))
    state.replace_rules(cur, config, datetime(2026, 12, 2, tzinfo=UTC))  # replaced, not added
    rows = cur.execute("SELECT * FROM alert_channels ORDER BY channel").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("ops-slack", "slack"), ("pager", "webhook")]
    stored = str(cur.execute("SELECT * FROM alert_channels").fetchall())
    assert "SECRETPART" not in stored and "never-stored" not in stored
    db.close()
