"""Reading the rules file: channels, rules and reports from TOML, checked, with the line at fault.

`METRICS` is the file's vocabulary: each metric's unit and which keys of a rule apply to it
(callstatus/alerts/metrics.py measures them, and re-exports it).

tomllib gives no line numbers, so the file's text is scanned for where each table and key
starts (`_Lines`): every mistake is reported as one line naming the file, the line, the
channel, rule or report, and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callstatus.alerts.model import AlertsConfig, Channel, ChannelType, Report, Rule, Schedule
from callstatus.core.numbers import NumberMasker
from callstatus.core.settings import Settings, SettingsError

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DURATION_HINT = "such as 30s, 15m, 2h, 1d or 1h30m"
SCHEDULE_HINT = 'such as "day 08:00 Europe/Berlin", "hour", "week mon 08:00 UTC" or "30m"'

# Bounds that keep a rule meaningful and its queries cheap enough to run every minute.
MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=7)
MAX_FOR = timedelta(days=7)
MAX_BASELINE_DAYS = 28
MIN_INTERVAL = timedelta(minutes=1)
MAX_RANGE = timedelta(days=92)

CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "slack": ("url",),
    "email": ("to",),
    "webhook": ("url", "secret"),
}
RULE_KEYS = (
    "name",
    "metric",
    "window",
    "below",
    "above",
    "drop",
    "baseline",
    "min_volume",
    "for",
    "cause",
    "direction",
    "numbers",
    "destinations",
    "channels",
)
REPORT_KEYS = ("name", "every", "range", "channels")
SECTIONS = ("channels", "rules", "reports")


@dataclass(frozen=True)
class Metric:
    """A metric's unit, what `min_volume` counts for it, and which keys of a rule apply."""

    name: str
    unit: str  # "fraction" (0 to 1), "seconds", "minutes", or what it counts
    definition: str
    volume: str | None  # what min_volume counts; None: the metric has no volume
    windowed: bool = True  # measured over the rule's window
    sliced: bool = True  # direction, numbers and destinations apply
    baseline: bool = True  # the drop/baseline form applies
    cause: bool = False  # needs `cause`


def _metrics(*metrics: Metric) -> dict[str, Metric]:
    return {metric.name: metric for metric in metrics}


_RECEIVER = {"sliced": False, "baseline": False}
METRICS = _metrics(
    Metric("calls", "calls", "calls that started in the window", "calls"),
    Metric(
        "call_answer_rate",
        "fraction",
        "answered calls / calls that ended, of the calls that started in the window",
        "calls that ended",
    ),
    Metric(
        "dial_answer_rate",
        "fraction",
        "Dials with DialStatus completed / all Dials, of the Dial actions received in the window",
        "Dials",
    ),
    Metric(
        "b_leg_answer_rate",
        "fraction",
        "answered B legs / B legs, of the B legs answered or ended in the window",
        "B legs",
    ),
    Metric(
        "acd_seconds",
        "seconds",
        "mean duration of the answered calls that started in the window",
        "answered calls",
    ),
    Metric(
        "busy_share",
        "fraction",
        "calls with outcome busy / calls that ended (started in the window)",
        "calls that ended",
    ),
    Metric(
        "no_answer_share",
        "fraction",
        "calls with outcome no-answer / calls that ended (started in the window)",
        "calls that ended",
    ),
    Metric(
        "failed_share",
        "fraction",
        "calls with outcome failed / calls that ended (started in the window)",
        "calls that ended",
    ),
    Metric(
        "hangup_cause_share",
        "fraction",
        "calls that ended with Plivo hangup code `cause` / calls that ended (started in the "
        "window)",
        "calls that ended",
        cause=True,
    ),
    Metric(
        "b_leg_hangup_cause_share",
        "fraction",
        "B legs that ended with Plivo hangup code `cause` / B legs that ended (in the window)",
        "B legs that ended",
        cause=True,
    ),
    Metric(
        "missed_call_share",
        "fraction",
        "calls known only from Plivo's call records (no webhook arrived) / all calls that "
        "started in the window; needs reconciliation",
        "calls",
        sliced=False,
    ),
    Metric(
        "minutes_since_last_webhook",
        "minutes",
        "minutes since the newest webhook was received (call records left out)",
        None,
        windowed=False,
        **_RECEIVER,
    ),
    Metric(
        "rejected_webhooks",
        "requests",
        "requests to the webhook paths refused in the window (bad signature, wrong method...)",
        None,
        **_RECEIVER,
    ),
    Metric(
        "spool_depth",
        "webhooks",
        "webhooks waiting in the spool for the database to take them",
        None,
        windowed=False,
        **_RECEIVER,
    ),
)


