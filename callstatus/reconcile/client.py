"""The client for Plivo's Call API: call records by end time, in chunks and pages, retried."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests

from callstatus.core.settings import Settings

log = logging.getLogger(__name__)

# Plivo keeps records 90 days and refuses an end_time range over 30 days; 20 records a page.
KEPT = timedelta(days=90)
MAX_CHUNK = timedelta(days=30)
PAGE_SIZE = 20
# Asked a little inside the 90 days, so a run that takes a while never asks past them.
EARLIEST_MARGIN = timedelta(hours=1)
MAX_WAIT_S = 60.0
FIRST_WAIT_S = 1.0
CREDENTIALS = "PLIVO_AUTH_ID and PLIVO_API_TOKEN (or the first of PLIVO_AUTH_TOKEN)"


class CallApiError(Exception):
    """A failure a user can act on, in one line; `status` is Plivo's HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Page:
    """One page of records of one chunk [chunk_start, chunk_end); `offset` counts the chunk's
    records before it."""

    records: list[dict[str, Any]]
    total_count: int | None
    chunk_start: datetime
    chunk_end: datetime
    offset: int


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CallApi:
    """Reads Plivo's call records over HTTP Basic auth; never logs or repeats the token."""

    def __init__(
        self,
        auth_id: str,
        token: str,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = _utc_now,
        chunk: timedelta = timedelta(days=1),
    ) -> None:
        if not timedelta(0) < chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be more than 0 and at most 30 days, got {chunk}")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.auth_id = auth_id
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.chunk = chunk
        self._token = token
        self._sleep = sleep
        self._now = now
        self._session = requests.Session()
        self._session.auth = (auth_id, token)
        self._session.headers["User-Agent"] = "callstatus"
        self._session.headers["Accept"] = "application/json"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, sleep: Callable[[float], None] = time.sleep
    ) -> CallApi:
        auth_id, token = settings.plivo_auth_id, settings.call_api_token
        if not auth_id or not token:
            missing = [] if auth_id else ["PLIVO_AUTH_ID"]
            missing += [] if token else ["PLIVO_API_TOKEN (or PLIVO_AUTH_TOKEN)"]
            raise CallApiError(
                f"reading Plivo's call records needs {' and '.join(missing)}: "
                "set them from the API keys in Plivo's console"
            )
        return cls(auth_id, token, settings.plivo_api_url, sleep=sleep)

    def close(self) -> None:
        self._session.close()

    @property
    def list_path(self) -> str:
        return f"/v1/Account/{quote(self.auth_id, safe='')}/Call/"

    def earliest(self) -> datetime:
        """The oldest end time asked for: 90 days back, plus an hour to spare."""
        return self._now() - KEPT + EARLIEST_MARGIN

    def record(self, call_uuid: str) -> dict[str, Any]:
        """One call's record (Plivo adds its `api_id`)."""
        return self._get(f"{self.list_path}{quote(call_uuid, safe='')}/", {})

    def pages(self, start: datetime, end: datetime) -> Iterator[Page]:
        """Every record with start <= end_time < end, chunk by chunk, page by page.

        Plivo lists a query newest first and pages by offset (or by a cursor in meta.next). A
        record that ends while a chunk is paged lands at its newest end and shifts the rest one
        place further: a record is then read twice (storage keeps one per call_uuid), never
        skipped. Records that leave at the oldest end (past 90 days) shift nothing before them.
        """
        start, end = _utc(start), _utc(end)
        earliest = self.earliest()
        if start < earliest:
            log.warning(
                "Plivo keeps call records 90 days: asking from %s instead of %s",
                _format(earliest),
                _format(start),
            )
            start = earliest
        # Filters take whole seconds; records' end times have whole seconds too.
        start = start.replace(microsecond=0)
        if end.microsecond:
            end = end.replace(microsecond=0) + timedelta(seconds=1)
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(chunk_start + self.chunk, end)
            yield from self._chunk(chunk_start, chunk_end)
            chunk_start = chunk_end

    def _chunk(self, start: datetime, end: datetime) -> Iterator[Page]:
        filters = {"end_time__gte": _format(start), "end_time__lt": _format(end)}
        paging: dict[str, str] = {"limit": str(PAGE_SIZE), "offset": "0"}
        seen = 0
        while True:
            body = self._get(self.list_path, {**filters, **paging})
            objects = body.get("objects")
            meta = body.get("meta")
            if not isinstance(objects, list) or not isinstance(meta, dict):
                raise CallApiError(
                    f"Plivo's Call API answered {self.base_url}{self.list_path} without "
                    "'objects' and 'meta': is PLIVO_API_URL Plivo's API?"
                )
            total = meta.get("total_count")
            records = [record for record in objects if isinstance(record, dict)]
            yield Page(records, total if isinstance(total, int) else None, start, end, seen)
            seen += len(records)
            following = _next_paging(meta.get("next"))
            if not objects or following is None:
                return
            if following == paging:
                # A server that ignored the paging would hand back this page forever.
                return
            paging = following

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        failure, status = "", None
        for attempt in range(1, self.attempts + 1):
            retry_after: float | None = None
            status = None
            try:
                response = self._session.get(url, params=params, timeout=self.timeout_s)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                failure = f"could not connect to {self.base_url} ({type(exc).__name__})"
            except requests.RequestException as exc:
                raise CallApiError(
                    self._scrub(f"could not ask Plivo's Call API at {url}: {exc}")
                ) from None
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    failure = f"answered HTTP {status}{_said(response, ' ({})')}"
                    retry_after = _retry_after(response, self._now())
                else:
                    return self._answer(response, path)
            if attempt == self.attempts:
                break
            wait = _backoff(attempt, retry_after)
            log.info(
                "Plivo's Call API: %s; retrying in %.1f s (attempt %d of %d)",
                self._scrub(failure),
                wait,
                attempt + 1,
                self.attempts,
            )
            self._sleep(wait)
        raise CallApiError(
            self._scrub(
                f"Plivo's Call API failed {self.attempts} attempts, the last {failure}; "
                "try again later"
            ),
            status,
        )

    def _answer(self, response: requests.Response, path: str) -> dict[str, Any]:
        status = response.status_code
        said = self._scrub(_said(response, ": {}"))
        if status in (401, 403):
            raise CallApiError(
                f"Plivo's Call API refused the credentials (HTTP {status}{said}): "
                f"check {CREDENTIALS}",
                status,
            )
        if status == 404:
            raise CallApiError(
                f"Plivo's Call API has no {path} (HTTP 404{said}): check PLIVO_AUTH_ID "
                f"and PLIVO_API_URL ({self.base_url})",
                status,
            )
        if status == 400:
            raise CallApiError(f"Plivo's Call API refused the query (HTTP 400{said})", status)
        if status != 200:
            raise CallApiError(f"Plivo's Call API answered HTTP {status}{said}", status)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            kind = response.headers.get("Content-Type") or "no content type"
            raise CallApiError(
                f"Plivo's Call API answered {self.base_url}{path} with something other than a "
                f"JSON object ({kind}): check PLIVO_API_URL",
                status,
            )
        return body

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _said(response: requests.Response, form: str) -> str:
    """Plivo's error text put in `form`, or nothing when the answer carries none."""
    try:
        body = response.json()
    except ValueError:
        # Not JSON: a short plain text is worth showing, an HTML page is not.
        text = " ".join(response.text.split())[:200]
        return form.format(text) if text and not text.startswith("<") else ""
    error = body.get("error") if isinstance(body, dict) else None
    return form.format(error) if error else ""


def _next_paging(following: object) -> dict[str, str] | None:
    """The paging of the page after this one, from meta.next: its cursor, else its offset.

    Only paging is taken from it; our own filters ride on every request whatever it carries.
    A cursor goes without an offset: Plivo applies an offset sent along with a cursor."""
    if not isinstance(following, str) or not following:
        return None
    query = parse_qs(urlsplit(following).query)
    limit = query.get("limit", [str(PAGE_SIZE)])[-1]
    if query.get("cursor"):
        return {"limit": limit, "cursor": query["cursor"][-1]}
    if query.get("offset"):
        return {"limit": limit, "offset": query["offset"][-1]}
    return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(MAX_WAIT_S, max(0.0, retry_after))
    # Full jitter over an exponentially growing ceiling, so clients that failed together spread.
    ceiling = min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: requests.Response, now: datetime) -> float | None:
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when - now).total_seconds() if when.tzinfo else None


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a window bound needs a time zone, got {moment!r}")
    return moment.astimezone(UTC)


def _format(moment: datetime) -> str:
    """Plivo's filter format: UTC, YYYY-MM-DD HH:MM:SS."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
