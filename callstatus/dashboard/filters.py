"""The view every page shows: time range, bucket, direction, numbers, B destinations, zone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from callstatus.core.numbers import NumberMasker

PRESETS: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
    "All time": None,
    "Custom": None,
}
DEFAULT_PRESET = "Last 7 days"

# bucket label -> DuckDB interval; "auto" picks one giving roughly 24-300 points.
BUCKETS: dict[str, str] = {"5 min": "5 minutes", "hour": "1 hour", "day": "1 day", "week": "7 days"}
BUCKET_CHOICES = ("auto", *BUCKETS)
DIRECTIONS = ("all", "inbound", "outbound")


@dataclass(frozen=True)
class Filters:
    """A half-open UTC range [start, end) and the slices applied to every query."""

    start: datetime
    end: datetime
    bucket: str = "1 hour"
    direction: str | None = None
    numbers: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()
    tz: str = "UTC"
    # ISO countries of the A leg's far end: the called number (outbound), the caller (inbound).
    countries: tuple[str, ...] = ()

    def previous(self) -> Filters:
        """The equal range just before this one, for the KPI deltas."""
        span = self.end - self.start
        return replace(self, start=self.start - span, end=self.start)

    def wall_clock(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The range's start and end as naive wall-clock times of its zone, as buckets are;
        the end no later than `now` when given (a range into the future holds data up to now)."""
        zone = ZoneInfo(self.tz)
        end = self.end if now is None else min(self.end, now)
        return (
            self.start.astimezone(zone).replace(tzinfo=None),
            end.astimezone(zone).replace(tzinfo=None),
        )

    def params(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "bucket": self.bucket,
            "direction": self.direction,
            "numbers": list(self.numbers),
            "destinations": list(self.destinations),
            "tz": self.tz,
            "countries": list(self.countries),
        }


def lookup_numbers(values: Iterable[str], masker: NumberMasker | None) -> tuple[str, ...]:
    """Numbers chosen or typed for a filter as stored: in masked mode a clear number becomes its
    pseudonym (an own number the forms Plivo sends it in), a pseudonym stays as it is."""
    if masker is None:
        return tuple(values)
    return tuple(dict.fromkeys(form for value in values for form in masker.lookup_forms(value)))


def auto_bucket(span: timedelta) -> str:
    if span <= timedelta(hours=12):
        return BUCKETS["5 min"]
    if span <= timedelta(days=4):
        return BUCKETS["hour"]
    if span <= timedelta(days=120):
        return BUCKETS["day"]
    return BUCKETS["week"]


def ceil_minute(moment: datetime) -> datetime:
    """Round up to the minute: "now" then stays put for a minute, so cached queries hit."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def resolve_range(
    preset: str,
    now: datetime,
    custom: tuple[date, date] | None,
    tz: str,
    data_span: tuple[datetime, datetime] | None,
) -> tuple[datetime, datetime]:
    """The UTC [start, end) a preset means right now; custom days are whole days in `tz`."""
    end = ceil_minute(now)
    length = PRESETS.get(preset)
    if length is not None:
        return end - length, end
    if preset == "Custom" and custom is not None:
        zone = ZoneInfo(tz)
        first = datetime.combine(custom[0], time.min, zone)
        last = datetime.combine(custom[1] + timedelta(days=1), time.min, zone)
        return first.astimezone(UTC), last.astimezone(UTC)
    if data_span is not None:  # "All time": the data's own span
        return data_span[0], ceil_minute(max(data_span[1], data_span[0]) + timedelta(seconds=1))
    return end - timedelta(days=7), end