class RulesError(SettingsError):
    """A rules file callstatus refuses: its message names the file, the line, the channel, rule
    or report, and the key at fault."""

    def __init__(
        self,
        path: Path,
        problem: str,
        line: int | None = None,
        where: str | None = None,
        key: str | None = None,
    ) -> None:
        self.path, self.problem, self.line, self.where, self.key = path, problem, line, where, key
        place = f"{path}, line {line}" if line is not None else str(path)
        parts = [place]
        if where:
            parts.append(where)
        if key:
            parts.append(f"key {key!r}")
        super().__init__(": ".join(parts) + ": " + problem)


@dataclass
class _Lines:
    """Where tables and keys start in the file's text: ('channels', name), ('rules', index),
    ('reports', index) or () for the top level -> its line, and its keys' lines."""

    tables: dict[tuple[object, ...], int] = field(default_factory=dict)
    keys: dict[tuple[object, ...], dict[str, int]] = field(default_factory=dict)

    def of(self, table: tuple[object, ...], key: str | None = None) -> int | None:
        if key is not None and key in self.keys.get(table, {}):
            return self.keys[table][key]
        if table == () and key is not None:  # a top-level key written as a [table] header
            found = self.tables.get((key,), self.tables.get((key, 0)))
            if found is not None:
                return found
        return self.tables.get(table)


_KEY_LINE = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""")


def _scan(text: str) -> _Lines:
    """Find each table header and each key's first line (multi-line strings are not special
    cased: a line inside one that looks like a key only ever adds a wrong guess, never hides a
    right one before it)."""
    lines = _Lines()
    current: tuple[object, ...] = ()
    counts = {"rules": -1, "reports": -1}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("[["):
            name = stripped[2:].split("]]", 1)[0].strip()
            if name in counts:
                counts[name] += 1
                current = (name, counts[name])
            else:
                current = (name,)
            lines.tables.setdefault(current, number)
            continue
        if stripped.startswith("["):
            current = _header(stripped)
            lines.tables.setdefault(current, number)
            continue
        match = _KEY_LINE.match(raw)
        if match:
            key = next(group for group in match.groups() if group is not None)
            lines.keys.setdefault(current, {}).setdefault(key, number)
            # `[channels]` with `name = { ... }` inline: the channel starts on this line.
            if current == ("channels",):
                lines.tables.setdefault(("channels", key), number)
    return lines


def _header(line: str) -> tuple[object, ...]:
    """The path of a `[table]` header line, parsed by tomllib itself (quoted names and all)."""
    try:
        parsed: Any = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return ("?",)
    path: list[object] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key = next(iter(parsed))
        path.append(key)
        parsed = parsed[key]
    return tuple(path)


def parse_duration(text: str) -> timedelta:
    """ "30s", "15m", "2h", "1d", "1w", "1h30m" -> timedelta; ValueError otherwise."""
    compact = text.replace(" ", "").lower()
    if not compact or not re.fullmatch(f"(?:{_DURATION.pattern})+", compact):
        raise ValueError(f"{text!r} is not a duration ({DURATION_HINT})")
    return timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(compact)))


def parse_schedule(text: str) -> Schedule:
    """ "day 08:00 Europe/Berlin", "hour", "week mon 08:00 UTC", "30m" -> Schedule (the zone
    defaults to UTC); ValueError otherwise."""
    words = text.split()
    if not words:
        raise ValueError(f"{text!r} is not a schedule ({SCHEDULE_HINT})")
    unit = words[0].lower()
    if unit == "hour" and len(words) == 1:
        return Schedule(text=text, unit="hour")
    if unit == "day" and len(words) in (2, 3):
        at = _clock(words[1], text)
        return Schedule(text=text, unit="day", at=at, zone=_zone(words[2:], text))
    if unit == "week" and len(words) in (3, 4):
        day = words[1].lower()
        names = WEEKDAYS if day in WEEKDAYS else WEEKDAY_NAMES
        if day not in names:
            raise ValueError(f"{words[1]!r} in {text!r} is not a weekday (mon ... sun)")
        at = _clock(words[2], text)
        return Schedule(
            text=text, unit="week", at=at, weekday=names.index(day), zone=_zone(words[3:], text)
        )
    try:
        interval = parse_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a schedule ({SCHEDULE_HINT})") from None
    if interval < MIN_INTERVAL:
        raise ValueError(f"{text!r} is shorter than {show_duration(MIN_INTERVAL)}")
    return Schedule(text=text, interval=interval)


def _clock(word: str, text: str) -> tuple[int, int]:
    match = _TIME.fullmatch(word)
    if not match:
        raise ValueError(f"{word!r} in {text!r} is not a time of day (HH:MM)")
    return int(match.group(1)), int(match.group(2))


def _zone(words: list[str], text: str) -> str:
    if not words:
        return "UTC"
    try:
        ZoneInfo(words[0])
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{words[0]!r} in {text!r} is not a time zone (an IANA name such as Europe/Berlin)"
        ) from None
    return words[0]


def show_duration(span: timedelta) -> str:
    """A timedelta the way the file writes it: 15m, 7d, 1h30m."""
    seconds = int(span.total_seconds())
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def describe_condition(rule: Rule) -> str:
    """The rule's condition in words: "below 0.5", "above 10", "20% below the 7d baseline"."""
    if rule.drop is not None and rule.baseline is not None:
        return f"{rule.drop:.0%} below the {show_duration(rule.baseline)} baseline"
    if rule.below is not None:
        return f"below {rule.below:g}"
    return f"above {rule.above:g}"


