"""The whole dashboard headless (AppTest) on a seeded database: every page, real values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.cli import main as callstatus
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.dashboard import tiles
from callstatus.dashboard.text import plain

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")
PAGES = ["screens/causes.py", "screens/legs.py", "screens/calls.py", "screens/health.py"]


def _point_at(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """400 simulated calls over the last 3 days (well inside "Last 30 days")."""
    path = tmp_path_factory.mktemp("app") / "seeded.duckdb"
    assert (
        callstatus(["seed", "--db", str(path), "--calls", "400", "--days", "3", "--seed", "11"])
        == 0
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, path)
        yield path
    settings_module.get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    settings_module.get_settings.cache_clear()


def _one(path: Path, sql: str) -> object:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    assert row is not None
    return row[0]


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in {"range": "Last 30 days", **query}.items():
        at.query_params[key] = value
    return at.run()


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no {label!r} tile among {[m.label for m in at.metric]}"
    return str(values[0])


def test_overview_tiles_equal_the_views(seeded: Path) -> None:
    at = _app()
    assert not at.exception
    dial_rate = _one(seeded, "SELECT avg((dial_status = 'completed')::INT) FROM dials")
    calls = _one(seeded, "SELECT count(*) FROM calls")
    call_rate = _one(
        seeded,
        "SELECT avg(answered::INT) FILTER (WHERE outcome <> 'in-progress') FROM calls",
    )
    b_rate = _one(seeded, "SELECT avg(answered::INT) FROM dial_legs")
    assert _metric(at, "Dial answer rate") == tiles.fmt_rate(dial_rate)
    assert _metric(at, "Calls") == tiles.fmt_count(calls)
    assert _metric(at, "Call answer rate") == tiles.fmt_rate(call_rate)
    assert _metric(at, "B-leg answer rate") == tiles.fmt_rate(b_rate)
    assert all(m.help for m in at.metric), "every KPI explains itself on hover"


def test_outbound_leads_with_the_call_answer_rate(seeded: Path) -> None:
    at = _app(dir="outbound")
    assert not at.exception
    assert at.metric[0].label == "Call answer rate"
    rate = _one(
        seeded,
        "SELECT avg(answered::INT) FILTER (WHERE outcome <> 'in-progress') FROM calls "
        "WHERE direction = 'outbound'",
    )
    assert at.metric[0].value == tiles.fmt_rate(rate)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(seeded: Path, page: str) -> None:
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value


def test_health_counts_every_webhook(seeded: Path) -> None:
    at = _app()
    at.switch_page("screens/health.py").run()
    stored = _one(seeded, "SELECT count(*) FROM webhook_events")
    assert _metric(at, "Webhooks") == tiles.fmt_count(stored)


def test_calls_page_shows_one_call(seeded: Path) -> None:
    call, outcome = (
        _one(seeded, "SELECT call_uuid FROM calls ORDER BY started_at LIMIT 1"),
        _one(seeded, "SELECT outcome FROM calls ORDER BY started_at LIMIT 1"),
    )
    at = _app(q=str(call))
    at.switch_page("screens/calls.py").run()
    assert not at.exception
    # Metric values and headers are Markdown: values from webhooks arrive escaped.
    assert _metric(at, "Outcome") == plain(outcome)
    assert any(plain(call) in h.value for h in at.header)


def test_an_empty_database_shows_how_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "empty.duckdb"
    Database(path).close()
    _point_at(monkeypatch, path)
    at = _app()
    assert not at.exception
    text = " ".join(str(c.value) for c in at.code)
    assert "/plivo/answer" in text and "/plivo/hangup" in text
    assert "callstatus demo" in text


# -- text from outside, and the advice built from refused requests ---------------------------


def test_plain_and_code_leave_no_markup() -> None:
    from callstatus.dashboard.text import WORD_JOINER, code

    planted = "**b** [l](http://evil.example) ![i](x.png) <img src=x> :smile: $x$ `c` a@b.io\n# h"
    escaped = plain(planted)
    # Every ASCII punctuation character escaped, nothing left to start Markdown or HTML.
    assert all(
        escaped[i - 1] == "\\" for i, ch in enumerate(escaped) if ch in "*[]()<>!:$`#@" and i > 0
    )
    assert "\n" not in escaped
    assert f"{WORD_JOINER}http" in escaped and f"@{WORD_JOINER}" in escaped
    assert code("a`b``c") == "```a`b``c```"
    assert code("`x") == "`` `x ``"
    assert code(" x ") == "`  x  `"
    assert code("x\n\ny") == "`x y`"
    assert code("") == ""


def _refused(
    reason: str, url: str, headers: dict[str, str], params: dict[str, str], method: str = "POST"
) -> dict[str, object]:
    import json

    return {
        "reason": reason,
        "http_method": method,
        "checked_url": url,
        "headers": json.dumps(headers),
        "params": json.dumps(params),
        "truncated": False,
    }


def test_advice_proposes_only_a_verified_address() -> None:
    import pandas as pd

    from callstatus.dashboard.receiver_status import base_url_advice
    from tests.factories import signed_headers

    token, public = "advice-token", "https://calls.example.com"
    params = {"CallUUID": "c-1", "Event": "Hangup"}
    body = {key: [value] for key, value in params.items()}
    # Plivo signed for the public address; a proxy forwarded it, we checked the inner one.
    signed = signed_headers("POST", f"{public}/plivo/hangup?tenant=a", body, token)
    proxied = {
        **{k.lower(): v for k, v in signed.items()},
        "host": "127.0.0.1:8000",
        "x-forwarded-host": "calls.example.com",
        "x-forwarded-proto": "https",
    }
    good = _refused(
        "bad_signature",
        "http://127.0.0.1:8000/plivo/hangup?tenant=a",
        proxied,
        {**params, "tenant": "a"},
    )
    [advice] = base_url_advice(pd.DataFrame([good]), [token])
    assert "`PUBLIC_BASE_URL=https://calls.example.com`" in advice

    # The same header on a forged request: quoted as a claim, never proposed.
    forged = {
        **proxied,
        "x-forwarded-host": "evil.example](http://evil.example)",
        "x-plivo-signature-v3": "Zm9yZ2Vk",
    }
    bad = _refused("bad_signature", "http://127.0.0.1:8000/plivo/hangup", forged, params)
    [advice] = base_url_advice(pd.DataFrame([bad]), [token])
    assert "PUBLIC_BASE_URL=https://evil" not in advice
    assert "`https://evil.example](http://evil.example)`" in advice
    assert "any client can send" in advice
    # A wrong token verifies nothing either.
    [advice] = base_url_advice(pd.DataFrame([good]), ["another-token"])
    assert "PUBLIC_BASE_URL=https://calls" not in advice

    unsigned = _refused(
        "missing_signature",
        "http://127.0.0.1:8000/plivo/hangup",
        {"x-forwarded-host": "evil.example"},
        params,
    )
    assert base_url_advice(pd.DataFrame([unsigned]), [token]) == [
        "Requests arrived **without** Plivo signature headers: they are not from Plivo, "
        "or a proxy in front of callstatus strips the `X-Plivo-Signature-*` headers."
    ]
