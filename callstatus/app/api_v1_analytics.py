"""/api/v1/'s deeper analytics: timing, concurrent calls, destinations and countries, as the
dashboard's Timing and load and Destinations pages compute them (one definition each), with the
same parameters, credentials and errors as the rest of /api/v1/.

The answers come from callstatus.app.api_v1_analytics_answers, imported at the first request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from callstatus.app import api_v1_params as params
from callstatus.app.api_v1 import ERRORS, TAG, Rel, Slice
from callstatus.app.api_v1_analytics_models import (
    Concurrency,
    Countries,
    Destinations,
    Timing,
)

router = APIRouter(prefix="/api/v1", tags=[TAG], responses=ERRORS)


@router.get("/timing", operation_id="timing")
def timing(rel: Rel, asked: Slice, bucket: params.BucketSize = "auto") -> Timing:
    """Post-dial delay and ring time of outbound API calls, B legs' time to answer and to give
    up, as median and 90th percentile over the range, per bucket and per destination (the
    Timing and load page). Outbound calls count in the bucket they started in, B legs in the
    one they answered in (else ended in). Definitions: docs/data.md, "Timing"."""
    from callstatus.app import api_v1_analytics_answers as answers

    return answers.timing_figures(rel, params.bucketed(asked.filters, bucket))


@router.get("/concurrency", operation_id="concurrency")
def concurrency(
    rel: Rel,
    asked: Slice,
    legs: Annotated[
        Literal["a", "b"],
        Query(description="`a`: calls (A legs); `b`: B legs ringing or talking."),
    ] = "a",
    bucket: params.BucketSize = "auto",
) -> Concurrency:
    """Concurrent calls: the peak and the time-weighted mean of legs up at once per bucket, and
    the range's peak with when it was first reached, computed exactly from start and end times.
    A leg with no end yet counts until the range's end, 6 hours after its start at most.
    Definitions: docs/data.md, "Concurrent calls"."""
    from callstatus.app import api_v1_analytics_answers as answers

    return answers.concurrent(rel, params.bucketed(asked.filters, bucket), legs)


@router.get("/destinations", operation_id="destinations")
def destinations(
    rel: Rel,
    asked: Slice,
    limit: Annotated[int, Query(ge=1, le=500, description="Destinations at most.")] = 500,
) -> Destinations:
    """One row per B destination (number or SIP URI) dialled in the range, most dialled first:
    legs dialled, answered, lost races, the B-leg answer rate, the median time to answer and the
    talk time, as the Destinations page's table. With CALLSTATUS_NUMBERS=masked destinations
    are their pseudonyms."""
    from callstatus.app import api_v1_analytics_answers as answers

    return answers.destination_rows(rel, asked.filters, limit)


@router.get("/countries", operation_id="countries")
def countries(
    rel: Rel,
    asked: Slice,
    top: Annotated[
        int, Query(ge=1, le=200, description="Countries in `outcomes`: the most calls first.")
    ] = 12,
) -> Countries:
    """Outcomes and answer rates by country: calls per direction and far-end country (the
    number called for outbound calls, the caller for inbound ones) with how they ended, calls
    per country and outcome, and B legs per destination country, as the Destinations page.
    Countries come from the numbers (phonenumbers): docs/data.md, "Destinations"."""
    from callstatus.app import api_v1_analytics_answers as answers

    return answers.countries(rel, asked.filters, top)
