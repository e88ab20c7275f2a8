"""The traffic model: the webhooks and call records Plivo gives for realistic calls, per seed.

Each call is built from its own random generator, seeded from the model's seed and the call's
index, so a seed always gives the same calls whichever order or thread builds them. The webhooks
up to the answer XML (ring, answer or fallback, their retries) are the call's *head*: they never
depend on the Dial, so a simulator sends them, reads the server's XML, rebuilds the call with
the Dial it got, and the head comes out the same. Times are epoch seconds in call time.

Each call also carries `records`: the CDRs Plivo's Call API would list for it once it ended.
What the model assumes about them:
- one record per leg that ended: the A leg (written where its hangup is, so a call that never
  hangs up has none; every call of this model hangs up) and every B leg its Dial rang, whether
  or not the Dial had a callbackUrl (Plivo records every leg; only the callbacks are optional);
- records repeat what the webhooks said: same uuids, numbers, hangup code, name and source,
  `call_duration` = Duration and `bill_duration` = `billed_duration` = BillDuration (the billed
  seconds, rounded up to `bill_increment_s` as the webhooks do), `total_amount` = TotalCost and
  `total_rate` = the leg's BillRate;
- an A leg runs from its StartTime (`initiation_time`) to its EndTime; a B leg is initiated when
  its Dial starts, answered when it picked up (null otherwise) and ends at its hangup; a B leg
  is `outbound`, from the Dial's caller id (the A leg's From by default), with
  `parent_call_uuid` = the A leg;
- times are "YYYY-MM-DD HH:MM:SS+HH:MM" in the model's zone (the webhooks' times without the
  offset); `call_state` ("ANSWER" when answered, otherwise BUSY, CANCEL, FAILED or NO_ANSWER) is
  a guess beyond "ANSWER", which Plivo's examples show;
- building them draws no random number, so records never change which webhooks a seed gives;
  a call keeps each leg's ending (`LegEnd`) and formats its records only when they are read,
  so building calls (seeding millions) pays nothing for them.

A share of calls may report their Dial's outcome through a PHLO instead (`with_phlo`): their
Dial action webhooks become the PHLO reports a PHLO's HTTP Request component would send to
/plivo/phlo, keys spelled as a user might type them. Which calls, and how each report is spelled,
encoded and authenticated, is drawn from a generator of its own, never the call's: a seed gives
the same calls and webhooks with the option off as before it existed.

Why one module of about 800 lines: it is one model (a call's legs, the Dial's race, the hangup
causes and the webhooks and records each produces) whose parts share the call's random
generator and clock; split, the order in which random numbers are drawn (which fixes what a
seed gives) would be spread over several files. Its settings live apart, in `config.py`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from callstatus.core.plivo import PATH_OF_KIND
from callstatus.core.records import Params
from callstatus.simulator.config import Agent, App, TrafficConfig

# Where each kind of webhook is sent.
PATHS = PATH_OF_KIND

# (HangupCauseCode, HangupCauseName, telephony cause, HangupSource, CallStatus) per ending.
# Where Plivo has several codes for one outcome, the first is the usual one.
ENDINGS: dict[str, tuple[tuple[int, str, str, str, str], ...]] = {
    "normal": ((4000, "Normal Hangup", "NORMAL_CLEARING", "Caller", "completed"),),
    "end-of-xml": ((4010, "End Of XML Instructions", "NORMAL_CLEARING", "Plivo", "completed"),),
    "no-answer": ((3000, "No Answer", "NO_ANSWER", "Carrier", "no-answer"),),
    "timeout": ((6010, "Ring Timeout Reached", "NO_ANSWER", "Plivo", "timeout"),),
    "busy": (
        (3010, "Busy Line", "USER_BUSY", "Call recipient", "busy"),
        (3100, "Busy everywhere", "USER_BUSY", "Call recipient", "busy"),
    ),
    "rejected": (
        (3020, "Rejected", "CALL_REJECTED", "Call recipient", "busy"),
        (3110, "Declined", "CALL_REJECTED", "Call recipient", "busy"),
        (3130, "Spam block", "CALL_REJECTED", "Carrier", "busy"),
    ),
    "unreachable": (
        (2000, "Invalid Destination Address", "UNALLOCATED_NUMBER", "Carrier", "failed"),
        (2010, "Destination Out Of Service", "NO_ROUTE_DESTINATION", "Carrier", "failed"),
    ),
    "failed": (
        (5000, "Network Error", "NORMAL_TEMPORARY_FAILURE", "Error", "failed"),
        (3090, "Network congestion from carrier", "NORMAL_TEMPORARY_FAILURE", "Carrier", "failed"),
    ),
    "canceled": ((1000, "Canceled", "ORIGINATOR_CANCEL", "Caller", "cancel"),),
    "api-canceled": ((1000, "Canceled", "ORIGINATOR_CANCEL", "API Request", "cancel"),),
    "lost-race": ((9000, "Lost Race", "LOSE_RACE", "Plivo", "completed"),),
    "machine": ((9100, "Machine Detected", "NORMAL_CLEARING", "Plivo", "completed"),),
}
# Seconds from dial (or call) start until a leg with this outcome answers or ends.
OUTCOME_DELAY = {
    "answer": (2.0, 22.0),
    "busy": (0.3, 2.0),
    "rejected": (2.0, 12.0),
    "unreachable": (0.2, 1.5),
    "failed": (0.2, 6.0),
    "no-answer": (18.0, 45.0),
    "canceled": (3.0, 20.0),
}
RINGS = frozenset({"answer", "no-answer", "timeout", "rejected", "canceled", "lost-race"})
# Which DialStatus a Dial that nobody answered reports, by the best outcome among its legs.
DIAL_STATUS_ORDER = (
    ("timeout", "timeout"),
    ("no-answer", "no-answer"),
    ("busy", "busy"),
    ("rejected", "busy"),
)
OUTBOUND_RING_TIMEOUT_S = 45.0
GREETING_S = (2.0, 3.5)
CALLER_NAMES = ("Maria Garcia", "John Smith", "ACME CORP", "Wei Chen", "Priya Sharma", "O'Brien P")
NON_ASCII_NAMES = (
    "José Álvarez",
    "Zoë Ødegård",
    "Łukasz Żółć",
    "Ελένη Π.",
    "李雷",
    "Дмитрий",
    "Renée",
)
EXTRA_PARAMS: tuple[tuple[str, str | list[str]], ...] = (
    ("SIP-H-X-Campaign", "spring-2026"),
    ("STIRAttestation", "A"),
    ("VoiceAnalyticsScore", "0.87"),
    ("SIP-H-X-Tag", ["vip", "rückruf"]),
    ("CallerIDLookup", "true"),
)
STIR = ("Verified", "Not Verified", "Not Applicable", "verified")
# A call record's `call_state` for a leg that was never answered, by its CallStatus.
UNANSWERED_STATES = {"busy": "BUSY", "cancel": "CANCEL", "failed": "FAILED"}
# A PHLO report's keys (the Dial action's), as the guide spells them and as users type them.
PHLO_KEYS = ("DialStatus", "DialRingStatus", "DialHangupCause", "DialALegUUID", "DialBLegUUID")
PHLO_SPELLINGS: tuple[tuple[str, ...], ...] = (
    PHLO_KEYS,
    ("dial_status", "dial_ring_status", "dial_hangup_cause", "dial_a_leg_uuid", "dial_b_leg_uuid"),
    ("dialstatus", "dialringstatus", "dialhangupcause", "dialaleguuid", "dialbleguuid"),
    ("Dial_Status", "Dial_Ring_Status", "Dial_Hangup_Cause", "Dial_A_Leg_UUID", "Dial_B_Leg_UUID"),
)
# How a PHLO report travels: (method, encoding), and where it carries PHLO_SECRET.
PHLO_ENCODINGS = (("POST", "json"), ("POST", "json"), ("POST", "form"), ("GET", "form"))
PHLO_SECRET_PLACES = ("bearer", "header", "query")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how Plivo calls one URL: method, path and the URL's own query string."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DialSpec:
    """The <Dial> a call's answer XML asked for."""

    targets: tuple[str, ...]
    action: Endpoint | None
    callback: Endpoint | None
    caller_id: str | None = None
    timeout_s: int | None = None