def window_label(rule: Rule) -> str | None:
    """The rule's window as written (15m), or None for a metric without one."""
    return show_duration(rule.window) if METRICS[rule.metric].windowed else None


@dataclass(frozen=True)
class _Entry:
    """One channel, rule or report as written, and where its mistakes are reported."""

    path: Path
    lines: _Lines
    table: tuple[object, ...]
    where: str
    body: dict[str, Any]

    @property
    def line(self) -> int | None:
        return self.lines.of(self.table)

    def fail(self, key: str | None, problem: str) -> RulesError:
        return RulesError(self.path, problem, self.lines.of(self.table, key), self.where, key)

    def only(self, allowed: tuple[str, ...], kind: str) -> None:
        for key in self.body:
            if key not in allowed:
                raise self.fail(key, f"unknown (a {kind} takes {', '.join(allowed)})")

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, 'must be a list of strings, such as ["a", "b"]')
        return tuple(value)

    def duration(self, key: str, default: str) -> timedelta:
        value = self.body.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a quoted duration ({DURATION_HINT})")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def number(self, key: str) -> float:
        value = self.body[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"{value!r} is not a number")
        return float(value)

    def channels(self, defined: dict[str, Channel]) -> tuple[str, ...]:
        names = self.strings("channels")
        for name in names:
            if name not in defined:
                known = ", ".join(sorted(defined)) or "none defined"
                raise self.fail("channels", f"no channel named {name!r} (channels: {known})")
        return names


