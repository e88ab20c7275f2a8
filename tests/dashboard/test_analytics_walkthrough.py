"""A manager's walk through the analytics pages in one real Chromium over a real seeded
`callstatus serve`: the compare toggle clicked in the sidebar on every page with an over-time
chart, a country picked, the destinations table sorted by a click on its header, and a
destination's 'calls' link followed to its calls; no exception box anywhere. Screenshots of
each step go to CALLSTATUS_SHOTS (a temporary folder when unset) for a person to look at."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import sync_playwright

from callstatus.cli import main as callstatus
from callstatus.dashboard.screens.destinations import DESTINATION_WIDTHS
from tests.dashboard.chromium import LOAD_MS, assert_clean, choose, main_text, settle
from tests.servers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Streamlit's grid: a header row, then rows, 35 px each (st.dataframe's default row height).
ROW_PX = 35
DESTINATIONS_TABLE = 3  # the fourth table of the Destinations page


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("walkthrough") / "seeded.duckdb"
    seeded = ["seed", "--db", str(db), "--calls", "400", "--days", "3", "--seed", "7"]
    assert callstatus(seeded) == 0
    with running_server(db) as running:
        yield running


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("CALLSTATUS_SHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # Tall, so one screenshot holds a whole page (Streamlit scrolls its own container).
    context = browser.new_context(viewport={"width": 1440, "height": 2400})
    try:
        yield context.new_page()
    finally:
        context.close()


def _open(page: Any, server: ServerProcess, path: str) -> None:
    page.goto(f"{server.url}/{path}", timeout=LOAD_MS)
    page.locator(".vega-embed").first.wait_for(timeout=LOAD_MS)
    assert_clean(page, path)


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def _compare(page: Any) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text("Compare with the previous range").click()
    settle(page)
    assert _query(page).get("compare") == ["true"]
    assert_clean(page, "comparing")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("?range=Last+24+hours", "overview"),
        ("causes?range=Last+24+hours", "causes"),
        ("health?range=Last+24+hours", "health"),
        ("timing?range=Last+24+hours", "timing"),
    ],
)
def test_compare_toggle_on_every_page_with_a_time_series(
    page: Any, server: ServerProcess, shots: Path, path: str, name: str
) -> None:
    _open(page, server, path)
    _compare(page)
    page.screenshot(path=str(shots / f"compare-{name}.png"))
    # The data goes back 3 days: the previous 24 hours are drawn, and named in a legend.
    main = page.locator('[data-testid="stMain"]')
    assert main.get_by_text(re.compile(r"previous range.*\(dashed\)")).first.is_visible()
    assert "No data for the previous range" not in main_text(page)


def test_a_previous_range_without_data_says_so(
    page: Any, server: ServerProcess, shots: Path
) -> None:
    _open(page, server, "timing?range=Last+7+days")
    _compare(page)
    # Three days of data: the 7 days before the range hold none.
    assert "No data for the previous range" in main_text(page)
    assert page.get_by_text(re.compile(r"previous range.*\(dashed\)")).count() == 0
    page.screenshot(path=str(shots / "compare-no-data-timing.png"))


def _grid(page: Any, index: int) -> Any:
    return page.locator('[data-testid="stMain"] [data-testid="stDataFrame"]').nth(index)


def _rows(grid: Any) -> list[dict[str, str]]:
    """The grid's rows as its accessible table gives them, in the order shown: each row's
    cells by their column's label (columns scrolled out of sight are left out)."""
    labels = {
        str(th.get_attribute("aria-colindex")): str(th.inner_text()).strip(" ↑↓\n")
        for th in grid.locator('[role="columnheader"]').all()
    }
    rows = []
    for row in grid.locator('[role="row"]').all():
        cells = {
            labels.get(str(td.get_attribute("aria-colindex")), "?"): str(td.inner_text())
            for td in row.locator('[role="gridcell"]').all()
        }
        if cells:
            rows.append(cells)
    return rows


def _header_point(grid: Any, column: str) -> tuple[float, float]:
    """Where a column's header is on screen, from the table's fixed column widths."""
    box = grid.bounding_box()
    names = list(DESTINATION_WIDTHS)
    left = sum(DESTINATION_WIDTHS[n] for n in names[: names.index(column)])
    return box["x"] + left + DESTINATION_WIDTHS[column] / 2, box["y"] + ROW_PX / 2


def test_country_sort_and_a_destinations_calls(
    page: Any, server: ServerProcess, shots: Path
) -> None:
    _open(page, server, "destinations?range=Last+7+days")
    sidebar = page.locator('[data-testid="stSidebar"]')
    choose(page, sidebar.locator('[data-testid="stMultiSelect"]').filter(has_text="Country"), "US")
    page.keyboard.press("Escape")
    settle(page)
    assert _query(page).get("country") == ["US"]
    assert_clean(page, "choosing US")
    assert "countries US" in main_text(page)
    page.screenshot(path=str(shots / "destinations-us.png"))

    grid = _grid(page, DESTINATIONS_TABLE)
    grid.scroll_into_view_if_needed()
    before = _rows(grid)
    counts = [int(row["dialled"]) for row in before]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) > 1, counts
    # No raw None, NaN or NaT: unknown countries and line types have a label.
    for row in before:
        assert not {"None", "nan", "NaN", "NaT", "<NA>"} & set(row.values()), row
    page.mouse.click(*_header_point(grid, "dialled"))
    settle(page)
    after = _rows(grid)
    page.screenshot(path=str(shots / "destinations-sorted.png"))
    assert [int(row["dialled"]) for row in after] == sorted(counts), "sorted by dialled"
    assert_clean(page, "sorting by dialled")

    # The least dialled destination is first now: follow its link.
    destination = after[0]["destination"]
    x, y = _header_point(grid, "calls")
    # Streamlit's grid takes its first click to select a cell; the next opens the link, in a
    # new tab (the page's caption says so).
    page.mouse.click(x, y + ROW_PX)
    settle(page)
    with page.context.expect_page() as opened:
        page.mouse.click(x, y + ROW_PX)
    calls = opened.value
    calls.wait_for_load_state()
    link = urlsplit(calls.url)
    assert link.path == "/calls"
    assert parse_qs(link.query)["q"] == [destination]
    assert parse_qs(link.query)["dest"] == [destination]
    calls.get_by_role("textbox", name="Search").wait_for(timeout=LOAD_MS)
    settle(calls)
    assert_clean(calls, "following a destination's calls link")
    assert calls.get_by_role("textbox", name="Search").input_value() == destination
    text = main_text(calls)
    assert "No calls" not in text
    calls.screenshot(path=str(shots / "destination-calls.png"))
