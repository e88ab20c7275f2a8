"""/api/v1/'s parameters: the range and slices as the dashboard's Filters, and the calls'
cursor."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query

from callstatus.core.numbers import NumberMasker
from callstatus.dashboard import context
from callstatus.dashboard.filters import (
    BUCKETS,
    Filters,
    auto_bucket,
    ceil_minute,
    lookup_numbers,
)
from callstatus.receiver.errors import RequestRefused

DEFAULT_SPAN = timedelta(days=7)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Start = Annotated[
    datetime | None,
    Query(
        description="First instant of the range, ISO 8601 (UTC when it has no offset). "
        "Default: 7 days before `end`."
    ),
]
End = Annotated[
    datetime | None,
    Query(description="End of the range, excluded, ISO 8601. Default: now, to the minute."),
]
Direction = Annotated[
    Literal["inbound", "outbound"] | None,
    Query(description="Only calls of this direction (default: both)."),
]
Numbers = Annotated[
    list[str] | None,
    Query(
        description="Only calls to (inbound) or from (outbound) these numbers of ours: repeat "
        "the parameter or separate numbers with commas. With CALLSTATUS_NUMBERS=masked a clear "
        "number is looked up as its pseudonym."
    ),
]
Destinations = Annotated[
    list[str] | None,
    Query(
        description="Only calls that dialled these B numbers: repeated or comma-separated. With "
        "CALLSTATUS_NUMBERS=masked a clear number is looked up as its pseudonym."
    ),
]
Countries = Annotated[
    list[str] | None,
    Query(
        description="Only calls whose far end is in these countries (ISO 3166 alpha-2 codes, "
        "e.g. GB: the number called for outbound calls, the caller for inbound ones; Dials and "
        "B legs by their call's): repeated or comma-separated, as the sidebar's Country filter."
    ),
]
Zone = Annotated[
    str,
    Query(max_length=64, description="IANA time zone of the buckets (series)."),
]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def listed(values: list[str] | None) -> tuple[str, ...]:
    """Repeated values, each of them possibly comma-separated (as Grafana joins a variable)."""
    parts = (part.strip() for value in values or () for part in value.split(","))
    return tuple(part for part in parts if part)


Bucket = Literal["auto", "5min", "hour", "day", "week"]
BucketSize = Annotated[
    Bucket,
    Query(description="Bucket size; `auto` picks one giving about 24 to 300 points."),
]
_BUCKETS = {"5min": "5 min", "hour": "hour", "day": "day", "week": "week"}
_BUCKET_SPAN = {
    "5 minutes": timedelta(minutes=5),
    "1 hour": timedelta(hours=1),
    "1 day": timedelta(days=1),
    "7 days": timedelta(days=7),
}
# Buckets in one series at most: 5-minute buckets over a month, or hours over a year.
MAX_POINTS = 10_000


def bucketed(f: Filters, bucket: str) -> Filters:
    """`f` with the bucket asked for (`auto`: as the dashboard picks it); refused when the
    range holds more than MAX_POINTS of them."""
    interval = auto_bucket(f.end - f.start) if bucket == "auto" else BUCKETS[_BUCKETS[bucket]]
    if (f.end - f.start) / _BUCKET_SPAN[interval] > MAX_POINTS:
        raise RequestRefused(
            400, "too_many_buckets", f"over {MAX_POINTS} buckets: take a larger bucket"
        )
    return replace(f, bucket=interval)


_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def check_countries(values: tuple[str, ...]) -> tuple[str, ...]:
    """ISO 3166 alpha-2 codes, upper case; anything else is refused (it would match nothing)."""
    for value in values:
        if not _COUNTRY.match(value):
            raise RequestRefused(
                400,
                "invalid_country",
                f"not an ISO 3166 alpha-2 country code: {value[:32]!r} (e.g. GB, US, DE)",
            )
    return tuple(dict.fromkeys(value.upper() for value in values))


def check_zone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RequestRefused(400, "invalid_tz", f"not an IANA time zone: {tz!r}") from exc
    return tz


def resolve(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The UTC [start, end) asked for; the last 7 days when neither is given."""
    last = _utc(end) if end is not None else ceil_minute(now)
    first = _utc(start) if start is not None else last - DEFAULT_SPAN
    if first >= last:
        raise RequestRefused(400, "invalid_range", "start must be before end")
    return first, last


@dataclass(frozen=True)
class Asked:
    """The range and slices asked for, as the dashboard's Filters, and the times as given."""

    filters: Filters
    start: datetime | None
    end: datetime | None


def asked(
    start: Start = None,
    end: End = None,
    direction: Direction = None,
    number: Numbers = None,
    destination: Destinations = None,
    tz: Zone = "UTC",
    country: Countries = None,
) -> Asked:
    """The query's range and slices, as the dashboard's sidebar would set them."""
    first, last = resolve(start, end, datetime.now(UTC))
    # Masked mode: a clear number is looked up as its pseudonym, as the dashboard does.
    masker = NumberMasker.from_settings(context.settings())
    f = Filters(
        start=first,
        end=last,
        direction=direction,
        numbers=lookup_numbers(listed(number), masker),
        destinations=lookup_numbers(listed(destination), masker),
        tz=check_zone(tz),
        countries=check_countries(listed(country)),
    )
    return Asked(f, start, end)


@dataclass(frozen=True)
class Cursor:
    """Where a page of calls ends: the last call's (started_at, call_uuid), and the query it
    belongs to (its range, and a digest of its other parameters)."""

    started_us: int
    call_uuid: str
    start_us: int
    end_us: int
    query: str

    @property
    def started_at(self) -> datetime:
        return _from_us(self.started_us)

    def encode(self) -> str:
        body = json.dumps(
            [self.started_us, self.call_uuid, self.start_us, self.end_us, self.query],
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            started, uuid, first, last, query = json.loads(raw)
            if not all(isinstance(n, int) for n in (started, first, last)):
                raise ValueError("not a position")
            for us in (started, first, last):
                _from_us(us)  # a time at all (OverflowError past year 9999)
            return cls(started, str(uuid), first, last, str(query))
        except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
            raise RequestRefused(
                400, "invalid_cursor", "not a cursor this API gave out: start again without one"
            ) from exc


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (DuckDB keeps microseconds)."""
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def query_digest(f: Filters, outcomes: tuple[str, ...]) -> str:
    """A short digest of the slices, so a cursor is not used with other ones."""
    parts = [f.direction or "", *f.numbers, "|", *f.destinations, "|", *outcomes]
    if f.countries:  # digests of cursors given out before the country filter stay valid
        parts += ["|", *f.countries]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def paged_range(a: Asked, cursor: Cursor, query: str) -> Filters:
    """The first page's range, which a cursor carries: the next pages read the same calls
    even when the range was relative ("the last 7 days") and time went on."""
    given = [(a.start, cursor.start_us), (a.end, cursor.end_us)]
    if cursor.query != query or any(v is not None and to_us(_utc(v)) != us for v, us in given):
        raise RequestRefused(
            400,
            "cursor_mismatch",
            "the cursor belongs to a query with other parameters: pass the same ones, or none",
        )
    return replace(a.filters, start=_from_us(cursor.start_us), end=_from_us(cursor.end_us))
