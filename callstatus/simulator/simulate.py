"""`callstatus simulate` and `callstatus demo`: model traffic over HTTP, signed as Plivo signs.

Each call sends its head (ring, answer or fallback), reads the XML the server answered with, and
when that XML has a <Dial>, rebuilds the call around its targets and URLs before sending the rest;
without one, the model's own B numbers and the standard paths are used. A run may lose webhooks
on purpose (whole calls, or A-leg hangups), as an unreachable server would, and write every
call's Plivo call records, so reconciliation has something to find. A share of calls may report
their Dial's outcome through a PHLO (`Plan.phlo`): those reports carry PHLO_SECRET when the
settings have one, and are signed like every webhook otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import secrets
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from callstatus.core.plivo import PHLO_SECRET_HEADER, PHLO_SECRET_PARAM
from callstatus.core.progress import Progress
from callstatus.core.settings import Settings
from callstatus.receiver.phlo import signature_fields
from callstatus.receiver.signatures import sign
from callstatus.simulator.seed import load_config, open_database, seed_database
from callstatus.simulator.traffic import (
    Call,
    DialSpec,
    Endpoint,
    Record,
    TrafficModel,
    Webhook,
    with_phlo,
)

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
# What a call loses on purpose: every webhook, or its A leg's hangup webhook.
LOSE_CALL = "call"
LOSE_HANGUP = "hangup"
DEMO_HISTORY_CALLS = 2_000
# Live demo traffic loses this share of whole calls and of hangups on purpose, so that
# reconciliation against the demo's local Call API has something to find.
DEMO_LOSE_CALLS = 0.02
DEMO_LOSE_HANGUPS = 0.03
DEMO_HISTORY_DAYS = 7.0
MAX_ACTIVE_CALLS = 5_000


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go (`send_base`) and the base URL Plivo would have signed (`sign_base`,
    PUBLIC_BASE_URL when the server is behind a proxy); `phlo_secret` goes with PHLO reports."""

    send_base: str
    sign_base: str
    token: str | None
    phlo_secret: str | None = None


@dataclass(slots=True)
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)  # webhooks lost on purpose, by kind
    lost: Counter[str] = field(default_factory=Counter)  # calls by what they lost
    first_error: str | None = None
    calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed


