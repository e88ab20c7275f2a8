"""The sidebar controls shared by every page, kept in the URL so a link reproduces the view."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import streamlit as st

from callstatus.core.numbers import NumberMasker
from callstatus.core.settings import Settings
from callstatus.dashboard import connection, context
from callstatus.dashboard.filters import (
    BUCKET_CHOICES,
    BUCKETS,
    DEFAULT_PRESET,
    DIRECTIONS,
    PRESETS,
    Filters,
    auto_bucket,
    lookup_numbers,
    resolve_range,
)
from callstatus.dashboard.queries import destinations as places
from callstatus.dashboard.queries import sidebar as choices
from callstatus.dashboard.text import plain

REFRESH_CHOICES = {"5 s": 5, "15 s": 15, "30 s": 30, "1 min": 60}
COMMON_ZONES = (
    "UTC",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def _zones() -> list[str]:
    browser = st.context.timezone
    first = [z for z in (browser, context.settings().plivo_timezone) if z]
    valid = available_timezones()
    return list(dict.fromkeys([*first, *COMMON_ZONES, *sorted(valid)]))


def sidebar() -> None:
    """Draw the controls; widget keys double as query-string names (bind="query-params")."""
    bar = st.sidebar
    bar.selectbox(
        "Time range",
        list(PRESETS),
        index=list(PRESETS).index(DEFAULT_PRESET),
        key="range",
        bind="query-params",
    )
    if st.session_state["range"] == "Custom":
        today = datetime.now(UTC).date()
        bar.date_input(
            "Days", value=(today - timedelta(days=6), today), key="days", bind="query-params"
        )
    bar.selectbox("Bucket", BUCKET_CHOICES, key="bucket", bind="query-params")
    bar.toggle(
        "Compare with the previous range",
        key="compare",
        bind="query-params",
        help="Over-time charts also draw the range just before, dashed, bucket on bucket",
    )
    bar.segmented_control(
        "Direction", DIRECTIONS, default="all", key="dir", bind="query-params", required=True
    )
    bar.multiselect(
        "Our numbers",
        choices.our_numbers(connection.relations()),
        key="num",
        bind="query-params",
        accept_new_options=True,
        placeholder="all",
        help="The number Plivo called (inbound) or our caller ID (outbound)",
    )
    bar.multiselect(
        "B destination",
        choices.destinations_list(connection.relations()),
        key="dest",
        bind="query-params",
        accept_new_options=True,
        placeholder="all",
        help="Only calls that dialled these B numbers",
    )
    bar.multiselect(
        "Country",
        places.countries(connection.relations()),
        key="country",
        bind="query-params",
        placeholder="all",
        # Plain ISO codes (a label here would also be the query string's value: country=GB).
        help="ISO code of the far end's country: the number called (outbound), the caller "
        "(inbound). Destinations names them.",
    )
    bar.selectbox("Time zone", _zones(), key="tz", bind="query-params")
    bar.divider()
    left, right = bar.columns(2, vertical_alignment="bottom")
    left.toggle(
        "Live",
        key="live",
        bind="query-params",
        help="Refresh this page's figures in place, without reloading",
    )
    right.selectbox(
        "every",
        list(REFRESH_CHOICES),
        index=1,
        key="every",
        label_visibility="collapsed",
        disabled=not st.session_state.get("live"),
    )


def refresh_seconds() -> int | None:
    if not st.session_state.get("live"):
        return None
    return REFRESH_CHOICES.get(st.session_state.get("every", "15 s"), 15)


def comparing() -> bool:
    """Whether over-time charts overlay the previous range (query string `compare`)."""
    return bool(st.session_state.get("compare"))


def live(body: Callable[[], None], refresh: bool = True) -> None:
    """Run a page's body as a fragment of its own: a widget inside it reruns only the body,
    and in live mode (`refresh`) a timer does too, while the sidebar stays put.

    Each page calls this itself. A fragment around `page.run()` in the app instead would call
    `page.run()` again on every widget use, which st.navigation refuses (once per app run).
    """
    st.fragment(_named_for_its_page(body), run_every=refresh_seconds() if refresh else None)()


def _named_for_its_page(body: Callable[[], None]) -> Callable[[], None]:
    """`body` under a name of its page's own.

    Streamlit runs every page file as a module named `__main__`, and names a fragment after its
    function's module, name and place on the page: every page's `render` was one fragment, so a
    rerun asked for by the page just left could be taken for the page just opened. In live mode,
    going from one page to Calls and searching at once, Chromium once dropped the whole page
    ("Bad delta path index"); one name per page removes that ambiguity."""
    page = Path(inspect.getfile(body)).stem

    def run() -> None:
        body()

    run.__module__ = f"{__package__}.screens.{page}"
    run.__qualname__ = f"{page}.{body.__qualname__}"
    return run


def current() -> Filters:
    """The Filters the controls describe, with relative ranges measured from now."""
    state = st.session_state
    tz = state.get("tz") or "UTC"
    preset = state.get("range") or DEFAULT_PRESET
    days = state.get("days")
    custom: tuple[date, date] | None = None
    if isinstance(days, (tuple, list)) and len(days) == 2:
        custom = (days[0], days[1])
    elif isinstance(days, (tuple, list)) and len(days) == 1:
        custom = (days[0], days[0])
    span = choices.data_span(connection.relations()) if preset == "All time" else None
    start, end = resolve_range(preset, datetime.now(UTC), custom, tz, span)
    bucket_choice = state.get("bucket") or "auto"
    bucket = BUCKETS.get(bucket_choice) or auto_bucket(end - start)
    direction = state.get("dir")
    return Filters(
        start=start,
        end=end,
        bucket=bucket,
        direction=None if direction in (None, "all") else direction,
        numbers=lookup_numbers(state.get("num") or (), masker()),
        destinations=lookup_numbers(state.get("dest") or (), masker()),
        tz=tz,
        countries=tuple(state.get("country") or ()),
    )


def masker() -> NumberMasker | None:
    """In masked mode, what turns a clear number typed in a filter or search into its
    pseudonym; None when numbers are stored in clear."""
    return NumberMasker.from_settings(context.settings())


def describe(f: Filters) -> str:
    """One line saying what the page shows, in the chosen zone, as Markdown: the numbers come
    from the query string (any text a link carries), so they are escaped."""
    fmt = "%Y-%m-%d %H:%M"
    start = f.start.astimezone(ZoneInfo(f.tz)).strftime(fmt)
    end = f.end.astimezone(ZoneInfo(f.tz)).strftime(fmt)
    parts = [f"{start} → {end} ({plain(f.tz)})", f"buckets of {plain(f.bucket)}"]
    if f.direction:
        parts.append(plain(f.direction))
    if f.numbers:
        parts.append("our numbers " + ", ".join(plain(n) for n in f.numbers))
    if f.destinations:
        parts.append("B " + ", ".join(plain(d) for d in f.destinations))
    if f.countries:
        parts.append("countries " + ", ".join(plain(c) for c in f.countries))
    note = retention_note(f, context.settings(), datetime.now(UTC))
    if note:
        parts.append(note)
    return " · ".join(parts)


def retention_note(f: Filters, settings: Settings, now: datetime) -> str | None:
    """When the range reaches past CALLSTATUS_RETENTION_DAYS: what is gone before when (calls
    and webhooks; the hourly aggregates and webhook counts stay until the aggregate horizon).
    None otherwise."""
    days = settings.retention_days
    if days is None or f.start >= now - timedelta(days=days):
        return None
    horizon = (now - timedelta(days=days)).astimezone(ZoneInfo(f.tz)).strftime("%Y-%m-%d %H:%M")
    kept = settings.aggregate_retention_days
    if kept is not None and f.start < now - timedelta(days=kept):
        return (
            f"**calls before {horizon} are no longer stored** (retention: calls {days} days, "
            f"hourly totals {kept} days): figures before then are missing, not zero"
        )
    totals = f"{kept} days" if kept is not None else "for good"
    return (
        f"**calls before {horizon} are no longer stored** (retention: calls {days} days, hourly "
        f"totals {totals}): before then only hourly totals remain, so call lists are empty"
    )