class _Reader:
    """Checks one file's parsed TOML, raising RulesError at the first mistake."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _scan(text)

    def top(self, data: dict[str, Any]) -> AlertsConfig:
        file = _Entry(self.path, self.lines, (), "", data)
        for key in data:
            if key not in SECTIONS:
                raise file.fail(key, "unknown section ([channels.NAME], [[rules]] or [[reports]])")
        raw_channels = data.get("channels", {})
        if not isinstance(raw_channels, dict):
            raise file.fail("channels", "must be tables such as [channels.ops-slack]")
        channels = {name: self.channel(name, body) for name, body in raw_channels.items()}
        rules = tuple(
            _rule(self.entry("rules", index, body, "rule"), channels)
            for index, body in enumerate(self.array(file, "rules"))
        )
        reports = tuple(
            _report(self.entry("reports", index, body, "report"), channels)
            for index, body in enumerate(self.array(file, "reports"))
        )
        self.unique([rule.name for rule in rules], "rules", "rule")
        self.unique([report.name for report in reports], "reports", "report")
        return AlertsConfig(path=self.path, channels=channels, rules=rules, reports=reports)

    def array(self, file: _Entry, section: str) -> list[dict[str, Any]]:
        items = file.body.get(section, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise file.fail(section, f"must be tables written [[{section}]]")
        return items

    def entry(self, section: str, index: int, body: dict[str, Any], kind: str) -> _Entry:
        """A rule or report, named in messages by its name (by its place until it has one)."""
        table = (section, index)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            nameless = _Entry(self.path, self.lines, table, f"{kind} #{index + 1}", body)
            raise nameless.fail("name", "missing: every entry needs a name")
        return _Entry(self.path, self.lines, table, f"{kind} {name.strip()!r}", body)

    def unique(self, names: list[str], section: str, kind: str) -> None:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                entry = _Entry(self.path, self.lines, (section, index), f"{kind} {name!r}", {})
                raise entry.fail(
                    "name",
                    f"a second {kind} with this name (names must be unique: they key its state)",
                )
            seen.add(name)

    def channel(self, name: str, body: Any) -> Channel:
        entry = _Entry(self.path, self.lines, ("channels", name), f"channel {name!r}", {})
        if not isinstance(body, dict):
            raise entry.fail(None, "must be a table with a type")
        entry = _Entry(self.path, self.lines, entry.table, entry.where, body)
        kind = body.get("type")
        if kind not in CHANNEL_KEYS:
            raise entry.fail(
                "type",
                f"{kind!r} is not a channel type (slack, email or webhook)"
                if kind is not None
                else "missing (slack, email or webhook)",
            )
        entry.only(("type", *CHANNEL_KEYS[kind]), f"{kind} channel")
        for key in CHANNEL_KEYS[kind]:
            if key not in body:
                raise entry.fail(key, f"missing: a {kind} channel needs it")
        channel_type: ChannelType = kind
        if kind == "email":
            to = entry.strings("to")
            if not to:
                raise entry.fail("to", "needs at least one address")
            for address in to:
                if "@" not in address or any(c.isspace() for c in address):
                    raise entry.fail("to", f"{address!r} is not an email address")
            return Channel(name=name, type=channel_type, to=to)
        url = body["url"]
        if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
            raise entry.fail("url", f"{url!r} is not an http(s) URL")
        secret = body.get("secret")
        if kind == "webhook" and (not isinstance(secret, str) or not secret):
            raise entry.fail("secret", "must be a non-empty string (it signs the body)")
        return Channel(name=name, type=channel_type, url=url, secret=secret)


def _rule(entry: _Entry, channels: dict[str, Channel]) -> Rule:
    entry.only(RULE_KEYS, "rule")
    body = entry.body
    metric_name = body.get("metric")
    if metric_name not in METRICS:
        names = ", ".join(METRICS)
        raise entry.fail(
            "metric",
            f"{metric_name!r} is not a metric ({names})"
            if metric_name is not None
            else f"missing ({names})",
        )
    metric = METRICS[metric_name]
    _inapplicable(entry, metric)
    window = entry.duration("window", "15m")
    if metric.windowed and not MIN_WINDOW <= window <= MAX_WINDOW:
        span = f"{show_duration(MIN_WINDOW)} to {show_duration(MAX_WINDOW)}"
        raise entry.fail("window", f"must be from {span}")
    min_volume = body.get("min_volume", 0)
    if isinstance(min_volume, bool) or not isinstance(min_volume, int) or min_volume < 0:
        raise entry.fail("min_volume", f"{min_volume!r} is not a whole number >= 0")
    for_ = entry.duration("for", "0s")
    if for_ > MAX_FOR:
        raise entry.fail("for", f"must be at most {show_duration(MAX_FOR)}")
    cause = body.get("cause")
    if metric.cause and (isinstance(cause, bool) or not isinstance(cause, int)):
        raise entry.fail(
            "cause",
            "missing: a Plivo hangup code such as 3000"
            if cause is None
            else f"{cause!r} is not a Plivo hangup code (a number such as 3000)",
        )
    direction = body.get("direction")
    if direction is not None and direction not in ("inbound", "outbound"):
        raise entry.fail("direction", f"{direction!r} is not inbound or outbound")
    below, above, drop, baseline = _bound(entry, metric)
    return Rule(
        name=str(body["name"]).strip(),
        metric=metric.name,
        channels=entry.channels(channels),
        window=window,
        below=below,
        above=above,
        drop=drop,
        baseline=baseline,
        min_volume=min_volume,
        for_=for_,
        cause=cause,
        direction=direction,
        numbers=entry.strings("numbers"),
        destinations=entry.strings("destinations"),
        line=entry.line,
    )


def _inapplicable(entry: _Entry, metric: Metric) -> None:
    """Refuse the keys the metric ignores: a key that silently does nothing misleads."""
    ignored: list[tuple[tuple[str, ...], str]] = []
    if not metric.windowed:
        ignored.append((("window",), "it is measured now, not over a window"))
    if metric.volume is None:
        ignored.append((("min_volume",), "it counts no events to set a minimum on"))
    if not metric.sliced:
        ignored.append((("direction", "numbers", "destinations"), "it is not split by them"))
    if not metric.baseline:
        ignored.append((("drop", "baseline"), "it has no usual level to fall below"))
    if not metric.cause:
        causes = " and ".join(name for name, m in METRICS.items() if m.cause)
        ignored.append((("cause",), f"only {causes} take a cause"))
    for keys, why in ignored:
        for key in keys:
            if key in entry.body:
                raise entry.fail(key, f"does not apply to {metric.name} ({why})")


def _bound(
    entry: _Entry, metric: Metric
) -> tuple[float | None, float | None, float | None, timedelta | None]:
    """(below, above, drop, baseline): exactly one of below, above, or drop with a baseline."""
    body = entry.body
    bounds = [key for key in body if key in ("below", "above", "drop")]
    if len(bounds) != 1:
        raise entry.fail(
            bounds[1] if len(bounds) > 1 else "below",
            "a rule needs exactly one of below, above or drop (with baseline)"
            + (f"; it has {', '.join(bounds)}" if bounds else ""),
        )
    if "drop" not in body:
        if "baseline" in body:
            raise entry.fail("baseline", "only a drop rule takes a baseline")
        key = bounds[0]
        bound = entry.number(key)
        if bound < 0 or (metric.unit == "fraction" and bound > 1):
            expected = "from 0 to 1 (0.5 = 50%)" if metric.unit == "fraction" else ">= 0"
            raise entry.fail(key, f"{bound:g} is out of range for {metric.name}: {expected}")
        return (bound, None, None, None) if key == "below" else (None, bound, None, None)
    drop = entry.number("drop")
    if not 0 < drop < 1:
        raise entry.fail("drop", f"{drop:g} is not a fraction between 0 and 1 (0.2 = 20%)")
    if "baseline" not in body:
        raise entry.fail("baseline", 'missing: drop compares with a baseline such as "7d"')
    baseline = entry.duration("baseline", "")
    days, rest = divmod(baseline, timedelta(days=1))
    if rest or not 1 <= days <= MAX_BASELINE_DAYS:
        raise entry.fail("baseline", f"must be whole days, 1d to {MAX_BASELINE_DAYS}d")
    return None, None, drop, baseline


def _report(entry: _Entry, channels: dict[str, Channel]) -> Report:
    entry.only(REPORT_KEYS, "report")
    every = entry.body.get("every")
    if not isinstance(every, str):
        raise entry.fail("every", f"missing or not a string ({SCHEDULE_HINT})")
    try:
        schedule = parse_schedule(every)
    except ValueError as exc:
        raise entry.fail("every", str(exc)) from None
    default = schedule.interval or _UNIT_RANGE[schedule.unit or "day"]
    span = entry.duration("range", show_duration(default))
    if not MIN_INTERVAL <= span <= MAX_RANGE:
        limits = f"{show_duration(MIN_INTERVAL)} to {show_duration(MAX_RANGE)}"
        raise entry.fail("range", f"must be from {limits}")
    names = entry.channels(channels)
    if not names:
        raise entry.fail("channels", "a report needs at least one channel")
    name = str(entry.body["name"]).strip()
    return Report(name=name, every=schedule, range=span, channels=names, line=entry.line)


_UNIT_RANGE: dict[Literal["hour", "day", "week"], timedelta] = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
}


def loads(text: str, path: Path) -> AlertsConfig:
    """Parse and check a rules file's text (`path` only names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RulesError(
            path, f"not valid TOML: {problem}", int(found.group(1)) if found else None
        ) from None
    return _Reader(path, text).top(data)


