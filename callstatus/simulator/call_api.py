"""A local HTTP server that answers as Plivo's Call API does: call records by end time, paged."""

from __future__ import annotations

import base64
import binascii
import json
import operator
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

# Plivo's documented limits: records of the last 90 days; 7 days searched without an end_time
# filter; an end_time range of at most 30 days (a lone bound gets a 30-day window); 20 a page.
KEPT = timedelta(days=90)
DEFAULT_WINDOW = timedelta(days=7)
MAX_RANGE = timedelta(days=30)
MAX_LIMIT = 20
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
LOWER_BOUNDS = ("end_time__gt", "end_time__gte")
UPPER_BOUNDS = ("end_time__lt", "end_time__lte")
END_TIME_FILTERS = ("end_time", *LOWER_BOUNDS, *UPPER_BOUNDS)
# Exact-match and prefix filters over record fields (Plivo matches numbers by prefix too).
EXACT_FILTERS = ("parent_call_uuid", "call_direction")
PREFIX_FILTERS = ("from_number", "to_number")
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "end_time": operator.eq,
    "end_time__gt": operator.gt,
    "end_time__gte": operator.ge,
    "end_time__lt": operator.lt,
    "end_time__lte": operator.le,
}


@dataclass(frozen=True)
class ApiRequest:
    """One request the server answered: its path, query parameters and status."""

    method: str
    path: str
    query: dict[str, str]
    status: int


class _Refusal(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


@dataclass(frozen=True)
class _Record:
    end: datetime
    call_uuid: str
    body: Mapping[str, Any]

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.end, self.call_uuid)


