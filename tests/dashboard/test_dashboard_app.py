"""The whole dashboard headless (AppTest) on a seeded database: every page, real values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


def test_health_says_none_was_refused_without_an_empty_table(seeded: Path) -> None:
    assert _one(seeded, "SELECT count(*) FROM rejected_webhooks") == 0
    at = _app()
    at.switch_page("screens/health.py").run()
    assert not at.exception
    assert [s.value for s in at.success] == ["No request was refused in this range."]
    assert not [df.value for df in at.dataframe]  # no empty table of refusals below it


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


# -- completeness against Plivo's call records, and the setup URLs -----------------------------


@pytest.fixture(scope="module")
def with_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The completeness sample (tests/dashboard/completeness_sample.py) three days back: calls
    with webhooks only, completed from records, added from records, both; one reconcile run."""
    from datetime import UTC, datetime, timedelta

    from tests.dashboard.completeness_sample import store_sample

    path = tmp_path_factory.mktemp("records") / "records.duckdb"
    day0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    database = Database(path)
    store_sample(database, day0)
    database.close()
    return path


def _no_reconcile_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLIVO_AUTH_ID", "PLIVO_API_TOKEN", "PLIVO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_health_completeness_equals_the_database(
    with_records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboard.completeness_sample import EXPECTED, HAND_PER_DAY, hand_counts

    _point_at(monkeypatch, with_records)
    _no_reconcile_settings(monkeypatch)
    at = _app(tz="America/New_York")
    at.switch_page("screens/health.py").run()
    assert not at.exception, [e.value for e in at.exception]
    figures = {
        "Calls": "count(*)",
        "In Plivo's records": "count(*) FILTER (WHERE source IN ('cdr', 'both'))",
        "Seen by webhook": "count(*) FILTER (WHERE source IN ('webhooks', 'both'))",
        "Completed from records": "count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr')",
        "Added from records": "count(*) FILTER (WHERE source = 'cdr')",
    }
    for label, count in figures.items():
        assert _metric(at, label) == tiles.fmt_count(
            _one(with_records, f"SELECT {count} FROM calls")
        )
    assert [_metric(at, label) for label in figures] == [
        tiles.fmt_count(EXPECTED[k])
        for k in ("calls", "reported", "with_webhooks", "completed", "added")
    ]
    share = _one(with_records, "SELECT avg((source = 'cdr')::INT) FROM calls")
    assert _metric(at, "Missed share") == tiles.fmt_rate(share) == "28.6%"
    # Records are no webhooks.
    webhooks = _one(with_records, "SELECT count(*) FROM webhook_events WHERE kind <> 'cdr'")
    assert _metric(at, "Webhooks") == tiles.fmt_count(webhooks) == "16"

    [days] = [d.value for d in at.dataframe if "missed_share" in d.value.columns]
    start, end = datetime.now(UTC) - timedelta(days=30), datetime.now(UTC) + timedelta(days=1)
    hand = hand_counts(
        with_records, HAND_PER_DAY, {"start": start, "end": end, "tz": "America/New_York"}
    )
    shown = [
        (row.day.date(), row.calls, row.reported, row.with_webhooks, row.completed, row.added)
        for row in days.itertuples()
    ]
    assert shown == [tuple(row) for row in hand] and len(shown) >= 2
    # Shown in percent points (one decimal, as the tiles); the CSV keeps the fractions.
    assert list(days["missed_share"]) == pytest.approx([100 * r[5] / r[1] for r in hand])

    [run] = [s.value for s in at.success if "reconcile run" in s.value]
    assert "Last reconcile run **ok**" in run and "12 records read, 12 new" in run
    assert "3 completed and 4 added from records, 2 B legs added" in run
    assert "Background runs are off" in run  # PLIVO_AUTH_ID is not set here


@pytest.mark.parametrize("configured", [False, True])
def test_health_explains_reconciliation_before_any_run(
    seeded: Path, monkeypatch: pytest.MonkeyPatch, configured: bool
) -> None:
    _no_reconcile_settings(monkeypatch)
    if configured:
        monkeypatch.setenv("PLIVO_AUTH_ID", "MA0000000000000000000")
        monkeypatch.setenv("PLIVO_API_TOKEN", "api-token")
    settings_module.get_settings.cache_clear()
    at = _app()
    at.switch_page("screens/health.py").run()
    assert not at.exception
    [note] = [i.value for i in at.info if "reconcil" in i.value]
    assert "callstatus reconcile --days 90" in note
    if configured:
        assert note.startswith("**No reconcile run yet.**") and "every 10 min" in note
    else:
        assert note.startswith("**Reconciliation is off.**")
        assert "`PLIVO_AUTH_ID`" in note and "`PLIVO_API_TOKEN`" in note
    # No records, no run: no row of zeros claiming nothing was missed.
    assert not [m for m in at.metric if m.label in ("Missed share", "Added from records")]


def test_health_shows_a_failed_run_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from callstatus.dashboard.text import code
    from tests.dashboard.completeness_sample import add_run, store_sample

    path = tmp_path / "failed.duckdb"
    database = Database(path)
    now = datetime.now(UTC).replace(microsecond=0)
    store_sample(database, now - timedelta(days=2))
    error = "Plivo answered 401 [log in](http://evil.example/x) ![p](http://evil.example/p.png)"
    add_run(database.cursor(), now - timedelta(minutes=3), status="error", error=error)
    database.close()
    _point_at(monkeypatch, path)
    _no_reconcile_settings(monkeypatch)
    at = _app()
    at.switch_page("screens/health.py").run()
    assert not at.exception
    [failed] = [e.value for e in at.error if "reconcile run" in e.value]
    assert "**failed**" in failed and code(error) in failed
    assert "(" + "http://evil" not in failed.replace(code(error), "")


def test_overview_says_how_many_calls_only_records_know(
    with_records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _point_at(monkeypatch, with_records)
    at = _app()
    assert not at.exception
    only = _one(with_records, "SELECT count(*) FILTER (WHERE source = 'cdr') FROM calls")
    share = _one(with_records, "SELECT avg((source = 'cdr')::INT) FROM calls")
    [notice] = [i.value for i in at.info if "call records" in i.value]
    assert notice == (
        f"{only} calls ({tiles.fmt_rate(share)}) in this range are known only from Plivo's "
        "call records: their webhooks never arrived. See Receiver health."
    )
    assert notice.startswith("4 calls (28.6%)")
    # Inbound only: the one outbound call added from records is left out.
    at = _app(dir="inbound")
    [notice] = [i.value for i in at.info if "call records" in i.value]
    assert notice.startswith("3 calls (")


def test_overview_says_nothing_without_records(seeded: Path) -> None:
    at = _app()
    assert not at.exception
    assert not [i for i in at.info if "call records" in i.value]


def test_setup_urls_carry_plivo_retry_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_records: Path
) -> None:
    from callstatus.core.plivo import RETRY_FRAGMENT
    from callstatus.dashboard.receiver_status import RETRY_NOTE

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://calls.example.com")
    path = tmp_path / "empty.duckdb"
    Database(path).close()
    _point_at(monkeypatch, path)
    at = _app()
    assert not at.exception
    base = "https://calls.example.com"
    for page in ("first run", "health"):
        if page == "health":
            _point_at(monkeypatch, with_records)
            at = _app()
            at.switch_page("screens/health.py").run()
            assert not at.exception
            # Drawn once asked for, as an operator turns the switch on.
            assert not at.code
            at.toggle(key="plivo-urls").set_value(True).run()
            assert not at.exception
        lines = "\n".join(str(c.value) for c in at.code).splitlines()
        for setting, path_ in (
            ("Answer URL", "/plivo/answer"),
            ("Hangup URL", "/plivo/hangup"),
            ("Fallback answer URL", "/plivo/fallback"),
            ("Ring URL (Make-a-Call API)", "/plivo/ring"),
        ):
            assert f"{setting}: {base}{path_}{RETRY_FRAGMENT}" in lines, (page, lines)
        # Plivo documents no retry settings for machine detection: its URL stays bare.
        assert f"Machine detection URL (Make-a-Call API): {base}/plivo/machine-detection" in lines
        assert any(RETRY_NOTE in str(c.value) for c in at.caption), page
    assert "signatures are unaffected" in RETRY_NOTE and "503" in RETRY_NOTE