class Sender:
    """Signs and sends webhooks, at most `concurrency` requests in flight."""

    def __init__(
        self, client: httpx.AsyncClient, target: Target, concurrency: int, tally: Tally
    ) -> None:
        self.client = client
        self.target = target
        self.tally = tally
        self._slots = asyncio.Semaphore(concurrency)

    async def send(self, hook: Webhook) -> httpx.Response | None:
        tail = hook.url()
        headers = {"User-Agent": "PlivoHTTP/callstatus-simulate"}
        content = None
        fields = hook.form()
        if hook.method == "POST" and hook.encoding == "json":
            content = json.dumps(hook.body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = JSON_TYPE
            fields = signature_fields(hook.body)
        elif hook.method == "POST":
            content = urlencode(_pairs(hook.body)).encode("utf-8")
            headers["Content-Type"] = FORM_TYPE
        secret = self.target.phlo_secret
        if hook.secret_in is not None and secret:
            tail = _with_secret(hook.secret_in, secret, tail, headers)
        elif self.target.token:
            nonce = secrets.token_hex(10)  # fresh per request, as Plivo does (retries included)
            url = self.target.sign_base + tail
            headers["X-Plivo-Signature-V3"] = sign(
                hook.method, url, fields, nonce, self.target.token
            )
            headers["X-Plivo-Signature-V3-Nonce"] = nonce
        self.tally.sent[hook.kind] += 1
        async with self._slots:
            try:
                response = await self.client.request(
                    hook.method, self.target.send_base + tail, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                self.tally.failed[hook.kind] += 1
                self.tally.first_error = self.tally.first_error or f"{type(exc).__name__}: {exc}"
                return None
        if response.status_code == 200:
            self.tally.accepted[hook.kind] += 1
        else:
            self.tally.refused[hook.kind] += 1
            self.tally.refusals[f"{response.status_code} {_error_code(response)}"] += 1
        return response


def _pairs(body: dict[str, str | list[str]]) -> list[tuple[str, str]]:
    return [(k, x) for k, v in body.items() for x in (v if isinstance(v, list) else [v])]


def _with_secret(place: str, secret: str, tail: str, headers: dict[str, str]) -> str:
    """Put PHLO_SECRET where a PHLO's HTTP Request component was told to (a header, a Bearer
    token or a query parameter); return the URL's path and query."""
    if place == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
    elif place == "header":
        headers[PHLO_SECRET_HEADER] = secret
    else:
        tail += ("&" if "?" in tail else "?") + urlencode({PHLO_SECRET_PARAM: secret})
    return tail


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "error"


def dial_from_xml(text: str) -> DialSpec | None:
    """The first <Dial> of a Plivo XML reply: its Number/User targets, action and callbackUrl."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    dial = root.find(".//Dial")
    if dial is None:
        return None
    targets = tuple(
        (child.text or "").strip()
        for child in dial
        if child.tag in ("Number", "User") and (child.text or "").strip()
    )
    timeout = dial.get("timeout")
    return DialSpec(
        targets=targets,
        action=_endpoint(dial.get("action"), dial.get("method")),
        callback=_endpoint(dial.get("callbackUrl"), dial.get("callbackMethod")),
        caller_id=dial.get("callerId") or None,
        timeout_s=int(timeout) if timeout and timeout.isdigit() else None,
    )


def _endpoint(url: str | None, method: str | None) -> Endpoint | None:
    if not url:
        return None
    parts = urlsplit(url)
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    # Plivo calls the URL exactly; we send it to --url and sign it with the public base. Its
    # fragment (Plivo's retry settings, "#rc=3&rp=5xx,ct,rt") is dropped here, as Plivo drops
    # it: never sent over HTTP, never part of what is signed.
    return Endpoint((method or "POST").upper(), parts.path or "/", query)


async def _pace(hook: Webhook, call: Call, speed: float, anchor: float) -> None:
    if speed <= 0:
        return
    due = anchor + (hook.delivered_at - call.started_at) / speed
    delay = due - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass(slots=True)
class Simulated:
    """One call as a run played it: `call` (rebuilt around the server's Dial when its answer
    XML had one; its `records` are Plivo's for it), what it lost on purpose (None, LOSE_CALL or
    LOSE_HANGUP) and the webhooks it sent (or tried to: a failed request counts), in order."""

    call: Call
    loss: str | None
    sent: list[Webhook]


def loss_of(seed: int, index: int, lose_calls: float, lose_hangups: float) -> str | None:
    """What call `index` of `seed` loses: LOSE_CALL for a share `lose_calls` of calls,
    LOSE_HANGUP for another `lose_hangups`, None for the rest."""
    if lose_calls <= 0 and lose_hangups <= 0:
        return None
    # A generator of its own, never the call's: losing webhooks never changes a call, and a
    # larger share loses a superset of the calls a smaller one loses.
    draw = random.Random(f"callstatus-lose:{seed}:{index}").random()
    if draw < lose_calls:
        return LOSE_CALL
    if draw < lose_calls + lose_hangups:
        return LOSE_HANGUP
    return None


async def run_call(
    model: TrafficModel,
    index: int,
    started_at: float,
    sender: Sender,
    speed: float,
    loss: str | None = None,
    phlo: float = 0.0,
) -> Simulated:
    """Send one call's webhooks in delivery order, following the server's answer XML, less
    what `loss` says the call loses; a share `phlo` of calls reports its Dial through a PHLO."""
    anchor = asyncio.get_running_loop().time()
    call = with_phlo(model.call(index, started_at), model.seed, phlo)
    sent: list[Webhook] = []
    if loss == LOSE_CALL:  # no answer XML comes back, so the model's own Dial is the call's
        sender.tally.withheld.update(hook.kind for hook in call.webhooks)
    else:
        xml: str | None = None
        for hook in call.webhooks[: call.head]:
            await _pace(hook, call, speed, anchor)
            response = await sender.send(hook)
            sent.append(hook)
            if hook.kind in ("answer", "fallback") and response is not None:
                xml = response.text if response.status_code == 200 else xml
        spec = dial_from_xml(xml) if xml else None
        if spec is not None:
            call = with_phlo(model.call(index, started_at, spec), model.seed, phlo)
        for hook in call.webhooks[call.head :]:
            if loss == LOSE_HANGUP and hook.kind == "hangup":
                sender.tally.withheld[hook.kind] += 1  # retries of it too: none reaches us
                continue
            await _pace(hook, call, speed, anchor)
            await sender.send(hook)
            sent.append(hook)
    if loss is not None:
        sender.tally.lost[loss] += 1
    sender.tally.calls += 1
    return Simulated(call, loss, sent)


@dataclass(slots=True)
class Plan:
    """What to send: `calls` calls (None: until stopped) at `rate` per second (<= 0: at once),
    call time running `speed` times real time (0: each call's webhooks back to back)."""

    calls: int | None
    rate: float
    speed: float = 0.0
    concurrency: int = 32
    starts: Sequence[float] | None = None  # call start times; default: when each is launched
    first_index: int = 0
    lose_calls: float = 0.0  # share of calls none of whose webhooks is sent
    lose_hangups: float = 0.0  # share of (other) calls whose A-leg hangup webhook is not sent
    phlo: float = 0.0  # share of calls whose Dial's outcome a PHLO reports (no Dial action)


async def simulate(
    target: Target,
    model: TrafficModel,
    plan: Plan,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    played: Callable[[Simulated], None] | None = None,
) -> Tally:
    """Play `plan` against `target`; `played` is handed each call once it is done."""
    tally = Tally()
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    async with httpx.AsyncClient(timeout=httpx.Timeout(55.0, connect=2.0), limits=limits) as client:
        sender = Sender(client, target, plan.concurrency, tally)
        active: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        numbers = itertools.count() if plan.calls is None else iter(range(plan.calls))
        for n in numbers:
            if stop is not None and stop.is_set():
                break
            if plan.rate > 0:
                await asyncio.sleep(max(0.0, began + n / plan.rate - loop.time()))
            started_at = plan.starts[n] if plan.starts is not None else time.time()
            index = plan.first_index + n
            loss = loss_of(model.seed, index, plan.lose_calls, plan.lose_hangups)
            playing = run_call(model, index, started_at, sender, plan.speed, loss, plan.phlo)
            task = asyncio.create_task(_play(playing, played))
            active.add(task)
            task.add_done_callback(lambda done: _finished(done, active, progress))
            while len(active) >= max(MAX_ACTIVE_CALLS, plan.concurrency):
                await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
        await _drain(active, stop)
    return tally


async def _play(
    playing: Coroutine[Any, Any, Simulated], played: Callable[[Simulated], None] | None
) -> None:
    simulated = await playing
    if played is not None:
        played(simulated)


def _finished(
    task: asyncio.Task[None], active: set[asyncio.Task[None]], progress: Progress | None
) -> None:
    active.discard(task)
    if progress is not None:
        progress.advance()


async def _drain(active: set[asyncio.Task[None]], stop: threading.Event | None) -> None:
    while active:
        if stop is not None and stop.is_set():
            for task in active:
                task.cancel()
            await asyncio.gather(*active, return_exceptions=True)
            return
        await asyncio.wait(active, timeout=0.5)


def reachable(url: str) -> str | None:
    """None when the server answers /healthz; otherwise why not."""
    try:
        httpx.get(f"{url}/healthz", timeout=3.0)
    except httpx.HTTPError:
        return f"cannot reach {url}: is `callstatus serve` running?"
    return None


def make_target(url: str, settings: Settings, public_url: str | None = None) -> Target:
    send_base = url.rstrip("/")
    sign_base = (public_url or settings.public_base_url or send_base).rstrip("/")
    token = settings.auth_tokens[0] if settings.auth_tokens else None
    return Target(send_base, sign_base, token, settings.phlo_secret)


def summary(tally: Tally, target: Target, elapsed: float) -> str:
    sent = sum(tally.sent.values())
    lines = [
        f"{tally.calls:,} calls, {sent:,} webhooks sent to {target.send_base} in {elapsed:.1f} s: "
        f"{sum(tally.accepted.values()):,} accepted, {sum(tally.refused.values()):,} refused, "
        f"{sum(tally.failed.values()):,} failed"
        + ("" if target.token else " (unsigned: PLIVO_AUTH_TOKEN is not set)"),
        f"  {'kind':<18}{'sent':>8}{'accepted':>10}{'refused':>9}{'failed':>8}",
    ]
    for kind in sorted(tally.sent):
        lines.append(
            f"  {kind:<18}{tally.sent[kind]:>8,}{tally.accepted[kind]:>10,}"
            f"{tally.refused[kind]:>9,}{tally.failed[kind]:>8,}"
        )
    for reason, count in tally.refusals.most_common():
        lines.append(f"  refused {count:,} x {reason}")
    if tally.lost:
        lines.append(
            f"  lost on purpose: {tally.lost[LOSE_CALL]:,} calls whole, "
            f"{tally.lost[LOSE_HANGUP]:,} hangups ({sum(tally.withheld.values()):,} webhooks "
            "never sent)"
        )
    if tally.first_error:
        lines.append(f"  first failure: {tally.first_error}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """What `callstatus simulate` was asked for."""

    url: str = "http://127.0.0.1:8000"
    calls: int = 100
    rate: float = 5.0  # new calls per second
    speed: float = 0.0  # call-time speed-up; 0 sends each call's events back to back
    seed: int | None = None  # None: a random one
    concurrency: int = 32  # requests in flight
    public_url: str | None = None  # the base URL signed (default: PUBLIC_BASE_URL, else url)
    traffic: Path | None = None  # JSON file overriding the traffic model's settings
    lose_calls: float = 0.0  # share of calls whose webhooks are never sent
    lose_hangups: float = 0.0  # share of calls whose A-leg hangup webhook is never sent
    records_out: Path | None = None  # every call's Plivo call records, one JSON object a line
    phlo: float = 0.0  # share of calls whose Dial's outcome a PHLO reports to /plivo/phlo


def _losses_problem(options: SimulateOptions) -> str | None:
    shares = (options.lose_calls, options.lose_hangups)
    if not all(0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0:
        return "--lose-calls and --lose-hangups are shares from 0 to 1, together at most 1"
    if not 0.0 <= options.phlo <= 1.0:
        return "--phlo is a share from 0 to 1"
    return None


def run_simulate(
    options: SimulateOptions, settings: Settings, played: list[Simulated] | None = None
) -> int:
    """`callstatus simulate`; `played`, when given, receives every call as the run played it,
    in call order."""
    problem = _losses_problem(options)
    if problem is not None:
        print(f"callstatus simulate: {problem}", file=sys.stderr)
        return 2
    target = make_target(options.url, settings, options.public_url)
    problem = reachable(target.send_base)
    if problem is not None:
        print(f"callstatus simulate: {problem}", file=sys.stderr)
        return 1
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    model = TrafficModel(seed, load_config(options.traffic), settings.plivo_timezone)
    plan = Plan(
        options.calls,
        options.rate,
        options.speed,
        options.concurrency,
        lose_calls=options.lose_calls,
        lose_hangups=options.lose_hangups,
        phlo=options.phlo,
    )
    keep = played is not None or options.records_out is not None
    calls: list[Simulated] = []
    progress = Progress(options.calls, "simulating calls")
    began = time.monotonic()
    tally = asyncio.run(
        simulate(target, model, plan, progress, played=calls.append if keep else None)
    )
    progress.close()
    calls.sort(key=lambda simulated: simulated.call.index)
    print(summary(tally, target, time.monotonic() - began))
    if options.records_out is not None:
        count = write_records(options.records_out, calls)
        print(f"wrote {count:,} call records of {len(calls):,} calls to {options.records_out}")
    if played is not None:
        played.extend(calls)
    _complain(tally, target)
    return 0 if tally.ok else 1


def _complain(tally: Tally, target: Target) -> None:
    forbidden = any(r.startswith("403") for r in tally.refusals)
    if forbidden and tally.refused["phlo"]:
        print(
            "callstatus simulate: the server refused PHLO reports: run simulate with the "
            "server's PHLO_SECRET (or its PLIVO_AUTH_TOKEN, to sign them)",
            file=sys.stderr,
        )
    if forbidden and any(n > 0 for kind, n in tally.refused.items() if kind != "phlo"):
        print(
            "callstatus simulate: the server refused signatures: run simulate with the server's "
            "PLIVO_AUTH_TOKEN (and PUBLIC_BASE_URL, or --public-url, if it has one)",
            file=sys.stderr,
        )
    if sum(tally.failed.values()) and not sum(tally.accepted.values()):
        print(
            f"callstatus simulate: {reachable(target.send_base) or 'requests failed'}",
            file=sys.stderr,
        )


def write_records(path: Path, calls: Sequence[Simulated]) -> int:
    """Every record of these calls (sent or lost), one JSON object a line; how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for simulated in calls:
            for record in simulated.call.records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return count


def simulated_calls(options: SimulateOptions, settings: Settings) -> tuple[int, list[Simulated]]:
    """Run `callstatus simulate` with these options: its exit status and every call as played,
    in call order (webhooks as sent, losses, records)."""
    played: list[Simulated] = []
    status = run_simulate(options, settings, played)
    return status, played


def backfill(settings: Settings, seed: int) -> int:
    """Seed a few days of calls into an empty database, so the dashboard has history."""
    db = open_database(settings.db)
    try:
        row = db.cursor().execute("SELECT count(*) FROM webhook_events").fetchone()
        if row is not None and row[0]:
            return 0
        model = TrafficModel(seed, plivo_timezone=settings.plivo_timezone)
        return seed_database(db, model, settings, DEMO_HISTORY_CALLS, DEMO_HISTORY_DAYS).calls
    finally:
        db.close()


def demo_traffic(
    url: str,
    settings: Settings,
    rate: float,
    seed: int,
    stop: threading.Event,
    records: Callable[[list[Record]], None] | None = None,
) -> None:
    """Live traffic for `callstatus demo`, from when the server at `url` answers until `stop`.
    With `records`, a few calls lose webhooks on purpose and every finished call's Plivo call
    records are handed to it (the demo's local Call API serves them)."""
    deadline = time.monotonic() + 120.0
    while reachable(url) is not None:
        if stop.is_set() or time.monotonic() > deadline:
            return
        time.sleep(0.5)
    model = TrafficModel(seed, plivo_timezone=settings.plivo_timezone)
    # Indexes past the history's, so live calls never repeat a seeded call's UUIDs.
    plan = Plan(None, rate, speed=1.0, concurrency=16, first_index=DEMO_HISTORY_CALLS)
    played: Callable[[Simulated], None] | None = None
    if records is not None:
        plan = replace(plan, lose_calls=DEMO_LOSE_CALLS, lose_hangups=DEMO_LOSE_HANGUPS)
        deliver = records

        def played(done: Simulated) -> None:
            deliver(done.call.records)

    try:
        asyncio.run(simulate(make_target(url, settings), model, plan, stop=stop, played=played))
    except Exception as exc:  # the demo's server keeps running without live traffic
        print(f"callstatus demo: simulated traffic stopped: {exc}", file=sys.stderr)
