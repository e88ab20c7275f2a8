"""Timing and load and Destinations in one real Chromium against a real `callstatus serve` on a
seeded database: each page renders its charts with no Streamlit exception, the Country filter
and the comparison toggle work from the sidebar, and a destination's link opens its calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import sync_playwright

from callstatus.cli import main as callstatus
from tests.dashboard.chromium import LOAD_MS, assert_clean, choose, main_text, settle
from tests.servers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("analytics-browser") / "seeded.duckdb"
    seeded = ["seed", "--db", str(db), "--calls", "400", "--days", "3", "--seed", "7"]
    assert callstatus(seeded) == 0
    with running_server(db) as running:
        yield running


@pytest.fixture(scope="module")
def page(server: ServerProcess) -> Iterator[Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1440, "height": 1100})
        finally:
            browser.close()


def _open(page: Any, server: ServerProcess, path: str) -> None:
    page.goto(f"{server.url}/{path}", timeout=LOAD_MS)
    page.locator(".vega-embed").first.wait_for(timeout=LOAD_MS)
    assert_clean(page, path)


def test_timing_page(page: Any, server: ServerProcess) -> None:
    _open(page, server, "timing?range=Last+7+days")
    text = main_text(page)
    for label in ("Post-dial delay (median)", "Peak concurrent calls", "Concurrent calls"):
        assert label in text
    assert page.locator(".vega-embed").count() == 2
    # Another measure and the B legs' concurrency, picked on the page.
    main = page.locator('[data-testid="stMain"]')
    main.get_by_role("radio", name="ring time", exact=True).click()
    settle(page)
    main.get_by_role("radio", name="B legs", exact=True).click()
    assert_clean(page, "picking a measure and B legs")
    assert "Ring time (outbound API calls)" in main_text(page)


def test_compare_toggle_overlays_the_previous_range(page: Any, server: ServerProcess) -> None:
    _open(page, server, "timing?range=Last+24+hours")
    page.get_by_text("Compare with the previous range").click()
    settle(page)
    assert parse_qs(urlsplit(page.url).query).get("compare") == ["true"]
    assert_clean(page, "comparing")
    assert page.get_by_text("previous range").first.is_visible()  # the dashed series' legend


def test_destinations_page_and_country_filter(page: Any, server: ServerProcess) -> None:
    _open(page, server, "destinations?range=Last+7+days")
    text = main_text(page)
    for heading in (
        "Calls by country",
        "B legs by country",
        "By our numbers",
        "Destinations and agents",
    ):
        assert heading in text
    sidebar = page.locator('[data-testid="stSidebar"]')
    choose(page, sidebar.locator('[data-testid="stMultiSelect"]').filter(has_text="Country"), "GB")
    page.keyboard.press("Escape")
    settle(page)
    assert parse_qs(urlsplit(page.url).query).get("country") == ["GB"]
    assert_clean(page, "choosing GB")
    assert "countries GB" in main_text(page)


def test_overview_shows_todays_peak(page: Any, server: ServerProcess) -> None:
    _open(page, server, "?range=Last+7+days&compare=true")
    tile = page.locator('[data-testid="stMetric"]').filter(has_text="Peak concurrent calls today")
    assert tile.count() == 1
    assert tile.first.inner_text().strip().splitlines()[-1].isdigit()
    assert Path(CHROMIUM).exists()