@dataclass(slots=True)
class Webhook:
    """One request Plivo makes; `body` holds Plivo's parameters (in the query string on GET).
    A PHLO report (kind `phlo`) may post them as JSON (`encoding`) and carries PHLO_SECRET
    where `secret_in` says (one of PHLO_SECRET_PLACES), when the sender has one."""

    kind: str
    endpoint: Endpoint
    body: dict[str, str | list[str]]
    at: float
    delivered_at: float = 0.0
    retry: bool = False
    encoding: str = "form"  # or "json"
    secret_in: str | None = None

    @property
    def method(self) -> str:
        return self.endpoint.method

    def url(self) -> str:
        """Path and query string as requested (Plivo's parameters included on GET)."""
        pairs: list[tuple[str, str]] = list(self.endpoint.query)
        if self.endpoint.method == "GET":
            pairs.extend(_pairs(self.body))
        return self.endpoint.path + (f"?{urlencode(pairs)}" if pairs else "")

    def form(self) -> dict[str, list[str]]:
        """The POST body fields (none on GET)."""
        if self.endpoint.method == "GET":
            return {}
        return {k: v if isinstance(v, list) else [v] for k, v in self.body.items()}

    def params(self) -> Params:
        """The parameters as the receiver stores them: the URL's query first, then the body."""
        if not self.endpoint.query:
            return self.body
        params: Params = dict(self.endpoint.query)
        params.update(self.body)  # traffic never reuses a Plivo name in a query string
        return params


