"""What /api/v1/'s deeper analytics answer (timing, concurrency, destinations, countries), as
pydantic models: the OpenAPI document's schemas come from these. Definitions: docs/data.md,
"Timing", "Concurrent calls", "Destinations: countries and line types"."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from callstatus.app.api_v1_models import RATE
from callstatus.dashboard import definitions

Measure = Literal["post_dial_delay", "ring_time", "b_leg_time_to_answer", "b_leg_time_to_give_up"]
MEASURES_TEXT = (
    "`post_dial_delay` (outbound API calls: StartTime to the first ring callback, or to the "
    "answer when no ring came first), `ring_time` (outbound API calls: the first ring callback, "
    "else StartTime, to the answer, or to the hangup when nobody answered), "
    "`b_leg_time_to_answer` (the Dial's start, i.e. the A leg's AnswerTime, to the B leg's "
    "answer), `b_leg_time_to_give_up` (the Dial's start to the hangup of a B leg never "
    "answered; lost races left out)."
)
BUCKET_TEXT = "The bucket size used, as a DuckDB interval (`5 minutes`, `1 hour`, `1 day`, ...)."


class TimingFigure(BaseModel):
    """One timing measure's distribution over a set of legs."""

    measure: Measure = Field(description=f"Which time: {MEASURES_TEXT}")
    legs: int = Field(description="Legs timed (those the measure applies to).")
    median_s: float | None = Field(description="Median, seconds (null when no leg was timed).")
    p90_s: float | None = Field(description="90th percentile (quantile_cont), seconds.")


class TimingPoint(TimingFigure):
    time: datetime = Field(description="Start of the bucket, in the zone asked for (`tz`).")
    end: datetime = Field(description="End of the bucket.")


class TimingDestination(TimingFigure):
    destination: str = Field(
        description="The country called (ISO code) for `post_dial_delay` and `ring_time`, the "
        "B number or SIP URI dialled for the B-leg measures; `(unknown)` when not known."
    )


class Timing(BaseModel):
    """Post-dial delay, ring time and B legs' time to answer or give up, over the range, per
    bucket and per destination (the dashboard's Timing and load page)."""

    start: datetime
    end: datetime
    bucket: str = Field(description=BUCKET_TEXT)
    summary: list[TimingFigure] = Field(description="Each measure over the whole range.")
    over_time: list[TimingPoint] = Field(
        description="Per bucket and measure, oldest first; buckets where a measure timed no "
        "leg are left out."
    )
    per_destination: list[TimingDestination] = Field(
        description="Per destination and measure, the destinations with the most timed legs "
        "first (200 rows at most)."
    )


class ConcurrencyPoint(BaseModel):
    time: datetime = Field(description="Start of the bucket, in the zone asked for (`tz`).")
    end: datetime = Field(description="End of the bucket.")
    peak: int = Field(description="The most legs up at one instant in the bucket.")
    peak_at: datetime | None = Field(
        description="The first instant the bucket's peak was reached (zone `tz`)."
    )
    mean: float | None = Field(
        description="Legs up at once on average over the bucket (time-weighted)."
    )


class Concurrency(BaseModel):
    """Legs up at once, exact from their start and end times (no sampling): a leg counts from
    its start up to, not including, its end."""

    start: datetime
    end: datetime
    bucket: str = Field(description=BUCKET_TEXT)
    legs: Literal["a", "b"] = Field(
        description="`a`: calls (A legs, StartTime to EndTime); `b`: B legs ringing or talking "
        "(from the Dial's start, the A leg's AnswerTime, to their hangup)."
    )
    peak: int = Field(description="The most legs up at one instant in the range.")
    peak_at: datetime | None = Field(
        description="The first instant it was reached (zone `tz`); null when no leg was up."
    )
    buckets: list[ConcurrencyPoint] = Field(description="Every bucket of the range, oldest first.")


class DestinationRow(BaseModel):
    """One B destination (a number or SIP URI dialled), as on the Destinations page."""

    destination: str = Field(description="`dial_b_leg_to`; `(unknown)` when Plivo sent none.")
    country: str | None = Field(
        description="ISO 3166 alpha-2 code from the number (phonenumbers); null when unknown "
        "(a SIP URI without a number, a malformed number)."
    )
    line_type: str | None = Field(
        description="fixed_line, mobile, fixed_line_or_mobile, toll_free, voip, sip, ...; null "
        "when unknown."
    )
    dialled: int = Field(description="B legs dialled to it.")
    answered: int
    lost_races: int = Field(description="B legs that lost the race (code 9000).")
    answer_rate: float | None = Field(description=f"{definitions.B_LEG_ANSWER_RATE} {RATE}")
    median_answer_s: float | None = Field(
        description="Median time to answer of its answered legs, seconds, from the Dial's start "
        "(the A leg's AnswerTime); null when none answered."
    )
    talk_s: int = Field(description="Talk time of its answered legs, seconds in all.")
    mean_talk_s: float | None = Field(description="Mean talk time of its answered legs.")


class Destinations(BaseModel):
    """One row per B destination dialled in the range, most dialled first."""

    start: datetime
    end: datetime
    destinations: list[DestinationRow]


class CountryRow(BaseModel):
    direction: str | None
    country: str = Field(
        description="The far end's ISO code: the number called (outbound), the caller "
        "(inbound); `(unknown)` when not derivable."
    )
    calls: int
    ended: int = Field(description="Calls that ended (outcome known).")
    answered: int = Field(description="Calls that ended answered.")
    call_answer_rate: float | None = Field(description=f"{definitions.CALL_ANSWER_RATE} {RATE}")
    busy: int
    no_answer: int
    failed: int = Field(description="Failed, unreachable or rejected.")
    acd_s: float | None = Field(description=definitions.ACD)


class CountryOutcome(BaseModel):
    country: str
    outcome: str | None
    calls: int


class BLegCountry(BaseModel):
    country: str = Field(
        description="The B destination's ISO code; `SIP` for SIP endpoints without a number; "
        "`(unknown)`."
    )
    b_legs: int
    answered: int
    lost_race: int
    b_leg_answer_rate: float | None = Field(description=f"{definitions.B_LEG_ANSWER_RATE} {RATE}")


class Countries(BaseModel):
    """Where calls go: outcomes and answer rates by country (the Destinations page)."""

    start: datetime
    end: datetime
    calls: list[CountryRow] = Field(
        description="Per direction and far-end country, most calls first (200 rows at most)."
    )
    outcomes: list[CountryOutcome] = Field(
        description="Calls per far-end country and outcome, for the `top` countries by calls."
    )
    b_legs: list[BLegCountry] = Field(description="B legs per destination country.")