class CallApiServer:
    """Plivo's `GET /v1/Account/{auth_id}/Call/` and `/Call/{call_uuid}/` over records given.

    `paging="cursor"` answers as Plivo's cursor paging does (meta.next carries `cursor=` instead
    of `offset=`; an offset sent along with a cursor is still applied, as Plivo's SDK warns)."""

    def __init__(
        self,
        records: Iterable[Mapping[str, Any]] = (),
        *,
        auth_id: str,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        now: Callable[[], datetime] | None = None,
        paging: Literal["offset", "cursor"] = "offset",
    ) -> None:
        self.auth_id = auth_id
        self._token = token
        self._now = now or (lambda: datetime.now(UTC))
        self.paging = paging
        self.requests: list[ApiRequest] = []
        self._records: list[_Record] = []
        self._failures: list[tuple[int, float | None, str]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.add(records)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def list_path(self) -> str:
        return f"/v1/Account/{self.auth_id}/Call/"

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """More records become visible, as calls that ended meanwhile do."""
        parsed = [_parse_record(record) for record in records]
        with self._lock:
            self._records.extend(parsed)
            # Plivo lists newest first; equal end times in a fixed order so offsets are stable.
            self._records.sort(key=lambda r: r.key, reverse=True)

    def fail(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        error: str | None = None,
    ) -> None:
        """The next `times` list requests answer `status` with `error` (or a stock text), and
        Retry-After when given."""
        text = error or ("too many requests" if status == 429 else f"error {status}")
        with self._lock:
            self._failures.extend([(status, retry_after, text)] * times)

    def start(self) -> CallApiServer:
        # A short poll so that stop() returns at once (tests start and stop many servers).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="call-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> CallApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The answers, as (status, headers, body); the handler only writes them.

    def answer(
        self, method: str, target: str, authorization: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers: dict[str, str] = {}
        try:
            body = self._route(method, parts.path, query, authorization, headers)
            status = 200
        except _Refusal as refusal:
            status, body = refusal.status, {"error": refusal.error}
        with self._lock:
            self.requests.append(ApiRequest(method, parts.path, query, status))
        return status, headers, {"api_id": str(uuid.uuid4()), **body}

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        authorization: str | None,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        segments = path.split("/")
        # "", "v1", "Account", auth_id, "Call", [call_uuid,] ""
        if (
            len(segments) not in (6, 7)
            or segments[:3] != ["", "v1", "Account"]
            or segments[4] != "Call"
            or segments[-1] != ""
        ):
            raise _Refusal(404, "not found")
        if method != "GET":
            raise _Refusal(405, "method not allowed")
        if segments[3] != self.auth_id or not self._authorized(authorization):
            headers["WWW-Authenticate"] = 'Basic realm="Plivo API"'
            raise _Refusal(401, "authentication failed")
        if len(segments) == 7:
            return self._one(segments[5])
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status, retry_after, error = failure
            if retry_after is not None:
                headers["Retry-After"] = f"{retry_after:g}"
            raise _Refusal(status, error)
        return self._list(query)

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.auth_id}:{self._token}"

    def _visible(self) -> list[_Record]:
        oldest = self._now() - KEPT
        with self._lock:
            return [record for record in self._records if record.end >= oldest]

    def _one(self, call_uuid: str) -> dict[str, Any]:
        for record in self._visible():
            if record.call_uuid == call_uuid:
                return dict(record.body)
        raise _Refusal(404, "call not found")

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        limit = _integer(query, "limit", MAX_LIMIT)
        offset = _integer(query, "offset", 0)
        if not 1 <= limit <= MAX_LIMIT:
            raise _Refusal(400, f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise _Refusal(400, "offset must not be negative")
        keep = self._end_time_filter(query)
        matching = [
            record
            for record in self._visible()
            if keep(record.end)
            and all(
                name not in query or record.body.get(name) == query[name] for name in EXACT_FILTERS
            )
            and all(
                name not in query or str(record.body.get(name) or "").startswith(query[name])
                for name in PREFIX_FILTERS
            )
        ]
        after = matching
        if self.paging == "cursor" and query.get("cursor"):
            position = _decode_cursor(query["cursor"])
            after = [record for record in matching if record.key < position]
        page = after[offset : offset + limit]
        return {
            "meta": {
                "limit": limit,
                "offset": offset,
                "next": self._next(query, page, len(after), offset, limit),
                "previous": self._previous(query, offset, limit),
                "total_count": len(matching),
            },
            "objects": [dict(record.body) for record in page],
        }

    def _next(
        self, query: dict[str, str], page: list[_Record], left: int, offset: int, limit: int
    ) -> str | None:
        if offset + limit >= left or not page:
            return None
        if self.paging == "cursor":
            params = {**query, "limit": str(limit), "cursor": _encode_cursor(page[-1].key)}
            params.pop("offset", None)
        else:
            params = {**query, "limit": str(limit), "offset": str(offset + limit)}
        return f"{self.list_path}?{urlencode(params)}"

    def _previous(self, query: dict[str, str], offset: int, limit: int) -> str | None:
        if self.paging == "cursor" or offset - limit < 0:
            return None
        params = {**query, "limit": str(limit), "offset": str(offset - limit)}
        return f"{self.list_path}?{urlencode(params)}"

    def _end_time_filter(self, query: dict[str, str]) -> Callable[[datetime], bool]:
        given = {
            name: _filter_time(name, query[name]) for name in END_TIME_FILTERS if name in query
        }
        if not given:
            since = self._now() - DEFAULT_WINDOW
            return lambda end: end >= since
        lower = max(
            (given[n] for n in ("end_time__gt", "end_time__gte") if n in given), default=None
        )
        upper = min(
            (given[n] for n in ("end_time__lt", "end_time__lte") if n in given), default=None
        )
        if lower is not None and upper is not None and upper - lower > MAX_RANGE:
            raise _Refusal(
                400, "end_time range exceeds the 30 day search boundary; narrow it to 30 days"
            )
        # A lone bound searches 30 days from (or up to) it.
        if lower is None and upper is not None:
            lower = upper - MAX_RANGE
        elif upper is None and lower is not None:
            upper = lower + MAX_RANGE
        tests = [(_COMPARE[name], bound) for name, bound in given.items()]

        def keep(end: datetime) -> bool:
            if (lower is not None and end < lower) or (upper is not None and end > upper):
                return False
            return all(compare(end, bound) for compare, bound in tests)

        return keep


def _handler_for(server: CallApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes: without TCP_NODELAY the body waits for the
        # client's delayed ACK (about 40 ms a request on a kept-alive connection).
        disable_nagle_algorithm = True

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = server.answer(
                self.command, self.path, self.headers.get("Authorization")
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _reply

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _parse_record(record: Mapping[str, Any]) -> _Record:
    end_time, call_uuid = record.get("end_time"), record.get("call_uuid")
    if not isinstance(end_time, str) or not isinstance(call_uuid, str):
        raise ValueError(f"a call record needs call_uuid and end_time strings, got {record!r}")
    end = datetime.fromisoformat(end_time)
    if end.tzinfo is None:
        raise ValueError(f"a record's end_time carries an offset, got {end_time!r}")
    return _Record(end.astimezone(UTC), call_uuid, record)


def _filter_time(name: str, value: str) -> datetime:
    for pattern in TIME_FORMATS:
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise _Refusal(400, f"{name}: expected YYYY-MM-DD HH:MM[:ss[.uuuuuu]] in UTC, got {value!r}")


def _integer(query: dict[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _Refusal(400, f"{name} must be an integer, got {query[name]!r}") from None


def _encode_cursor(key: tuple[datetime, str]) -> str:
    raw = json.dumps([key[0].isoformat(), key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        end, call_uuid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(end), str(call_uuid)
    except (ValueError, TypeError, binascii.Error):
        raise _Refusal(400, "invalid cursor") from None