def _pairs(body: dict[str, str | list[str]]) -> list[tuple[str, str]]:
    return [(k, x) for k, v in body.items() for x in (v if isinstance(v, list) else [v])]


Record = dict[str, Any]


@dataclass(slots=True)  # not frozen: a frozen init is 6x slower, and every leg makes one
class LegEnd:
    """How one leg ended, as its call record tells it: `answered` None when it never was;
    `status` its CallStatus; `bill` its billed seconds at `rate` per minute."""

    uuid: str
    parent: str | None
    initiated: float
    answered: float | None
    ended: float
    direction: str
    from_number: str
    to_number: str
    code: int
    name: str
    source: str
    status: str
    duration: int
    bill: int
    rate: str
    stir: str
    zone: ZoneInfo
    account: str

    def record(self) -> Record:
        """The record Plivo's Call API lists for this leg."""
        answered = self.answered
        if answered is not None:
            state = "ANSWER"
        else:
            state = UNANSWERED_STATES.get(self.status, "NO_ANSWER")
        return {
            "answer_time": self._time(answered) if answered is not None else None,
            "bill_duration": self.bill, "billed_duration": self.bill,
            "call_direction": self.direction, "call_duration": self.duration,
            "call_state": state, "call_uuid": self.uuid, "conference_uuid": None,
            "end_time": self._time(self.ended), "from_number": self.from_number,
            "hangup_cause_code": self.code, "hangup_cause_name": self.name,
            "hangup_source": self.source, "initiation_time": self._time(self.initiated),
            "parent_call_uuid": self.parent,
            "resource_uri": f"/v1/Account/{self.account}/Call/{self.uuid}/",
            "stir_verification": self.stir, "to_number": self.to_number,
            "total_amount": _cost(self.rate, self.bill), "total_rate": f"{float(self.rate):.5f}",
        }  # fmt: skip

    def _time(self, ts: float) -> str:
        # As the webhooks' times (same zone, same truncated seconds), with the offset.
        return datetime.fromtimestamp(ts, self.zone).isoformat(sep=" ", timespec="seconds")


@dataclass(slots=True)
class Call:
    """One call's webhooks in the order they reach the receiver; the first `head` come before
    the answer XML is read. `legs`: how its legs ended, the A leg's first, then its B legs by
    position."""

    index: int
    call_uuid: str
    direction: str
    started_at: float
    webhooks: list[Webhook]
    head: int
    legs: list[LegEnd] = field(default_factory=list)

    @property
    def records(self) -> list[Record]:
        """The call records Plivo's Call API lists for this call, one per leg that ended."""
        return [leg.record() for leg in self.legs]


def with_phlo(call: Call, seed: int, share: float) -> Call:
    """`call` as it is when a PHLO, not a Dial action URL, reports its Dial's outcome: for a
    `share` of calls (chosen per seed and index), each Dial action webhook becomes the PHLO report
    of the same values, sent when the action was, and its retries go (PHLO does not retry). The
    other calls, and every call when `share` is 0, come back as they are."""
    if share <= 0:
        return call
    # A generator of its own: reporting through PHLO never changes a call, and a larger share
    # reports a superset of the calls a smaller one does.
    rng = random.Random(f"callstatus-phlo:{seed}:{call.index}")
    if rng.random() >= share:
        return call
    keys = PHLO_SPELLINGS[rng.randrange(len(PHLO_SPELLINGS))]
    method, encoding = PHLO_ENCODINGS[rng.randrange(len(PHLO_ENCODINGS))]
    secret_in = PHLO_SECRET_PLACES[rng.randrange(len(PHLO_SECRET_PLACES))]
    # Some users add the caller's numbers too; anything they add is kept.
    extra = ("From", "To") if rng.random() < 0.3 else ()
    hooks: list[Webhook] = []
    for hook in call.webhooks:
        if hook.kind != "dial_action":
            hooks.append(hook)
        elif not hook.retry:
            body: dict[str, str | list[str]] = {
                key: hook.body.get(name, "") for key, name in zip(keys, PHLO_KEYS, strict=True)
            }
            body.update({name: hook.body[name] for name in extra if name in hook.body})
            endpoint = Endpoint(method, PATHS["phlo"])
            hooks.append(
                Webhook(
                    "phlo", endpoint, body, hook.at, hook.delivered_at, False, encoding, secret_in
                )
            )
    return Call(
        call.index, call.call_uuid, call.direction, call.started_at, hooks, call.head, call.legs
    )


