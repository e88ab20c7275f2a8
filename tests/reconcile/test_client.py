"""The Call API client against the local Call API server: chunks, pages, the 90 days, retries
and the errors a user reads."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests

from callstatus.core.settings import Settings
from callstatus.reconcile.client import CallApi, CallApiError
from callstatus.simulator.call_api import CallApiServer
from tests.factories import CDR_AUTH_ID as AUTH_ID
from tests.factories import CDR_NOW as NOW
from tests.factories import CDR_TOKEN as TOKEN
from tests.factories import cdr

WINDOW_FILTERS = {"end_time__gte", "end_time__lt"}


@pytest.fixture
def server() -> Iterator[CallApiServer]:
    with CallApiServer([], auth_id=AUTH_ID, token=TOKEN, now=lambda: NOW) as running:
        yield running


class Waits(list[float]):
    """Records the client's waits instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _client(base_url: str, waits: Waits | None = None, **options: Any) -> CallApi:
    return CallApi(
        AUTH_ID, TOKEN, base_url, sleep=waits if waits is not None else Waits(), now=lambda: NOW,
        timeout_s=5, **options,
    )  # fmt: skip


def _read(api: CallApi, start: datetime, end: datetime) -> list[str]:
    return [record["call_uuid"] for page in api.pages(start, end) for record in page.records]


def test_pages_over_twenty_records_by_offset_until_next_is_null(server: CallApiServer) -> None:
    records = [cdr(i, NOW - timedelta(hours=3, seconds=7 * i)) for i in range(47)]
    server.add(records)
    pages = list(_client(server.url).pages(NOW - timedelta(hours=4), NOW - timedelta(hours=2)))
    assert [r["call_uuid"] for p in pages for r in p.records] == [r["call_uuid"] for r in records]
    assert [(len(p.records), p.offset, p.total_count) for p in pages] == [
        (20, 0, 47),
        (20, 20, 47),
        (7, 40, 47),
    ]
    asked = [request.query for request in server.requests]
    assert [(q["limit"], q["offset"]) for q in asked] == [("20", "0"), ("20", "20"), ("20", "40")]
    assert all(q["end_time__gte"] == "2026-11-20 08:00:00" for q in asked)
    assert all(q["end_time__lt"] == "2026-11-20 10:00:00" for q in asked)


def test_a_window_is_start_inclusive_end_exclusive(server: CallApiServer) -> None:
    start, end = NOW - timedelta(hours=5), NOW - timedelta(hours=1)
    server.add(
        [
            cdr(1, start - timedelta(seconds=1)),
            cdr(2, start),
            cdr(3, end),
            cdr(4, end - timedelta(seconds=1)),
        ]
    )
    assert _read(_client(server.url), start, end) == [
        cdr(4, NOW)["call_uuid"],
        cdr(2, NOW)["call_uuid"],
    ]


def test_a_forty_five_day_window_goes_in_chunks_the_api_accepts(server: CallApiServer) -> None:
    start = NOW - timedelta(days=50)
    end = start + timedelta(days=45)
    records = [cdr(i, start + timedelta(days=i, hours=6)) for i in range(45)]
    server.add(records)
    # Plivo refuses an end_time range over 30 days, so one query for the window would fail.
    refused = requests.get(
        server.url + server.list_path,
        params={"end_time__gte": "2026-10-01 12:00:00", "end_time__lt": "2026-11-01 12:00:00"},
        auth=(AUTH_ID, TOKEN),
        timeout=10,
    )
    assert refused.status_code == 400

    for chunk, chunks in ((timedelta(days=30), 2), (timedelta(days=1), 45)):
        server.requests.clear()
        pages = list(_client(server.url, chunk=chunk).pages(start, end))
        read = sorted(r["call_uuid"] for p in pages for r in p.records)
        assert read == sorted(r["call_uuid"] for r in records)
        windows = {(r.query["end_time__gte"], r.query["end_time__lt"]) for r in server.requests}
        assert len(windows) == chunks
        assert all(r.status == 200 and set(r.query) >= WINDOW_FILTERS for r in server.requests)
        spans = list(dict.fromkeys((p.chunk_start, p.chunk_end) for p in pages))
        assert spans[0][0] == start and spans[-1][1] == end
        assert all(b - a <= chunk for a, b in spans)
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(spans))


