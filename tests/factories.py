"""Plain factory functions for tests: settings, an in-process app, webhooks stored or signed,
rollups compared with their views."""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import httpx
from prometheus_client.parser import text_string_to_metric_families

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import EventRecord, Params, make_record
from callstatus.core.settings import Settings
from callstatus.core.storage import insert_events
from callstatus.receiver.signatures import sign
from callstatus.simulator.traffic import Call, TrafficModel, Webhook

T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


def store(
    db: Database,
    events: Iterable[tuple[str, Params]],
    *,
    start: datetime = T0,
    step: timedelta = timedelta(seconds=1),
    plivo_timezone: str = "UTC",
    tracker: DuplicateTracker | None = None,
) -> None:
    """Store (kind, params) webhooks as the receiver would, one second apart by default."""
    records = [
        make_record(kind, "POST", dict(params), "unchecked", start + i * step)
        for i, (kind, params) in enumerate(events)
    ]
    (tracker or DuplicateTracker()).mark(records)
    cur = db.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, plivo_timezone)
    cur.execute("COMMIT")


# A Plivo account, token and clock for the local Call API (callstatus.simulator.call_api).
CDR_AUTH_ID = "MAZTESTACCOUNT0000001"
CDR_TOKEN = "token-that-must-stay-secret"
CDR_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))


def cdr(n: int, end: datetime, **fields: Any) -> dict[str, Any]:
    """A call record as Plivo lists it; end_time in the console's zone (here +05:30)."""
    local = end.astimezone(IST)
    record: dict[str, Any] = {
        "call_uuid": f"00000000-0000-4000-8000-{n:012d}",
        "parent_call_uuid": None,
        "call_direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "+918035550100",
        "initiation_time": (local - timedelta(seconds=40)).strftime("%Y-%m-%d %H:%M:%S%z"),
        "answer_time": None,
        "end_time": local.isoformat(sep=" "),
        "call_duration": 40,
        "bill_duration": 0,
        "hangup_cause_code": 3000,
        "hangup_cause_name": "No Answer",
        "hangup_source": "Carrier",
        "stir_verification": "Not Applicable",
    }
    record.update(fields)
    return record


