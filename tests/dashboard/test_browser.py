"""One real Chromium against a real `callstatus serve` on a seeded database."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from callstatus.cli import main as callstatus
from callstatus.dashboard import tiles
from tests.servers import CHROMIUM, CHROMIUM_ARGS, running_server

ARGS = CHROMIUM_ARGS


@pytest.mark.browser
def test_overview_in_a_real_browser(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    db = tmp_path / "browser.duckdb"
    assert (
        callstatus(["seed", "--db", str(db), "--calls", "300", "--days", "2", "--seed", "5"]) == 0
    )
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT avg((dial_status = 'completed')::INT) FROM dials").fetchone()
    finally:
        con.close()
    assert row is not None
    expected = tiles.fmt_rate(row[0])

    with running_server(db) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            # The dashboard works offline and tells no other site it was opened (the favicon
            # once came from a font CDN): every request goes to the server itself.
            elsewhere: list[str] = []
            page.on(
                "request",
                lambda r: (
                    elsewhere.append(r.url)
                    if not r.url.startswith((server.url, "data:", "blob:"))
                    else None
                ),
            )
            page.goto(f"{server.url}/?range=Last+30+days", timeout=60_000)
            tile = page.locator('[data-testid="stMetric"]').filter(has_text="Dial answer rate")
            tile.first.wait_for(timeout=60_000)
            # The charts reach the page one by one, the last about a second after the first.
            page.locator(".vega-embed").nth(2).wait_for(timeout=60_000)
            assert expected in tile.first.inner_text()
            assert page.locator(".vega-embed").count() >= 3
            assert elsewhere == []
        finally:
            browser.close()
