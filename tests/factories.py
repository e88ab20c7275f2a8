"""Plain factory functions for tests: store webhooks, sign requests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from prometheus_client.parser import text_string_to_metric_families

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params, make_record
from callstatus.core.storage import insert_events
from callstatus.receiver.signatures import sign

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
    from callstatus.app import runtime

    rt = runtime.current()
    assert rt is not None, "no server is running in this process"
    cur = rt.database.cursor()
    result = cur.execute(sql, list(params))
    names = [column[0] for column in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


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
