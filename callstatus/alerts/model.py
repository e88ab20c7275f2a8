"""What a rules file says, parsed: channels, rules and reports, and the messages sent for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

ChannelType = Literal["slack", "email", "webhook"]
RuleState = Literal["ok", "pending", "firing", "no data"]


@dataclass(frozen=True)
class Channel:
    """Where messages go: a Slack incoming webhook, email through SMTP_*, or a JSON POST signed
    with HMAC-SHA256 of the body (hex, X-Callstatus-Signature)."""

    name: str
    type: ChannelType
    url: str | None = None  # slack, webhook
    to: tuple[str, ...] = ()  # email
    secret: str | None = None  # webhook


@dataclass(frozen=True)
class Rule:
    """`metric` over the last `window` compared with `below`/`above` (or, with `drop` and
    `baseline`, with the same window at the same time of day over the baseline's days)."""

    name: str
    metric: str
    channels: tuple[str, ...]
    window: timedelta = timedelta(minutes=15)
    below: float | None = None
    above: float | None = None
    drop: float | None = None  # a fraction: 0.2 fires at 20% below the baseline
    baseline: timedelta | None = None
    min_volume: int = 0  # fewer events in the window: no verdict ("no data")
    for_: timedelta = timedelta(0)  # how long the condition holds before it fires
    cause: int | None = None  # hangup_cause_share's code
    direction: str | None = None  # inbound | outbound
    numbers: tuple[str, ...] = ()  # our numbers
    destinations: tuple[str, ...] = ()  # B destinations
    line: int | None = None  # where the rule starts in its file, for messages


@dataclass(frozen=True)
class Schedule:
    """When a report is sent: every `interval`, or at `at` (HH:MM) in `zone` every day, hour or
    week (`weekday` 0 = Monday)."""

    text: str
    interval: timedelta | None = None
    unit: Literal["hour", "day", "week"] | None = None
    at: tuple[int, int] = (0, 0)
    weekday: int | None = None
    zone: str = "UTC"


@dataclass(frozen=True)
class Report:
    name: str
    every: Schedule
    range: timedelta
    channels: tuple[str, ...]
    line: int | None = None


@dataclass(frozen=True)
class AlertsConfig:
    path: Path
    channels: dict[str, Channel] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    reports: tuple[Report, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    """A rule's value now: None when there is no verdict (no data, or under min_volume)."""

    rule: str
    value: float | None
    volume: int | None
    threshold: float | None  # the bound compared with (for a drop rule, the baseline's bound)
    condition: bool  # the bound is crossed
    at: datetime


@dataclass(frozen=True)
class Message:
    """One message: a rule firing or resolving, a report, or a test."""

    kind: Literal["firing", "resolved", "report", "test"]
    title: str
    text: str  # plain text, complete on its own
    fields: tuple[tuple[str, str], ...] = ()  # label, value: Slack blocks and HTML rows
    link: str | None = None  # the dashboard page with the same filters and range
    html: str | None = None  # email body; None: built from text and fields
    images: tuple[tuple[str, bytes], ...] = ()  # (file name, PNG) attached to email