@pytest.mark.parametrize("chunk", [timedelta(days=31), timedelta(0)])
def test_a_chunk_the_api_would_refuse_is_refused_up_front(chunk: timedelta) -> None:
    with pytest.raises(ValueError, match="30 days"):
        CallApi(AUTH_ID, TOKEN, "http://127.0.0.1:9", chunk=chunk)


def test_a_start_past_ninety_days_is_clamped_with_a_warning(
    server: CallApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    kept = cdr(1, NOW - timedelta(days=80))
    server.add([kept, cdr(2, NOW - timedelta(days=95))])
    api = _client(server.url, chunk=timedelta(days=30))
    assert api.earliest() == NOW - timedelta(days=90) + timedelta(hours=1)
    with caplog.at_level(logging.WARNING, logger="callstatus.reconcile.client"):
        assert _read(api, NOW - timedelta(days=120), NOW - timedelta(days=70)) == [
            kept["call_uuid"]
        ]
    assert "90 days" in caplog.text
    assert "2026-08-22 13:00:00" in caplog.text  # NOW - 90 days + 1 hour
    assert server.requests[0].query["end_time__gte"] == "2026-08-22 13:00:00"
    assert _read(api, NOW - timedelta(days=120), NOW - timedelta(days=100)) == []


def test_sub_second_bounds_widen_to_whole_seconds(server: CallApiServer) -> None:
    start = NOW - timedelta(hours=2, microseconds=250_000)
    end = NOW - timedelta(hours=1, microseconds=250_000)
    # The last whole second before `end` is in the window: the bound is raised, not lowered.
    server.add([cdr(1, NOW - timedelta(hours=1, seconds=1)), cdr(2, NOW - timedelta(hours=1))])
    assert _read(_client(server.url), start, end) == [cdr(1, NOW)["call_uuid"]]
    assert server.requests[0].query["end_time__gte"] == "2026-11-20 09:59:59"
    assert server.requests[0].query["end_time__lt"] == "2026-11-20 11:00:00"


def test_a_429_waits_as_retry_after_says_then_reads(server: CallApiServer) -> None:
    server.add([cdr(1, NOW - timedelta(hours=1))])
    server.fail(429, retry_after=7)
    server.fail(429, retry_after=600)
    waits = Waits()
    assert _read(_client(server.url, waits), NOW - timedelta(hours=2), NOW) == [
        cdr(1, NOW)["call_uuid"]
    ]
    assert waits == [7.0, 60.0]  # Retry-After honoured, capped at a minute
    assert [r.status for r in server.requests] == [429, 429, 200]


def test_a_503_on_page_two_is_retried_and_nothing_is_lost(server: CallApiServer) -> None:
    records = [cdr(i, NOW - timedelta(minutes=30 + i)) for i in range(30)]
    server.add(records)
    waits = Waits()
    pages = _client(server.url, waits).pages(NOW - timedelta(hours=2), NOW)
    first = next(pages)
    server.fail(503)
    rest = list(pages)
    read = [r["call_uuid"] for p in [first, *rest] for r in p.records]
    assert read == [r["call_uuid"] for r in records]
    assert [r.status for r in server.requests] == [200, 503, 200]
    assert server.requests[1].query == server.requests[2].query
    assert len(waits) == 1 and 0.5 <= waits[0] <= 1.0


def test_a_500_forever_fails_after_the_attempts_with_backoff(server: CallApiServer) -> None:
    server.fail(500, times=100)
    waits = Waits()
    with pytest.raises(CallApiError) as caught:
        list(_client(server.url, waits, attempts=4).pages(NOW - timedelta(hours=2), NOW))
    assert caught.value.status == 500
    assert "4 attempts" in str(caught.value) and "HTTP 500" in str(caught.value)
    assert "try again later" in str(caught.value)
    assert len(server.requests) == 4
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        assert 2**attempt / 2 <= wait <= 2**attempt  # jittered under a doubling ceiling


def test_an_unreachable_api_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        waits = Waits()
        with pytest.raises(CallApiError, match="could not connect") as caught:
            list(_client(url, waits, attempts=3).pages(NOW - timedelta(hours=2), NOW))
    assert caught.value.status is None
    assert len(waits) == 2


@pytest.mark.parametrize(
    ("auth_id", "token"), [(AUTH_ID, "not-the-token"), ("MAZOTHERACCOUNT000001", TOKEN)]
)
def test_refused_credentials_name_the_settings_not_the_token(
    server: CallApiServer, caplog: pytest.LogCaptureFixture, auth_id: str, token: str
) -> None:
    api = CallApi(auth_id, token, server.url, sleep=Waits(), now=lambda: NOW)
    with caplog.at_level(logging.DEBUG), pytest.raises(CallApiError) as caught:
        list(api.pages(NOW - timedelta(hours=2), NOW))
    message = str(caught.value)
    assert caught.value.status == 401
    assert "PLIVO_AUTH_ID" in message and "PLIVO_API_TOKEN" in message
    assert token not in message and token not in caplog.text
    assert len(server.requests) == 1  # not retried


def test_a_400_passes_plivos_text_on(server: CallApiServer) -> None:
    server.fail(400, error="end_time__gte: invalid value")
    with pytest.raises(CallApiError, match="end_time__gte: invalid value") as caught:
        list(_client(server.url).pages(NOW - timedelta(hours=2), NOW))
    assert caught.value.status == 400
    assert len(server.requests) == 1


def test_a_404_points_at_the_auth_id_and_the_url(server: CallApiServer) -> None:
    with pytest.raises(CallApiError, match="PLIVO_API_URL") as caught:
        list(_client(server.url + "/api").pages(NOW - timedelta(hours=2), NOW))
    assert caught.value.status == 404
    assert "PLIVO_AUTH_ID" in str(caught.value)


class _HtmlPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = b"<html><body>Welcome to our proxy</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_answer_that_is_not_json_is_an_error() -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(CallApiError, match=r"text/html.*PLIVO_API_URL"):
            list(_client(url).pages(NOW - timedelta(hours=2), NOW))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_records_that_end_while_paging_shift_offsets_but_none_is_lost(
    server: CallApiServer,
) -> None:
    records = [cdr(i, NOW - timedelta(minutes=30 + i)) for i in range(45)]
    server.add(records)
    pages = _client(server.url).pages(NOW - timedelta(hours=2), NOW)
    read = [r["call_uuid"] for r in next(pages).records]
    server.add([cdr(100 + i, NOW - timedelta(minutes=10 + i)) for i in range(3)])
    read += [r["call_uuid"] for p in pages for r in p.records]
    assert set(read) >= {r["call_uuid"] for r in records}
    assert len(read) - len(set(read)) == 3  # the three shifted across a page boundary, twice


def test_cursor_paging_is_followed_without_an_offset() -> None:
    records = [cdr(i, NOW - timedelta(minutes=30 + i)) for i in range(50)]
    with CallApiServer(
        records, auth_id=AUTH_ID, token=TOKEN, now=lambda: NOW, paging="cursor"
    ) as server:
        assert _read(_client(server.url), NOW - timedelta(hours=2), NOW) == [
            r["call_uuid"] for r in records
        ]
        asked = [r.query for r in server.requests]
        assert len(asked) == 3
        assert "cursor" not in asked[0]
        assert all("cursor" in q and "offset" not in q for q in asked[1:])
        assert all(set(q) >= WINDOW_FILTERS for q in asked)


def test_one_record_by_uuid(server: CallApiServer) -> None:
    record = cdr(5, NOW - timedelta(days=3))
    server.add([record])
    assert _client(server.url).record(record["call_uuid"])["end_time"] == record["end_time"]
    with pytest.raises(CallApiError) as caught:
        _client(server.url).record(cdr(6, NOW)["call_uuid"])
    assert caught.value.status == 404


def test_from_settings(server: CallApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLIVO_AUTH_ID", "PLIVO_API_TOKEN", "PLIVO_AUTH_TOKEN", "PLIVO_API_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CallApiError, match="PLIVO_AUTH_ID and PLIVO_API_TOKEN"):
        CallApi.from_settings(Settings(_env_file=None))
    with pytest.raises(CallApiError, match="needs PLIVO_API_TOKEN"):
        CallApi.from_settings(Settings(_env_file=None, PLIVO_AUTH_ID=AUTH_ID))
    settings = Settings(
        _env_file=None,
        PLIVO_AUTH_ID=AUTH_ID,
        PLIVO_AUTH_TOKEN=f"{TOKEN},older-token",
        PLIVO_API_URL=server.url + "/",
    )
    api = CallApi.from_settings(settings)
    assert api.base_url == server.url
    record = cdr(1, NOW - timedelta(hours=1))
    server.add([record])
    assert api.record(record["call_uuid"])["call_uuid"] == record["call_uuid"]
    assert server.requests[-1].status == 200
