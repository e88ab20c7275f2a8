"""/api/v1/'s deeper analytics, computed by the Timing and Destinations pages' own query
functions on the live database (imported at the first request: see api_v1_answers)."""

from __future__ import annotations

from typing import Any

from callstatus.app.api_v1_analytics_models import (
    BLegCountry,
    Concurrency,
    ConcurrencyPoint,
    Countries,
    CountryOutcome,
    CountryRow,
    DestinationRow,
    Destinations,
    Timing,
    TimingDestination,
    TimingFigure,
    TimingPoint,
)
from callstatus.app.api_v1_answers import local, plain, records
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import concurrency, destinations, timing
from callstatus.dashboard.queries.relations import Relations

# The pages' measure labels -> the API's names.
MEASURES = {
    timing.PDD: "post_dial_delay",
    timing.RING: "ring_time",
    timing.B_ANSWER: "b_leg_time_to_answer",
    timing.B_GIVE_UP: "b_leg_time_to_give_up",
}
SERIES = {"a": concurrency.A_LEGS, "b": concurrency.B_LEGS}


def _measured(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "measure": MEASURES[row["measure"]]}


def timing_figures(rel: Relations, f: Filters) -> Timing:
    summary = records(timing.summary(rel, f).frame)
    over_time = records(timing.over_time(rel, f).frame)
    per_destination = records(timing.per_destination(rel, f).frame)
    return Timing(
        start=f.start,
        end=f.end,
        bucket=f.bucket,
        summary=[TimingFigure(**_measured(row)) for row in summary],
        over_time=[
            TimingPoint(
                **_measured(row),
                time=local(row["bucket"], f.tz),
                end=local(row["bucket_end"], f.tz),
            )
            for row in over_time
        ],
        per_destination=[TimingDestination(**_measured(row)) for row in per_destination],
    )


def concurrent(rel: Relations, f: Filters, legs: str) -> Concurrency:
    frame = concurrency.over_time(rel, f, SERIES[legs]).frame
    top, when = concurrency.peak_of(frame)
    at = plain(when)
    return Concurrency(
        start=f.start,
        end=f.end,
        bucket=f.bucket,
        legs="a" if legs == "a" else "b",
        peak=top,
        peak_at=local(at, f.tz) if at is not None else None,
        buckets=[
            ConcurrencyPoint(
                time=local(row["bucket"], f.tz),
                end=local(row["bucket_end"], f.tz),
                peak=row["peak"],
                peak_at=local(row["peak_at"], f.tz) if row["peak_at"] is not None else None,
                mean=row["mean"],
            )
            for row in records(frame)
        ],
    )


def destination_rows(rel: Relations, f: Filters, limit: int) -> Destinations:
    rows = records(destinations.per_destination(rel, f, limit).frame)
    return Destinations(
        start=f.start, end=f.end, destinations=[DestinationRow(**row) for row in rows]
    )


def countries(rel: Relations, f: Filters, top: int) -> Countries:
    calls = records(destinations.by_country(rel, f).frame)
    outcomes = records(destinations.outcomes_by_country(rel, f, f.direction, top).frame)
    b_legs = records(destinations.legs_by_country(rel, f).frame)
    return Countries(
        start=f.start,
        end=f.end,
        calls=[CountryRow(**row) for row in calls],
        outcomes=[CountryOutcome(**row) for row in outcomes],
        b_legs=[BLegCountry(**row) for row in b_legs],
    )