def signed_headers(
    method: str, url: str, body: Mapping[str, Sequence[str]], token: str, nonce: str | None = None
) -> dict[str, str]:
    nonce = nonce or secrets.token_hex(10)
    return {
        "X-Plivo-Signature-V3": sign(method, url, body, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


def form(params: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """A form-encoded body and its content type, as Plivo posts."""
    return urlencode(params).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def signed_request(
    client: Any,
    method: str,
    path: str,
    pairs: Sequence[tuple[str, str]],
    *,
    base: str,
    token: str = "main-account-token",
    query: Sequence[tuple[str, str]] = (),
    nonce: str | None = None,
) -> httpx.Response:
    """Send a webhook as Plivo does: GET puts every pair in the query; POST posts them as a
    form, keeping the URL's own query. Signed for `base` + path (`client` is any httpx-like
    client: a TestClient or an httpx.Client with a base_url)."""
    if method == "GET":
        url = f"{path}?{urlencode([*query, *pairs])}" if [*query, *pairs] else path
        body: dict[str, list[str]] = {}
        content = b""
        headers = signed_headers(method, base + url, body, token, nonce)
    else:
        url = f"{path}?{urlencode(list(query))}" if query else path
        body = {}
        for key, value in pairs:
            body.setdefault(key, []).append(value)
        content = urlencode(list(pairs)).encode()
        headers = signed_headers(method, base + url, body, token, nonce)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    response: httpx.Response = client.request(method, url, content=content, headers=headers)
    return response


def rows(sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
    """Query the database of the server running in this process (its own cursor per thread)."""
    from callstatus.core import server

    handle = server.installed()
    assert handle is not None, "no server is running in this process"
    cur = handle.database.cursor()
    result = cur.execute(sql, list(params))
    names = [column[0] for column in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def read_file(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` on a database file no server holds (read-only)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def metric(client: Any, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    """Settings built from explicit values only (the environment and .env are ignored)."""
    base: dict[str, Any] = {"CALLSTATUS_DB": tmp_path / "callstatus.duckdb"}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@contextmanager
def app_client(tmp_path: Path, **values: Any) -> Iterator[Any]:
    """The whole app in-process with the given settings, lifespan run (the writer started):
    a starlette TestClient."""
    from starlette.testclient import TestClient
    from streamlit.runtime import Runtime

    from callstatus.app.asgi import build_app

    app = build_app(make_settings(tmp_path, **values))
    try:
        with TestClient(app, base_url="http://testserver") as client:
            yield client
    finally:
        # Streamlit keeps its stopped Runtime as a process-wide singleton and refuses a second
        # one; AppTest resets it the same way.
        Runtime._instance = None


SAMPLES = Path(__file__).parent / "samples"


def sample_records(name: str, start: datetime) -> list[EventRecord]:
    """A recorded call flow from tests/samples/, one webhook a second from `start`."""
    events = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return [
        make_record(e["kind"], "POST", e["params"], "unchecked", start + timedelta(seconds=i))
        for i, e in enumerate(events)
    ]


def model_records(model: TrafficModel, starts: Sequence[float]) -> list[EventRecord]:
    """Every webhook of these calls as the receiver builds it, received when the model says."""
    return [
        make_record(
            hook.kind,
            hook.method,
            hook.params(),
            "unchecked",
            datetime.fromtimestamp(hook.delivered_at, UTC),
        )
        for i, at in enumerate(starts)
        for hook in model.call(i, at).webhooks
    ]


def call_webhooks(
    call: Call, keep: Callable[[Webhook], bool] = lambda hook: True
) -> list[EventRecord]:
    """A simulated call's webhooks (those `keep` keeps) as the receiver builds them, received
    when the model delivered them."""
    return [
        make_record(
            hook.kind,
            hook.method,
            hook.params(),
            "unchecked",
            datetime.fromtimestamp(hook.delivered_at, UTC),
        )
        for hook in call.webhooks
        if keep(hook)
    ]


def deliver(db: Database, records: Sequence[EventRecord], tracker: DuplicateTracker) -> None:
    """Store records in one transaction, duplicates flagged by `tracker`, as the writer does."""
    tracker.mark(list(records))
    cur = db.cursor()
    cur.execute("BEGIN")
    insert_events(cur, list(records), "UTC")
    cur.execute("COMMIT")


def split(items: list[EventRecord], parts: int, rng: random.Random) -> list[list[EventRecord]]:
    """Items cut at random places into `parts` non-empty runs, in order."""
    cuts = sorted(rng.sample(range(1, len(items)), parts - 1))
    return [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]


# view -> (rollup, ORDER BY giving one order to both, rollup columns the view lacks)
ROLLUP_PAIRS = {
    "calls": ("calls_rollup", "call_uuid", ""),
    "dials": ("dials_rollup", "event_id, a_leg_uuid", " EXCLUDE (params_hash)"),
    "dial_legs": (
        "dial_legs_rollup",
        "b_leg_uuid",
        f" EXCLUDE ({', '.join(rollups.EXTRA_COLUMNS)})",
    ),
}
# dial_legs_rollup's own columns, as the dashboard's join of dial_legs to calls gives them.
A_LEG_JOIN = """
SELECT l.b_leg_uuid, coalesce(l.answered_at, l.ended_at, c.started_at) AS leg_at,
       c.started_at AS a_started_at, c.outcome AS a_outcome, c.direction AS a_direction,
       c.from_number AS a_from, c.to_number AS a_to, c.answered_at AS a_answered_at
FROM dial_legs l LEFT JOIN calls c ON c.call_uuid = l.a_leg_uuid ORDER BY l.b_leg_uuid
"""


def assert_rollups_equal_views(db: Database) -> None:
    """Every rollup table holds exactly what its view computes, and says it is current."""
    cur = db.cursor()
    for view, (table, key, extra) in ROLLUP_PAIRS.items():
        expected = cur.execute(f"SELECT * FROM {view} ORDER BY {key}").fetchall()
        got = cur.execute(f"SELECT *{extra} FROM {table} ORDER BY {key}").fetchall()
        assert got == expected, view
    columns = ", ".join(rollups.EXTRA_COLUMNS)
    expected = cur.execute(A_LEG_JOIN).fetchall()
    got = cur.execute(
        f"SELECT b_leg_uuid, {columns} FROM dial_legs_rollup ORDER BY b_leg_uuid"
    ).fetchall()
    assert got == expected, "dial_legs_rollup's A-leg columns"
    assert_a_legs_current(db)
    assert rollups.is_current(cur)


def assert_a_legs_current(db: Database) -> None:
    """a_legs_rollup holds exactly what grouping dial_legs_rollup by A leg gives now."""
    cur = db.cursor()
    fresh = rollups.A_LEGS_SELECT.format(keys="true")
    expected = cur.execute(f"SELECT * FROM ({fresh}) ORDER BY a_leg_uuid").fetchall()
    got = cur.execute(f"SELECT * FROM {rollups.A_LEGS} ORDER BY a_leg_uuid").fetchall()
    assert got == expected, "a_legs_rollup"


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`callstatus ARGS` as a user runs it: its own process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "callstatus.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