@dataclass(slots=True)
class _Leg:
    position: int
    to: str
    uuid: str
    outcome: str
    at: float  # seconds after the dial started: answers (answer) or ends (anything else)


class TrafficModel:
    """Builds calls: `call(index, started_at, dial)`; `starts(n, end, days)` spreads them out."""

    def __init__(
        self, seed: int, config: TrafficConfig | None = None, plivo_timezone: str = "UTC"
    ) -> None:
        self.seed = seed
        self.config = config or TrafficConfig()
        self.zone = ZoneInfo(plivo_timezone)
        c = self.config
        self._our = _cumulative([n.weight for n in c.our_numbers])
        self._dest = _cumulative([d.weight for d in c.destinations])
        self._apps = _cumulative([a.weight for a in c.apps])
        self._width = _cumulative(list(c.dial_width_weights))
        self._leg_fail = _cumulative([w for _, w in c.leg_failures])
        self._out_fail = _cumulative([w for _, w in c.outbound_failures])
        self._agents = {a.number: a for n in c.our_numbers for a in n.team}

    @property
    def max_span_s(self) -> float:
        """An upper bound on the time from a call's start to its last delivery."""
        return self.config.max_talk_s + OUTBOUND_RING_TIMEOUT_S + 120.0

    def rng(self, index: int) -> random.Random:
        return random.Random((self.seed << 40) ^ index)

    def call(self, index: int, started_at: float, dial: DialSpec | None = None) -> Call:
        """The call number `index` of this seed. `dial` is the Dial the server's answer XML
        returned; None means the model's own (its B numbers on the standard paths)."""
        rng = self.rng(index)
        app = self.config.apps[_pick(rng, self._apps)]
        builder = _Builder(self, rng, app, started_at)
        if rng.random() < self.config.inbound_share:
            _inbound(builder, dial)
        else:
            _outbound(builder, dial)
        return builder.finish(index)

    def starts(self, n: int, end: float, days: float, rng: random.Random) -> list[float]:
        """n call start times over the `days` before `end`, shaped by hour and weekday."""
        begin = end - days * 86400.0
        first = math.floor(begin / 3600.0) * 3600.0
        hours = [first + 3600.0 * i for i in range(math.ceil((end - first) / 3600.0))]
        weights = []
        for hour in hours:
            local = datetime.fromtimestamp(hour, self.zone)
            overlap = (min(hour + 3600.0, end) - max(hour, begin)) / 3600.0
            shape = self.config.hours[local.hour] * self.config.weekdays[local.weekday()]
            weights.append(max(overlap, 0.0) * shape)
        picked = rng.choices(hours, cum_weights=list(itertools.accumulate(weights)), k=n)
        times = [
            min(max(h + rng.random() * 3600.0, begin), math.nextafter(end, begin)) for h in picked
        ]
        times.sort()
        return times

    def agent(self, number: str) -> Agent:
        """The profile of a B number: configured, or a stable one derived from the number."""
        known = self._agents.get(number)
        if known is not None:
            return known
        spread = int.from_bytes(number.encode("utf-8")[-4:].rjust(4, b"\0"), "big") % 50
        return Agent(number, 0.30 + spread / 100.0)

    def fmt(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S")


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return min(bisect.bisect(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Builder:
    """Collects one call's webhooks, then orders them as they would reach the receiver."""

    def __init__(self, model: TrafficModel, rng: random.Random, app: App, started_at: float):
        self.model = model
        self.config = model.config
        self.rng = rng
        self.app = app
        self.started_at = started_at
        self.call_uuid = _uuid(rng)
        self.direction = "inbound"
        self.common: dict[str, str | list[str]] = {}
        self.head: list[Webhook] = []
        self.tail: list[Webhook] = []
        self.head_closed = False
        self.a_leg: LegEnd | None = None
        self.b_legs: list[LegEnd] = []

    def endpoint(self, kind: str) -> Endpoint:
        method = "GET" if kind in self.app.get_kinds else "POST"
        return Endpoint(method, PATHS[kind], self.app.query)

    def emit(
        self, kind: str, at: float, body: dict[str, str | list[str]], where: Endpoint | None = None
    ) -> None:
        if self.rng.random() < self.config.extra_param:
            name, value = EXTRA_PARAMS[self.rng.randrange(len(EXTRA_PARAMS))]
            body[name] = value
        hook = Webhook(kind, where or self.endpoint(kind), body, at)
        (self.tail if self.head_closed else self.head).append(hook)

    def close_head(self) -> None:
        """The answer XML is read here: what follows may depend on the Dial it returned."""
        self.head = self._deliver(self.head, out_of_order=False)
        self.head_closed = True

    def finish(self, index: int) -> Call:
        if not self.head_closed:
            self.close_head()
        tail = self._deliver(self.tail, out_of_order=True)
        if self.head and tail:
            # Plivo reads the answer XML before the Dial starts: the tail never overtakes it.
            floor = self.head[-1].delivered_at + 0.001
            for hook in tail:
                hook.delivered_at = max(hook.delivered_at, floor)
        hooks = self.head + tail
        legs = ([self.a_leg] if self.a_leg is not None else []) + self.b_legs
        return Call(
            index, self.call_uuid, self.direction, self.started_at, hooks, len(self.head), legs
        )

    def leg_end(
        self,
        uuid: str,
        parent: str | None,
        ends: tuple[float, float | None, float],
        numbers: tuple[str, str, str],
        hangup: tuple[int, str, str, str],
        billing: tuple[int, int, str],
    ) -> LegEnd:
        """`ends`: initiated, answered (None when never), ended; `numbers`: direction, from,
        to; `hangup`: code, name, source, CallStatus; `billing`: seconds, billed, rate."""
        # A B leg is our own outbound call: there is no caller to verify.
        stir = "Not Applicable"
        if parent is None:
            stir = str(self.common.get("STIRVerification", stir))
        (initiated, answered, ended), (direction, caller, callee) = ends, numbers
        (code, name, source, status), (duration, bill, rate) = hangup, billing
        return LegEnd(
            uuid, parent, initiated, answered, ended, direction, caller, callee, code, name,
            source, status, duration, bill, rate, stir, self.model.zone,
            self.config.parent_auth_id,
        )  # fmt: skip

    def _deliver(self, hooks: list[Webhook], *, out_of_order: bool) -> list[Webhook]:
        rng, config = self.rng, self.config
        delivered: list[Webhook] = []
        previous = -math.inf
        for hook in sorted(hooks, key=lambda h: h.at):
            # Jitter never reorders by itself: out-of-order delivery has its own, small rate.
            hook.delivered_at = max(hook.at + rng.uniform(0.02, 0.4), previous + 0.001)
            previous = hook.delivered_at
            delivered.append(hook)
            if rng.random() < config.retry:
                # Plivo retries after a read timeout: the same request, later, once.
                delay = rng.uniform(0.5, 1.5) if not out_of_order else rng.uniform(1.0, 10.0)
                again = hook.delivered_at + delay
                delivered.append(Webhook(hook.kind, hook.endpoint, hook.body, hook.at, again, True))
        if out_of_order and delivered and rng.random() < config.out_of_order:
            late = delivered[rng.randrange(len(delivered))]
            late.delivered_at += rng.uniform(2.0, 8.0)
        delivered.sort(key=lambda h: h.delivered_at)
        return delivered


def _ending(rng: random.Random, outcome: str) -> tuple[int, str, str, str, str]:
    options = ENDINGS[outcome]
    code, name, cause, source, status = options[
        0 if rng.random() < 0.75 else rng.randrange(len(options))
    ]
    if source == "Call recipient" and rng.random() < 0.15:
        source = "Callee"  # Plivo spells it both ways
    return code, name, cause, source, status


def _billed(seconds: int, increment: int) -> int:
    return 0 if seconds <= 0 else math.ceil(seconds / increment) * increment


def _cost(rate: str, bill_s: int) -> str:
    return f"{float(rate) * bill_s / 60.0:.5f}"


def _talk_s(rng: random.Random, median: float, longest: float) -> float:
    return min(max(rng.lognormvariate(math.log(median), 0.9), 3.0), longest)


def _caller(index: int) -> str:
    """The number of caller `index` of the pool (callers call again)."""
    digits = (index * 2654435761) % 10_000_000
    country = index % 10
    if country < 7:
        number = f"1{201 + index % 780}{digits:07d}"
    elif country < 9:
        number = f"447{digits:07d}{index % 100:02d}"
    else:
        number = f"919{digits:07d}{index % 100:02d}"
    return number


def _caller_name(index: int, number: str, config: TrafficConfig) -> str | None:
    if (index * 7919) % 1000 >= config.caller_name * 1000:
        return None
    if (index * 104729) % 1000 < config.non_ascii_name * 1000:
        return NON_ASCII_NAMES[index % len(NON_ASCII_NAMES)]
    if index % 3 == 0:
        return f"+{number}"  # many carriers put the number where the name goes
    return CALLER_NAMES[index % len(CALLER_NAMES)]


def _session(b: _Builder, at: float) -> str:
    return f"{b.model.fmt(at)}.{b.rng.randrange(1_000_000):06d}"


def _inbound(b: _Builder, dial: DialSpec | None) -> None:
    c, rng = b.config, b.rng
    our = c.our_numbers[_pick(rng, b.model._our)]
    index = rng.randrange(c.caller_pool)
    caller = _caller(index)
    a = b.call_uuid
    b.common = {
        "CallUUID": a, "From": caller, "To": our.number, "Direction": "inbound",
        "ALegUUID": a, "ALegRequestUUID": a, "RequestUUID": a, "BillRate": "0.0085",
        "ParentAuthID": c.parent_auth_id, "SessionStart": _session(b, b.started_at),
    }  # fmt: skip
    name = _caller_name(index, caller, c)
    if name is not None:
        b.common["CallerName"] = name
    if rng.random() < 0.5:
        b.common["STIRVerification"] = STIR[rng.randrange(len(STIR))]
    # An unreachable answer URL (tried twice, 2 s connect timeout each) sends Plivo to fallback.
    fallback = rng.random() < c.fallback
    asked_at = b.started_at + (4.0 if fallback else 0.0)
    body = {**b.common, "CallStatus": "ringing", "Event": "StartApp"}
    b.emit("fallback" if fallback else "answer", asked_at, body)
    b.close_head()
    if rng.random() < c.caller_gone_before_answer:
        _hangup(b, "canceled", asked_at + rng.uniform(0.1, 0.6), None)
        return
    answered_at = asked_at + rng.uniform(0.2, 1.0)
    _dial_then_hangup(b, answered_at, dial or _default_dial(b, our.team))


def _default_dial(b: _Builder, team: tuple[Agent, ...]) -> DialSpec:
    width = min(_pick(b.rng, b.model._width) + 1, len(team))
    targets = tuple(agent.number for agent in b.rng.sample(team, width))
    return DialSpec(targets, b.endpoint("dial_action"), b.endpoint("dial_callback"))


def _outbound(b: _Builder, dial: DialSpec | None) -> None:
    c, rng = b.config, b.rng
    dest = c.destinations[_pick(rng, b.model._dest)]
    our = c.our_numbers[_pick(rng, b.model._our)]
    callee = dest.prefix + str(rng.randrange(10 ** (dest.digits - 1), 10**dest.digits))
    a, request = b.call_uuid, _uuid(rng)
    b.direction = "outbound"
    b.common = {
        "ALegRequestUUID": request, "ALegUUID": a, "CallUUID": a, "Direction": "outbound",
        "From": our.number, "ParentAuthID": c.parent_auth_id, "RequestUUID": request,
        "To": callee, "BillRate": dest.bill_rate, "SessionStart": _session(b, b.started_at),
    }  # fmt: skip
    answered = rng.random() < dest.answer_rate
    outcome = "answer" if answered else c.outbound_failures[_pick(rng, b.model._out_fail)][0]
    ring_at = b.started_at + rng.uniform(1.0, 3.5)
    if outcome in RINGS:
        b.emit("ring", ring_at, {**b.common, "CallStatus": "ringing", "Event": "Ring"})
    if not answered:
        b.close_head()
        _outbound_unanswered(b, outcome, ring_at)
        return
    answered_at = ring_at + rng.uniform(*OUTCOME_DELAY["answer"])
    fallback = rng.random() < c.fallback
    asked_at = answered_at + (4.0 if fallback else 0.0)
    body = {**b.common, "CallStatus": "in-progress", "Event": "StartApp"}
    b.emit("fallback" if fallback else "answer", asked_at, body)
    b.close_head()
    _outbound_answered(b, answered_at, dial)


def _outbound_unanswered(b: _Builder, outcome: str, ring_at: float) -> None:
    if outcome == "timeout":
        end = ring_at + OUTBOUND_RING_TIMEOUT_S
    elif outcome == "canceled":
        outcome, end = "api-canceled", ring_at + b.rng.uniform(*OUTCOME_DELAY["canceled"])
    else:
        end = (ring_at if outcome in RINGS else b.started_at) + b.rng.uniform(
            *OUTCOME_DELAY[outcome]
        )
    _hangup(b, outcome, end, None)


def _outbound_answered(b: _Builder, answered_at: float, dial: DialSpec | None) -> None:
    c, rng = b.config, b.rng
    if rng.random() < c.machine_detection:
        machine = rng.random() < c.machine
        hang_up = rng.random() < c.machine_hangup
        detected_at = answered_at + rng.uniform(1.5, 4.0)
        keys = ("ALegRequestUUID", "ALegUUID", "CallUUID", "Direction", "From", "RequestUUID", "To")
        body: dict[str, str | list[str]] = {k: b.common[k] for k in keys}
        body.update(
            Event="MachineDetection",
            Machine="true" if machine else "false",
            IfMachine="hangup" if hang_up else "continue",
        )
        b.emit("machine_detection", detected_at, body)
        if machine:
            if hang_up:
                _hangup(b, "machine", detected_at + 0.2, answered_at)
            else:  # the message plays to the voicemail, then the XML ends
                _hangup(b, "end-of-xml", detected_at + rng.uniform(10.0, 30.0), answered_at)
            return
    if dial is not None:
        _dial_then_hangup(b, answered_at, dial)
        return
    end = answered_at + _talk_s(rng, c.outbound_talk_median_s, c.max_talk_s)
    if rng.random() < c.callee_hangs_up:
        _hangup(b, "normal", end, answered_at, source="Call recipient")
    else:
        _hangup(b, "end-of-xml", end, answered_at)


def _hangup(
    b: _Builder, outcome: str, end: float, answered_at: float | None, source: str | None = None
) -> None:
    code, name, cause, usual_source, status = _ending(b.rng, outcome)
    duration = max(round(end - answered_at), 1) if answered_at is not None else 0
    bill = _billed(duration, b.config.bill_increment_s)
    rate = str(b.common["BillRate"])
    body = {
        **b.common, "CallStatus": status, "Event": "Hangup", "HangupCause": cause,
        "HangupCauseCode": str(code), "HangupCauseName": name,
        "HangupSource": source or usual_source, "Duration": str(duration),
        "BillDuration": str(bill), "StartTime": b.model.fmt(b.started_at),
        "AnswerTime": b.model.fmt(answered_at) if answered_at is not None else "",
        "EndTime": b.model.fmt(end), "TotalCost": _cost(rate, bill),
    }  # fmt: skip
    b.emit("hangup", end, body)
    b.a_leg = b.leg_end(
        b.call_uuid,
        None,
        (b.started_at, answered_at, end),
        (b.direction, str(b.common["From"]), str(b.common["To"])),
        (code, name, source or usual_source, status),
        (duration, bill, rate),
    )


def _dial_then_hangup(b: _Builder, answered_at: float, spec: DialSpec) -> None:
    """The answer XML speaks a greeting, dials every target at once, then the call ends."""
    greeting = b.rng.uniform(*GREETING_S)
    if b.rng.random() < b.config.caller_gone_in_greeting or not spec.targets:
        _hangup(b, "normal", answered_at + b.rng.uniform(0.5, greeting), answered_at)
        return
    end, outcome, source = _dial(b, spec, answered_at + greeting)
    _hangup(b, outcome, end, answered_at, source=source)


def _plan_leg(b: _Builder, position: int, target: str, timeout: float) -> _Leg:
    agent = b.model.agent(target)
    if agent.always_busy:
        outcome = "busy"
    elif b.rng.random() < agent.answer_rate:
        outcome = "answer"
    else:
        outcome = b.config.leg_failures[_pick(b.rng, b.model._leg_fail)][0]
    at = b.rng.uniform(*OUTCOME_DELAY[outcome])
    if outcome in ("answer", "no-answer") and at >= timeout:
        outcome, at = "timeout", timeout
    return _Leg(position, target, _uuid(b.rng), outcome, at)


def _dial(b: _Builder, spec: DialSpec, start: float) -> tuple[float, str, str | None]:
    """Emit the Dial's callbacks and action; return when and how the A leg then ends."""
    c, rng = b.config, b.rng
    timeout = float(spec.timeout_s or c.dial_timeout_s)
    legs = [_plan_leg(b, pos, target, timeout) for pos, target in enumerate(spec.targets, 1)]
    patience = rng.uniform(4.0, 40.0) if rng.random() < c.caller_gone_while_ringing else math.inf
    answering = [leg for leg in legs if leg.outcome == "answer" and leg.at < patience]
    winner = min(answering, key=lambda leg: leg.at) if answering else None
    if winner is not None:
        return _dial_answered(b, spec, start, legs, winner)
    last = max(leg.at for leg in legs)
    canceled = patience < last
    cut = patience if canceled else last
    for leg in legs:
        if canceled and leg.at >= cut:
            leg.outcome, leg.at = "canceled", cut
        _leg_hangup(b, spec, start, leg, 0.0)
    last_leg = max(legs, key=lambda leg: (leg.at, leg.position))
    status = "cancel" if canceled else _dial_status(legs)
    cause = _ending(rng, last_leg.outcome)[2]
    ring = any(leg.outcome in RINGS for leg in legs)
    a_status = "completed" if canceled else "in-progress"
    _dial_action(b, spec, start + cut + 0.05, status, cause, ring, "", a_status)
    if canceled:
        return start + cut, "normal", "Caller"
    return start + cut + rng.uniform(0.1, 0.5), "end-of-xml", None


def _dial_answered(
    b: _Builder, spec: DialSpec, start: float, legs: list[_Leg], winner: _Leg
) -> tuple[float, str, str | None]:
    c, rng = b.config, b.rng
    for leg in legs:
        if leg is not winner and leg.at >= winner.at:
            # Still ringing when the winner picked up: Plivo hangs it up at once.
            leg.outcome, leg.at = "lost-race", winner.at + rng.uniform(0.01, 0.2)
    talk = _talk_s(rng, c.talk_median_s, c.max_talk_s)
    agent_ends = rng.random() < c.agent_hangs_up
    if spec.callback is not None:
        answer = _callback(b, spec, winner, "answer")
        b.emit("dial_callback", start + winner.at, answer, spec.callback)
    for leg in legs:
        source = ("Call recipient" if agent_ends else "Caller") if leg is winner else None
        _leg_hangup(b, spec, start, leg, talk if leg is winner else 0.0, source)
    end = start + winner.at + talk
    a_status = "in-progress" if agent_ends else "completed"
    _dial_action(b, spec, end + 0.1, "completed", "NORMAL_CLEARING", True, winner.uuid, a_status)
    if agent_ends:  # the action XML is empty, so the call ends with the instructions
        return end + rng.uniform(0.2, 0.6), "end-of-xml", None
    return end + 0.02, "normal", "Caller"


def _dial_status(legs: list[_Leg]) -> str:
    outcomes = {leg.outcome for leg in legs}
    for outcome, status in DIAL_STATUS_ORDER:
        if outcome in outcomes:
            return status
    return "failed"


def _callback(b: _Builder, spec: DialSpec, leg: _Leg, action: str) -> dict[str, str | list[str]]:
    common = b.common
    return {
        "CallStatus": "in-progress", "CallUUID": b.call_uuid, "DialALegUUID": b.call_uuid,
        "DialAction": action, "DialBLegBillRate": b.model.agent(leg.to).bill_rate,
        "DialBLegFrom": spec.caller_id or str(common["From"]),
        "DialBLegPosition": str(leg.position), "DialBLegStatus": action,
        "DialBLegTo": leg.to, "DialBLegUUID": leg.uuid, "Direction": b.direction,
        "Event": "DialAnswer" if action == "answer" else "DialHangup",
        "From": common["From"], "To": common["To"],
    }  # fmt: skip


def _leg_hangup(
    b: _Builder, spec: DialSpec, start: float, leg: _Leg, talk: float, source: str | None = None
) -> None:
    """The DialAction=hangup callback of one B leg (answered legs talked for `talk` s), and
    its call record, which exists with or without a callbackUrl."""
    outcome = "normal" if leg.outcome == "answer" else leg.outcome
    code, name, cause, usual_source, status = _ending(b.rng, outcome)
    answered = leg.outcome == "answer"
    duration = max(round(talk), 1) if answered else 0
    bill = _billed(duration, b.config.bill_increment_s)
    b.b_legs.append(
        b.leg_end(
            leg.uuid,
            b.call_uuid,
            (start, start + leg.at if answered else None, start + leg.at + talk),
            ("outbound", spec.caller_id or str(b.common["From"]), leg.to),
            (code, name, source or usual_source, status),
            (duration, bill, b.model.agent(leg.to).bill_rate),
        )
    )
    if spec.callback is None:
        return
    body = _callback(b, spec, leg, "hangup")
    body.update(
        DialBLegDuration=str(duration),
        DialBLegBillDuration=str(bill),
        DialBLegHangupCause=cause,
        DialBLegHangupCauseCode=str(code),
        DialBLegHangupCauseName=name,
        DialBLegHangupSource=source or usual_source,
        DialBLegTotalCost=_cost(str(body["DialBLegBillRate"]), bill),
    )
    b.emit("dial_callback", start + leg.at + talk + 0.05, body, spec.callback)


def _dial_action(
    b: _Builder,
    spec: DialSpec,
    at: float,
    status: str,
    cause: str,
    ring: bool,
    b_leg: str,
    a_status: str,
) -> None:
    if spec.action is None:
        return
    common = b.common
    body: dict[str, str | list[str]] = {
        "CallStatus": a_status, "CallUUID": b.call_uuid, "DialALegUUID": b.call_uuid,
        "DialBLegUUID": b_leg, "DialHangupCause": cause,
        "DialRingStatus": "true" if ring else "false", "DialStatus": status,
        "Direction": b.direction, "From": common["From"],
        "ParentAuthID": common["ParentAuthID"], "To": common["To"],
    }  # fmt: skip
    b.emit("dial_action", at, body, spec.action)
