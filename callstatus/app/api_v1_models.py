"""What /api/v1/ answers, as pydantic models: the OpenAPI document's schemas come from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from callstatus.dashboard import definitions

RATE = "A fraction between 0 and 1; null when its denominator is 0."


def _rate(text: str) -> Any:
    return Field(default=None, description=f"{text} {RATE}")


class KpiFigures(BaseModel):
    """Every KPI tile's figure for one range, from the overview's query (one definition)."""

    start: datetime = Field(description="First instant of the range (UTC).")
    end: datetime = Field(description="End of the range, excluded (UTC).")
    calls: int = Field(description=definitions.CALLS)
    inbound_calls: int
    outbound_calls: int
    ended_calls: int = Field(description="Calls of the range that ended (outcome known).")
    answered_calls: int = Field(description="Calls of the range that ended answered.")
    acd_seconds: float | None = Field(default=None, description=definitions.ACD)
    busy_calls: int
    no_answer_calls: int
    failed_calls: int
    records_only_calls: int | None = Field(
        default=None,
        description="Calls known only from Plivo's call records: none of their webhooks came.",
    )
    dials: int = Field(description="Dials whose webhooks arrived in the range.")
    dials_completed: int = Field(description="Dials with dial_status 'completed'.")
    b_legs: int = Field(description="B legs timed in the range.")
    b_answered: int = Field(description="B legs answered.")
    b_lost_race: int = Field(description="B legs that lost the race (code 9000).")
    call_answer_rate: float | None = _rate(definitions.CALL_ANSWER_RATE)
    dial_answer_rate: float | None = _rate(definitions.DIAL_ANSWER_RATE)
    b_leg_answer_rate: float | None = _rate(definitions.B_LEG_ANSWER_RATE)
    b_lost_race_share: float | None = _rate("Lost races / B legs.")
    busy_share: float | None = _rate(definitions.BUSY)
    no_answer_share: float | None = _rate(definitions.NO_ANSWER)
    failed_share: float | None = _rate(definitions.FAILED)
    records_only_share: float | None = _rate("Records-only calls / calls.")


class Kpis(KpiFigures):
    """The range's figures, which one the overview leads with, and the previous range's."""

    lead: Literal["dial", "call"] = Field(
        description="The rate the overview leads with: the dial answer rate for inbound "
        "traffic, the call answer rate for outbound (the direction with most calls decides)."
    )
    comparable: bool = Field(
        description="Whether the overview shows changes: the data covers the whole previous "
        "range and it holds at least 20 calls."
    )
    previous: KpiFigures = Field(description="The same figures for the range just before.")


class SeriesPoint(BaseModel):
    """One time bucket: the metric and the calls that started in it."""

    time: datetime = Field(description="Start of the bucket, in the zone asked for (`tz`).")
    end: datetime = Field(description="End of the bucket.")
    value: float | None = Field(
        description="The metric asked for: a count for `calls`, else a fraction between 0 and "
        "1 (null when nothing counted towards it in the bucket)."
    )
    calls: int = Field(description="Calls that started in the bucket (the volume).")


class Call(BaseModel):
    """A call (an A leg), as in the `calls` view (docs/data.md)."""

    call_uuid: str
    direction: str | None
    from_number: str | None
    to_number: str | None
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: int | None
    bill_duration_s: int | None
    call_status: str | None
    answered: bool | None
    outcome: str | None
    hangup_cause_code: int | None
    hangup_cause_name: str | None
    hangup_cause: str | None
    hangup_source: str | None


class ListedCall(Call):
    source: str | None = Field(
        description="Where the call is known from: 'webhooks', 'cdr' (Plivo's call records "
        "only) or 'both'."
    )


class CallPage(BaseModel):
    """Calls newest first (by started_at, then call_uuid)."""

    start: datetime
    end: datetime
    calls: list[ListedCall]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last one."
    )


class Dial(BaseModel):
    """A Dial of the call, as in the `dials` view."""

    a_leg_uuid: str | None
    b_leg_uuid: str | None
    dial_status: str | None
    dial_ring_status: bool | None
    dial_hangup_cause: str | None
    received_at: datetime | None
    source: str | None


class BLeg(BaseModel):
    """A B leg the call dialled, as in the `dial_legs` view."""

    position: int | None
    b_leg_to: str | None
    b_leg_from: str | None
    b_leg_uuid: str | None
    outcome: str | None
    answered: bool | None
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: int | None
    hangup_cause_code: int | None
    hangup_cause_name: str | None
    hangup_cause: str | None
    hangup_source: str | None


class WebhookEntry(BaseModel):
    """One webhook about the call; repeats of it (same kind and parameters) folded in."""

    received: datetime
    kind: str
    event: str | None
    dial_action: str | None
    call_status: str | None
    dial_status: str | None
    dial_b_leg_uuid: str | None
    duplicate: bool
    deliveries: int = Field(description="How many times it was delivered.")
    last_received: datetime
    signature: str | None
    http_method: str | None
    params: dict[str, Any] = Field(description="Every parameter as received.")
    event_id: str


class CallDetail(BaseModel):
    """A call, its Dial(s), its B legs and its webhooks in the order they arrived."""

    call: Call
    dials: list[Dial]
    b_legs: list[BLeg]
    webhooks: list[WebhookEntry]
    webhook_entries: int = Field(
        description="Entries in all; more than listed when the call has over 1000."
    )


class CauseRow(BaseModel):
    cause: str = Field(description="The label the dashboard shows: code and Plivo's name.")
    code: int | None
    plivo_name: str | None
    telephony_cause: str | None
    outcome: str | None
    legs: int
    cause_legs: int = Field(description="Legs with this cause, every outcome.")


class SourceRow(BaseModel):
    source: str = Field(description="Who hung up (HangupSource).")
    outcome: str | None
    legs: int


class HangupCauses(BaseModel):
    """Legs per hangup cause and per hangup source, split by outcome (most frequent first)."""

    start: datetime
    end: datetime
    leg: Literal["a", "b"]
    causes: list[CauseRow]
    sources: list[SourceRow]


class Destination(BaseModel):
    b_leg_to: str
    b_legs: int
    answered: int
    lost_race: int
    not_answered: int
    answer_rate: float | None = _rate("Answered / B legs.")
    answer_rate_excl_lost_race: float | None = _rate("Answered / B legs that did not lose a race.")


class Position(BaseModel):
    position: int | None = Field(description="The B leg's position in its Dial (1 first).")
    b_legs: int
    wins: int = Field(description="B legs at this position that answered.")
    lost_race: int
    win_rate: float | None = _rate("Wins / B legs.")


class Legs(BaseModel):
    """B legs per destination (100 most dialled) and, in simultaneous dials, who won."""

    start: datetime
    end: datetime
    destinations: list[Destination]
    winners_by_position: list[Position]
