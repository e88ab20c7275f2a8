"""At a server's start, in the background, what the first page visit would otherwise pay for.

Measured right after a start (bench/dashboard.py, py-spy on the server): nearly half of the
first overview's Python time went to importing pandas, Altair and jsonschema, then Altair's
first chart validation. A thread started with the server does that before anyone asks, and
reads what every page's sidebar reads (webhooks stored, the data's span, our numbers, the B
destinations) through the dashboard's own query functions, so a page opened in the next seconds
finds them in the query cache (`base._fetch`), keyed exactly as the pages key them.

It reads no page's own figures: at 10 million webhooks the overview's and Last 30 days'
queries in the warm-up took both cores while the first page ran its own, and made a first
visit to Hangup causes 2 s slower (docs/benchmarks.md).
"""

from __future__ import annotations

import gc
import importlib
import logging
import pkgutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

from callstatus.dashboard import context

log = logging.getLogger("callstatus.warmup")

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


def freeze_long_lived() -> None:
    """Leave what the server keeps for its whole life out of every later garbage collection.

    Streamlit collects all generations after every page run (`runner.postScriptGC`), and a
    collection walks every tracked object: with pandas, Altair's Vega-Lite schema and
    jsonschema loaded, that took 0.14-0.26 s at the end of each A/B legs load at 10 million
    webhooks (docs/benchmarks.md), holding the GIL while the page's last messages waited to be
    sent. `gc.freeze()` moves the objects alive now into a permanent generation that
    collections skip (3 ms then); nothing else changes: an object is still freed when its last
    reference goes."""
    gc.collect()
    gc.freeze()


def queries() -> Iterator[tuple[str, Callable[[], object]]]:
    """What every page's sidebar reads, whatever the range."""
    from callstatus.dashboard import connection
    from callstatus.dashboard.queries import sidebar

    rel = connection.relations()
    yield "event_count", sidebar.event_count
    yield "data_span", partial(sidebar.data_span, rel)
    yield "our_numbers", partial(sidebar.our_numbers, rel)
    yield "destinations_list", partial(sidebar.destinations_list, rel)


class Warmup:
    """The warm-up thread: `start()` once the server's handle is installed."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ran: list[str] = []  # the queries that ran, in order
        self.error: str | None = None
        self.took_s = 0.0
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
            freeze_long_lived()
            for name, query in queries():
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
