"""The local Call API answers as Plivo documents: newest first, end_time filters and windows,
20 a page with meta, Basic auth, Plivo's error JSON."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from callstatus.simulator.call_api import CallApiServer
from tests.factories import CDR_AUTH_ID as AUTH_ID
from tests.factories import CDR_NOW as NOW
from tests.factories import CDR_TOKEN as TOKEN
from tests.factories import cdr


@pytest.fixture
def server() -> Iterator[CallApiServer]:
    with CallApiServer([], auth_id=AUTH_ID, token=TOKEN, now=lambda: NOW) as running:
        yield running


def _get(server: CallApiServer, path: str | None = None, **params: Any) -> requests.Response:
    url = server.url + (path or server.list_path)
    return requests.get(url, params=params, auth=(AUTH_ID, TOKEN), timeout=10)


def _uuids(response: requests.Response) -> list[str]:
    return [record["call_uuid"] for record in response.json()["objects"]]


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def test_lists_newest_first_twenty_a_page_with_meta(server: CallApiServer) -> None:
    records = [cdr(i, NOW - timedelta(hours=1, minutes=i)) for i in range(45)]
    server.add(records[::2])
    server.add(records[1::2])
    window = {"end_time__gte": _utc(NOW - timedelta(days=1)), "end_time__lt": _utc(NOW)}

    first = _get(server, **window)
    assert first.status_code == 200
    body = first.json()
    assert body["api_id"]
    assert body["objects"] == records[:20]  # newest first, served verbatim
    meta = body["meta"]
    assert (meta["limit"], meta["offset"], meta["total_count"], meta["previous"]) == (
        20,
        0,
        45,
        None,
    )
    following = urlsplit(meta["next"])
    assert following.path == server.list_path
    assert {k: v[-1] for k, v in parse_qs(following.query).items()} == {
        **window,
        "limit": "20",
        "offset": "20",
    }

    last = _get(server, **window, offset=40)
    assert last.json()["objects"] == records[40:]
    assert last.json()["meta"]["next"] is None
    assert parse_qs(urlsplit(last.json()["meta"]["previous"]).query)["offset"] == ["20"]
    assert _uuids(_get(server, **window, limit=5, offset=3)) == _uuids(_get(server, **window))[3:8]


def test_equal_end_times_keep_one_order_across_pages(server: CallApiServer) -> None:
    same = NOW - timedelta(hours=2)
    server.add([cdr(i, same) for i in (7, 3, 9, 1, 5)])
    window = {"end_time__gte": _utc(same), "end_time__lt": _utc(NOW)}
    paged = [
        u for offset in (0, 2, 4) for u in _uuids(_get(server, **window, limit=2, offset=offset))
    ]
    assert sorted(paged) == sorted(_uuids(_get(server, **window)))
    assert len(set(paged)) == 5


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"end_time__gte": "2026-11-20 09:00:00", "end_time__lt": "2026-11-20 11:00"}, [1, 2]),
        ({"end_time__gt": "2026-11-20 09:00:00", "end_time__lte": "2026-11-20 11:00"}, [0, 1]),
        (
            {"end_time__gte": "2026-11-20 09:00:00.000001", "end_time__lt": "2026-11-21 00:00"},
            [0, 1],
        ),
        ({"end_time": "2026-11-20 10:00:00"}, [1]),
        ({"end_time": "2026-11-20 10:00"}, [1]),
    ],
)
def test_end_time_filters_are_utc_against_records_with_offsets(
    server: CallApiServer, params: dict[str, str], expected: list[int]
) -> None:
    # 11:00, 10:00 and 09:00 UTC, written as 16:30, 15:30 and 14:30 +05:30.
    records = [cdr(i, datetime(2026, 11, 20, 11 - i, tzinfo=UTC)) for i in range(3)]
    server.add(records)
    assert records[0]["end_time"] == "2026-11-20 16:30:00+05:30"
    assert _uuids(_get(server, **params)) == [records[i]["call_uuid"] for i in expected]


def test_parent_direction_and_number_filters(server: CallApiServer) -> None:
    a_leg = cdr(1, NOW - timedelta(hours=1))
    b_legs = [
        cdr(2, NOW - timedelta(hours=1), parent_call_uuid=a_leg["call_uuid"],
            call_direction="outbound", to_number="+14155550111"),
        cdr(3, NOW - timedelta(hours=2), parent_call_uuid=a_leg["call_uuid"],
            call_direction="outbound", to_number="+14155550122"),
    ]  # fmt: skip
    other = cdr(4, NOW - timedelta(hours=3))
    server.add([a_leg, *b_legs, other])
    assert _uuids(_get(server, parent_call_uuid=a_leg["call_uuid"])) == [
        b["call_uuid"] for b in b_legs
    ]
    assert _uuids(_get(server, call_direction="inbound")) == [
        a_leg["call_uuid"],
        other["call_uuid"],
    ]
    assert _uuids(_get(server, to_number="+141555501")) == [b["call_uuid"] for b in b_legs]
    assert _uuids(_get(server, to_number="+14155550122")) == [b_legs[1]["call_uuid"]]


def test_without_an_end_time_filter_only_the_last_seven_days(server: CallApiServer) -> None:
    server.add(
        [cdr(1, NOW - timedelta(days=6, hours=23)), cdr(2, NOW - timedelta(days=7, hours=1))]
    )
    assert _uuids(_get(server)) == [cdr(1, NOW)["call_uuid"]]
    wide = _get(server, end_time__gte=_utc(NOW - timedelta(days=10)), end_time__lt=_utc(NOW))
    assert len(_uuids(wide)) == 2


def test_a_lone_bound_searches_thirty_days_from_it(server: CallApiServer) -> None:
    start = NOW - timedelta(days=60)
    server.add([cdr(1, start + timedelta(days=29)), cdr(2, start + timedelta(days=31))])
    assert _uuids(_get(server, end_time__gte=_utc(start))) == [cdr(1, NOW)["call_uuid"]]
    assert _uuids(_get(server, end_time__lte=_utc(start + timedelta(days=31)))) == [
        cdr(2, NOW)["call_uuid"],
        cdr(1, NOW)["call_uuid"],
    ]


def test_only_the_last_ninety_days(server: CallApiServer) -> None:
    old, kept = cdr(1, NOW - timedelta(days=90, minutes=1)), cdr(2, NOW - timedelta(days=89))
    server.add([old, kept])
    window = {
        "end_time__gte": _utc(NOW - timedelta(days=91)),
        "end_time__lt": _utc(NOW - timedelta(days=85)),
    }
    assert _uuids(_get(server, **window)) == [kept["call_uuid"]]
    assert _get(server, f"{server.list_path}{old['call_uuid']}/").status_code == 404


def test_a_range_over_thirty_days_is_refused_with_plivos_error(server: CallApiServer) -> None:
    start = NOW - timedelta(days=40)
    thirty = _get(server, end_time__gte=_utc(start), end_time__lt=_utc(start + timedelta(days=30)))
    assert thirty.status_code == 200
    refused = _get(
        server, end_time__gte=_utc(start), end_time__lt=_utc(start + timedelta(days=30, seconds=1))
    )
    assert refused.status_code == 400
    assert set(refused.json()) == {"api_id", "error"}
    assert "30 day" in refused.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "21"},
        {"limit": "0"},
        {"limit": "twenty"},
        {"offset": "-1"},
        {"end_time__gte": "20/11/2026"},
        {"end_time__lt": "2026-11-20T10:00:00Z"},
    ],
)
def test_bad_parameters_are_400(server: CallApiServer, params: dict[str, str]) -> None:
    answer = _get(server, **params)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert answer.json()["api_id"]


@pytest.mark.parametrize(
    ("path_id", "auth"),
    [
        ("MAZOTHERACCOUNT000001", (AUTH_ID, TOKEN)),
        (AUTH_ID, (AUTH_ID, "wrong-token")),
        (AUTH_ID, ("MAZOTHERACCOUNT000001", TOKEN)),
        (AUTH_ID, None),
    ],
)
def test_bad_credentials_are_401(
    server: CallApiServer, path_id: str, auth: tuple[str, str] | None
) -> None:
    answer = requests.get(f"{server.url}/v1/Account/{path_id}/Call/", auth=auth, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"] == "authentication failed"
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "path",
    ["/", f"/v1/Account/{AUTH_ID}/Call", f"/v1/Account/{AUTH_ID}/Message/", "/v1/Account/"],
)
def test_unknown_paths_are_404(server: CallApiServer, path: str) -> None:
    answer = _get(server, path)
    assert answer.status_code == 404
    assert answer.json()["error"]


def test_one_call_by_uuid(server: CallApiServer) -> None:
    record = cdr(1, NOW - timedelta(days=20))
    server.add([record])
    answer = _get(server, f"{server.list_path}{record['call_uuid']}/")
    assert answer.status_code == 200
    assert answer.json() == {"api_id": answer.json()["api_id"], **record}
    assert _get(server, f"{server.list_path}{cdr(2, NOW)['call_uuid']}/").status_code == 404


def test_failures_then_answers_and_records_what_was_asked(server: CallApiServer) -> None:
    server.add([cdr(1, NOW - timedelta(hours=1))])
    server.fail(429, retry_after=2.5)
    server.fail(503, times=2)
    limited = _get(server, limit=3)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2.5")
    assert [_get(server).status_code for _ in range(3)] == [503, 503, 200]
    assert [(r.path, r.query, r.status) for r in server.requests] == [
        (server.list_path, {"limit": "3"}, 429),
        (server.list_path, {}, 503),
        (server.list_path, {}, 503),
        (server.list_path, {}, 200),
    ]
    server.fail(400, error="end_time__gte is not valid")
    assert _get(server).json()["error"] == "end_time__gte is not valid"


def test_added_records_become_visible(server: CallApiServer) -> None:
    server.add([cdr(1, NOW - timedelta(hours=2))])
    assert len(_uuids(_get(server))) == 1
    server.add([cdr(2, NOW - timedelta(hours=1))])
    assert _uuids(_get(server)) == [cdr(2, NOW)["call_uuid"], cdr(1, NOW)["call_uuid"]]
    with pytest.raises(ValueError, match="offset"):
        server.add([{"call_uuid": "x", "end_time": "2026-11-20 10:00:00"}])


def test_cursor_paging_follows_next_and_applies_an_offset_sent_along() -> None:
    records = [cdr(i, NOW - timedelta(minutes=10 + i)) for i in range(45)]
    with CallApiServer(
        records, auth_id=AUTH_ID, token=TOKEN, now=lambda: NOW, paging="cursor"
    ) as server:
        seen: list[str] = []
        answer = _get(server)
        while True:
            seen += _uuids(answer)
            following = answer.json()["meta"]["next"]
            if following is None:
                break
            query = parse_qs(urlsplit(following).query)
            assert "offset" not in query
            answer = _get(server, **{k: v[-1] for k, v in query.items()})
        assert seen == [r["call_uuid"] for r in records]

        page_one = _get(server).json()["meta"]["next"]
        cursor = parse_qs(urlsplit(page_one).query)["cursor"][-1]
        skipped = _get(server, cursor=cursor, offset=20)
        assert _uuids(skipped) == [r["call_uuid"] for r in records[40:]]


def test_logs_nothing(server: CallApiServer, capfd: pytest.CaptureFixture[str]) -> None:
    _get(server)
    _get(server, "/nowhere")
    assert capfd.readouterr().err == ""
