"""What the simulated traffic looks like: numbers, teams, destinations, outcome mix and shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Agent:
    """A B number our answer XML dials; `answer_rate` 0 with `always_busy` is a line that is
    permanently engaged (a fax, a forwarded desk phone)."""

    number: str
    answer_rate: float
    always_busy: bool = False
    bill_rate: str = "0.0085"


@dataclass(frozen=True, slots=True)
class OurNumber:
    """One of our numbers (the To of inbound calls) and the team its calls ring."""

    number: str
    weight: float
    team: tuple[Agent, ...]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where outbound API calls go: answer rates and prices differ by country."""

    prefix: str
    weight: float
    answer_rate: float
    bill_rate: str
    digits: int = 10


@dataclass(frozen=True, slots=True)
class App:
    """How a Plivo application's URLs are configured: its own query string, GET for some."""

    name: str
    weight: float
    query: tuple[tuple[str, str], ...] = ()
    get_kinds: frozenset[str] = frozenset()


def _team(*agents: tuple[str, float] | tuple[str, float, bool]) -> tuple[Agent, ...]:
    return tuple(Agent(a[0], a[1], bool(a[2]) if len(a) > 2 else False) for a in agents)


DEFAULT_OUR_NUMBERS = (
    OurNumber(
        "18005550199",
        0.40,
        _team(("14155550101", 0.80), ("14155550102", 0.60), ("sip:ana@phone.plivo.com", 0.55)),
    ),
    OurNumber(
        "18005550150",
        0.30,
        _team(
            ("14155550111", 0.45),
            ("14155550112", 0.35),
            ("14155550113", 0.0, True),
            ("sip:frontdesk@phone.plivo.com", 0.65),
        ),
    ),
    OurNumber(
        "442038080100",
        0.18,
        _team(("442071838750", 0.50), ("447700900123", 0.25), ("442071838799", 0.0, True)),
    ),
    OurNumber("918071279100", 0.12, _team(("919820012345", 0.70), ("919820067890", 0.40))),
)

DEFAULT_DESTINATIONS = (
    Destination("1", 0.45, 0.55, "0.0100"),
    Destination("44", 0.20, 0.45, "0.0120"),
    Destination("91", 0.20, 0.68, "0.0045"),
    Destination("49", 0.10, 0.38, "0.0150", 11),
    Destination("55", 0.05, 0.30, "0.0200", 11),
)

DEFAULT_APPS = (
    App("default", 0.85),
    App("acme", 0.10, (("tenant", "acme"),)),
    App(
        "globex",
        0.05,
        (("tenant", "globex"), ("region", "eu")),
        frozenset({"answer", "hangup", "ring"}),
    ),
)

# Office traffic: a morning peak, a lunch dip, quiet nights (local hours 0-23).
DEFAULT_HOURS = (
    0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 2.0, 5.0, 8.0, 9.0, 8.5,
    6.0, 7.0, 8.0, 7.5, 6.5, 4.5, 2.5, 1.5, 1.0, 0.8, 0.5, 0.3,
)  # fmt: skip
DEFAULT_WEEKDAYS = (1.0, 1.05, 1.0, 0.95, 0.85, 0.35, 0.2)  # Monday first


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """The outcome mix and shape of simulated traffic; every rate is a probability."""

    inbound_share: float = 0.65
    # Simultaneous targets per Dial: weights for 1, 2, 3 numbers.
    dial_width_weights: tuple[float, ...] = (0.45, 0.35, 0.20)
    dial_timeout_s: int = 30
    # Why a B leg does not answer, when it does not.
    leg_failures: tuple[tuple[str, float], ...] = (
        ("no-answer", 0.45),
        ("busy", 0.20),
        ("rejected", 0.15),
        ("unreachable", 0.10),
        ("failed", 0.10),
    )
    # Why an outbound call is not answered, when it is not.
    outbound_failures: tuple[tuple[str, float], ...] = (
        ("no-answer", 0.40),
        ("busy", 0.20),
        ("timeout", 0.12),
        ("rejected", 0.10),
        ("unreachable", 0.10),
        ("failed", 0.06),
        ("canceled", 0.02),
    )
    caller_gone_before_answer: float = 0.01
    caller_gone_in_greeting: float = 0.02
    caller_gone_while_ringing: float = 0.10
    agent_hangs_up: float = 0.45
    callee_hangs_up: float = 0.60
    talk_median_s: float = 95.0
    outbound_talk_median_s: float = 40.0
    max_talk_s: float = 1200.0
    machine_detection: float = 0.25
    machine: float = 0.30
    machine_hangup: float = 0.70
    fallback: float = 0.01
    retry: float = 0.01
    out_of_order: float = 0.03
    extra_param: float = 0.02
    caller_name: float = 0.60
    non_ascii_name: float = 0.15
    caller_pool: int = 20_000
    hours: tuple[float, ...] = DEFAULT_HOURS
    weekdays: tuple[float, ...] = DEFAULT_WEEKDAYS
    our_numbers: tuple[OurNumber, ...] = DEFAULT_OUR_NUMBERS
    destinations: tuple[Destination, ...] = DEFAULT_DESTINATIONS
    apps: tuple[App, ...] = DEFAULT_APPS
    parent_auth_id: str = "MAMDJMMTEZOWY0ZTQ1ZG"
    bill_increment_s: int = 60

    @classmethod
    def from_file(cls, path: Path) -> TrafficConfig:
        """Defaults overridden by a JSON object of field names (lists for tuples)."""
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of traffic settings")
        return cls().with_overrides(data)

    def with_overrides(self, data: dict[str, Any]) -> TrafficConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown traffic settings: {', '.join(unknown)}")
        values = {name: _convert(name, value) for name, value in data.items()}
        return replace(self, **values)


def _convert(name: str, value: Any) -> Any:
    if name == "our_numbers":
        return tuple(
            OurNumber(v["number"], float(v["weight"]), tuple(Agent(**a) for a in v["team"]))
            for v in value
        )
    if name == "destinations":
        return tuple(Destination(**v) for v in value)
    if name == "apps":
        return tuple(
            App(
                v["name"],
                float(v["weight"]),
                tuple((str(k), str(x)) for k, x in dict(v.get("query", {})).items()),
                frozenset(v.get("get_kinds", ())),
            )
            for v in value
        )
    if name in ("leg_failures", "outbound_failures"):
        return tuple((str(k), float(w)) for k, w in dict(value).items())
    if isinstance(value, list):
        return tuple(value)
    return value