def load(path: Path) -> AlertsConfig:
    """Read and check the rules file at `path`; RulesError names the line and key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(path, f"cannot read it: {exc}") from None
    return loads(text, path)


def as_stored(config: AlertsConfig, settings: Settings) -> AlertsConfig:
    """The rules with their numbers as the database holds them: with CALLSTATUS_NUMBERS=masked a
    clear B destination written in the file is matched by its pseudonym (own numbers stay)."""
    masker = NumberMasker.from_settings(settings)
    if masker is None:
        return config

    def stored(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(form for value in values for form in masker.lookup_forms(value)))

    rules = tuple(
        replace(rule, numbers=stored(rule.numbers), destinations=stored(rule.destinations))
        for rule in config.rules
    )
    return replace(config, rules=rules)


def require_settings(config: AlertsConfig, settings: Settings) -> None:
    """Refuse email channels without the SMTP server to send them through (serve and
    `alerts check` call this after `load`)."""
    missing = [
        name
        for name, value in (("SMTP_HOST", settings.smtp_host), ("SMTP_FROM", settings.smtp_from))
        if not value
    ]
    for channel in config.channels.values():
        if channel.type == "email" and missing:
            try:
                line = _scan(config.path.read_text(encoding="utf-8")).of(("channels", channel.name))
            except (OSError, UnicodeDecodeError):
                line = None
            raise RulesError(
                config.path,
                f"an email channel needs {' and '.join(missing)} set (the SMTP server and the "
                "sender address)",
                line,
                f"channel {channel.name!r}",
            )
