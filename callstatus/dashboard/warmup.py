"""At a server's start, in the background, what the first page visit would otherwise pay for.

Measured right after a start (bench/dashboard.py, py-spy on the server): nearly half of the
first overview's time went to importing pandas, Altair and jsonschema, then Altair's first chart
validation, then the page's queries on a DuckDB instance that had read nothing yet. A thread
started with the server does all of that before anyone asks: it imports the dashboard's
modules, validates one small chart, and runs the overview's and the sidebar's queries for the
default range and "Last 30 days" through the dashboard's own query functions, which warms
DuckDB's buffers for every page and fills the query cache (`base._fetch`) exactly as the pages
key it, so a page opened in the next seconds reads it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial

from callstatus.dashboard import context
from callstatus.dashboard.filters import DEFAULT_PRESET, Filters, auto_bucket, resolve_range

log = logging.getLogger("callstatus.warmup")

PRESETS = (DEFAULT_PRESET, "Last 30 days")
MODULES = (
    "pandas",
    "altair",
    "callstatus.dashboard.charts",
    "callstatus.dashboard.leg_charts",
    "callstatus.dashboard.tiles",
    "callstatus.dashboard.widgets",
    "callstatus.dashboard.controls",
)


def import_modules() -> list[str]:
    """Import what the pages import: the modules above and every query module."""
    from callstatus.dashboard import queries

    names = [
        *MODULES,
        *(f"{queries.__name__}.{m.name}" for m in pkgutil.iter_modules(queries.__path__)),
    ]
    for name in names:
        importlib.import_module(name)
    return names


def validate_a_chart() -> None:
    """Altair validates every chart against the Vega-Lite schema; the first validation loads
    and compiles the schema (hundreds of milliseconds): do it once here."""
    import altair as alt
    import pandas as pd

    alt.Chart(pd.DataFrame({"x": [1]})).mark_bar().encode(x="x:Q").to_dict()


def filters(preset: str, tz: str, now: datetime) -> Filters:
    """The Filters a page builds for `preset` with no slices (controls.current())."""
    start, end = resolve_range(preset, now, None, tz, None)
    return Filters(start=start, end=end, bucket=auto_bucket(end - start), tz=tz)


def queries(now: datetime) -> Iterator[tuple[str, Callable[[], object]]]:
    """The sidebar's and the overview's queries for each preset, in the zones a first visitor
    most likely has (UTC, and the zone of Plivo's times)."""
    from callstatus.dashboard import connection
    from callstatus.dashboard.queries import overview, sidebar

    rel = connection.relations()
    yield "event_count", sidebar.event_count
    yield "data_span", partial(sidebar.data_span, rel)
    yield "our_numbers", partial(sidebar.our_numbers, rel)
    yield "destinations_list", partial(sidebar.destinations_list, rel)
    zones = dict.fromkeys(["UTC", context.settings().plivo_timezone])
    for preset in PRESETS:
        for tz in zones:
            f = filters(preset, tz, now)
            yield f"kpis {preset} {tz}", partial(overview.kpis, rel, f)
            yield f"kpis before {preset} {tz}", partial(overview.kpis, rel, f.previous())
            yield f"rates {preset} {tz}", partial(overview.rates_over_time, rel, f)
            yield f"outcomes {preset} {tz}", partial(overview.outcomes_over_time, rel, f)
            for metric in ("dial", "call"):
                yield (
                    f"heatmap {metric} {preset} {tz}",
                    partial(overview.answer_heatmap, rel, f, metric),
                )


class Warmup:
    """The warm-up thread: `start()` once the server's handle is installed."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ran: list[str] = []  # the queries that ran, in order
        self.error: str | None = None
        self.took_s = 0.0
        self.now: datetime | None = None  # the "now" its ranges end at
        self._thread = threading.Thread(target=self._run, name="callstatus-warmup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            import_modules()
            validate_a_chart()
            self.now = datetime.now(UTC)
            for name, query in queries(self.now):
                if context.server() is None:
                    return  # the server stopped meanwhile
                query()
                self.ran.append(name)
        except Exception as exc:  # a warm-up that fails costs the first visitor time, no more
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("dashboard warm-up stopped: %s", self.error)
        finally:
            self.took_s = time.perf_counter() - began
            log.info("dashboard warm-up: %d queries in %.1f s", len(self.ran), self.took_s)
            self.done.set()
