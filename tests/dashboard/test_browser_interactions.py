"""Chromium uses the dashboard as people do: runs SQL, picks an example, searches a call,
changes every sidebar control, watches live mode; and an attacker plants markup in headers,
webhook parameters and links, which must show as text.

One seeded `callstatus serve` for the module (development mode), one signed-mode server for
the markup test, one Chromium for all of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import duckdb
import httpx
import pytest

from callstatus.analyst import sandbox as safe_sql
from callstatus.cli import main as callstatus
from tests.dashboard.chromium import (
    LOAD_MS,
    assert_clean,
    choose,
    main_text,
    settle,
    visible,
)
from tests.factories import signed_request
from tests.servers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, free_port, running_server

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

ARGS = CHROMIUM_ARGS


# -- helpers ----------------------------------------------------------------------------------


def sidebar_select(page: Any, label: str, option: str) -> None:
    select = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    choose(page, select.filter(has_text=label), option)


def query_string(page: Any) -> str:
    return str(page.url).partition("?")[2]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Each page's console errors and uncaught exceptions, for a failure to show what the browser saw
# (a page Streamlit's frontend dropped is blank: no exception box to read).
BROWSER_ERRORS: dict[int, list[str]] = {}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    errors = BROWSER_ERRORS.setdefault(id(opened), [])
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        yield opened
    finally:
        context.close()
        BROWSER_ERRORS.pop(id(opened), None)


def shows(page: Any, heading: str) -> None:
    """Wait for an h2 saying `heading`; failing, say what the page and its console held."""
    try:
        page.locator("h2").filter(has_text=heading).wait_for(timeout=LOAD_MS)
    except Exception as error:
        shown = page.locator("body").inner_text(timeout=5_000)[:500]
        errors = BROWSER_ERRORS.get(id(page), [])[-5:]
        raise AssertionError(
            f"{heading!r} never showed; page: {shown!r}; errors: {errors}"
        ) from error


# -- a seeded server --------------------------------------------------------------------------


@dataclass
class Seeded:
    server: ServerProcess
    first_calls: list[str]  # call_uuid by started_at, call_uuid
    retried_call: str  # a call one of whose webhooks Plivo delivered twice
    retried_outcome: str
    our_number: str
    destination: str


FIRST_CALLS_SQL = "SELECT call_uuid FROM calls ORDER BY started_at, call_uuid LIMIT 3"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    db = tmp_path_factory.mktemp("interactions") / "seeded.duckdb"
    assert (
        callstatus(["seed", "--db", str(db), "--calls", "300", "--days", "2", "--seed", "5"]) == 0
    )
    con = duckdb.connect(str(db), read_only=True)
    try:
        first = [row[0] for row in con.execute(FIRST_CALLS_SQL).fetchall()]
        retried = con.execute(
            "SELECT c.call_uuid, c.outcome FROM calls c WHERE c.call_uuid IN "
            "(SELECT call_uuid FROM webhook_events WHERE duplicate) "
            "ORDER BY c.started_at DESC LIMIT 1"
        ).fetchone()
        (number,) = con.execute(  # type: ignore[misc]
            "SELECT to_number FROM calls WHERE direction = 'inbound' "
            "GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        (destination,) = con.execute(  # type: ignore[misc]
            "SELECT b_leg_to FROM dial_legs GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    assert len(first) == 3 and retried is not None, "the seed has no retried webhook"
    with running_server(db) as server:
        # The SQL page reads the analysts' snapshot, written shortly after the server starts.
        snapshot = db.with_name(f"{db.stem}-snapshot.duckdb")
        deadline = time.monotonic() + 60
        while not snapshot.exists():
            assert time.monotonic() < deadline, "no snapshot within 60 s"
            time.sleep(0.2)
        yield Seeded(server, first, retried[0], retried[1], number, destination)


# -- the SQL page -----------------------------------------------------------------------------


def _run_button(page: Any) -> Any:
    return page.get_by_role("button", name="Run", exact=True)


GRID_CELLS = '[data-testid="stMain"] [data-testid="stDataFrame"] [role="gridcell"]'


def _grid_cells(page: Any, waiting_for: str) -> list[str]:
    """The result grid's cells, once one holds `waiting_for` (the grid draws after its
    caption)."""
    page.locator(GRID_CELLS).filter(has_text=waiting_for).first.wait_for(
        state="attached", timeout=LOAD_MS
    )
    return [str(text) for text in page.locator(GRID_CELLS).all_inner_texts()]


def test_sql_page_runs_a_query_and_an_example(seeded: Seeded, page: Any) -> None:
    page.goto(f"{seeded.server.url}/sql", timeout=LOAD_MS)
    _run_button(page).wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening the SQL page")

    page.get_by_label("Query").fill(FIRST_CALLS_SQL)
    _run_button(page).click()
    page.get_by_text("3 rows in").wait_for(timeout=LOAD_MS)
    assert_clean(page, "running a query")
    cells = _grid_cells(page, seeded.first_calls[0])
    assert all(uuid in cells for uuid in seeded.first_calls), cells

    # An example: the editor takes its text, Run shows its result.
    name, example_sql = list(safe_sql.EXAMPLES.items())[1]
    choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Examples"), name)
    settle(page)
    assert page.get_by_label("Query").input_value() == example_sql
    assert_clean(page, "picking an example")
    _run_button(page).click()
    settle(page)
    page.get_by_text(" rows in ").wait_for(timeout=LOAD_MS)
    assert_clean(page, "running the example")
    assert page.locator('[data-testid="stMain"] [data-testid="stAlert"]').count() == 0
    page.locator(GRID_CELLS).first.wait_for(state="attached", timeout=LOAD_MS)
    assert not any(
        uuid in page.locator(GRID_CELLS).all_inner_texts() for uuid in seeded.first_calls
    ), "the example's result replaces the first"


def test_sql_error_quoting_markup_shows_it_as_text(seeded: Seeded, page: Any) -> None:
    planted = "SELECT 1 ![x](http://evil.example/pixel.png) [click](http://evil.example/c)"
    page.goto(f"{seeded.server.url}/sql", timeout=LOAD_MS)
    _run_button(page).wait_for(timeout=LOAD_MS)
    page.get_by_label("Query").fill(planted)
    _run_button(page).click()
    page.locator('[data-testid="stMain"] [data-testid="stAlert"]').first.wait_for(timeout=LOAD_MS)
    assert_clean(page, "a refused query")
    assert_no_planted_links(page, ("evil.example",))
    assert "![x](http://evil.example/pixel.png)" in main_text(page)


# -- the Calls page ---------------------------------------------------------------------------


def test_calls_page_search_shows_the_call(seeded: Seeded, page: Any) -> None:
    page.goto(f"{seeded.server.url}/calls?range=Last+30+days", timeout=LOAD_MS)
    search = page.get_by_role("textbox", name="Search")
    search.wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening Calls")
    search.fill(seeded.retried_call)
    search.press("Enter")
    heading = page.locator("h2").filter(has_text=f"Call {seeded.retried_call}")
    heading.wait_for(timeout=LOAD_MS)
    assert_clean(page, "searching a call")
    assert f"q={seeded.retried_call}" in query_string(page), "the search is in the link"
    outcome = page.locator('[data-testid="stMetric"]').filter(has_text="Outcome")
    assert seeded.retried_outcome in outcome.inner_text()
    # The retried webhook is one timeline entry with its count.
    retried = page.locator('[data-testid="stExpander"]').filter(has_text="delivered 2 times")
    assert retried.count() >= 1
    # An entry's parameters are drawn when it opens (its fragment reruns), and only then.
    assert page.locator('[data-testid="stMain"] [data-testid="stJson"]').count() == 0
    retried.first.locator("summary").click()
    shown = retried.first.locator('[data-testid="stJson"]')
    shown.wait_for(timeout=LOAD_MS)
    assert seeded.retried_call in visible(shown.inner_text())
    assert "2 deliveries" in visible(retried.first.inner_text())
    assert_clean(page, "opening a timeline entry")
    other = page.locator('[data-testid="stExpander"]').filter(has_not_text="delivered 2 times")
    other.first.locator("summary").click()
    other.first.locator('[data-testid="stJson"]').wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening another timeline entry")


# -- Hangup causes and A/B legs: one leg at a time, the listing's length ----------------------


def _listing_limit(page: Any, name: str) -> str:
    """The `limit` bound to the page's last listing (`name` for messages), read from its Show
    SQL switch as a manager would turn it on."""
    switch = page.locator('[data-testid="stMain"] [data-testid="stCheckbox"]').filter(
        has_text="Show SQL"
    )
    switch.last.locator("label").click()
    # The switch reruns its fragment alone: the SQL and its parameters appear beside it.
    box = page.locator('[data-testid="stMain"] [data-testid="stVerticalBlock"]').filter(
        has=page.locator('[data-testid="stCode"]')
    )
    shown = box.last.locator('[data-testid="stJson"]').last
    shown.wait_for(timeout=LOAD_MS)
    if shown.locator(".node-ellipsis").count():  # the parameters open collapsed
        shown.locator(".node-ellipsis").first.click()
    shown.get_by_text('"limit"').wait_for(timeout=LOAD_MS)
    text = visible(shown.inner_text())
    switch.last.locator("label").click()
    settle(page)
    assert '"limit"' in text, (name, text)
    return text.split('"limit"', 1)[1].split('"')[1]


def _show_rows(page: Any, choice: str) -> None:
    """Pick how many rows the page's listing shows, as a manager clicks it."""
    rows = page.locator('[data-testid="stMain"] [data-testid="stButtonGroup"]').filter(
        has_text=choice
    )
    rows.get_by_text(choice, exact=True).click()
    settle(page)


def test_causes_shows_one_leg_at_a_time_and_listings_grow_on_request(
    seeded: Seeded, page: Any
) -> None:
    page.goto(f"{seeded.server.url}/causes?range=Last+30+days", timeout=LOAD_MS)
    page.locator("h1").filter(has_text="Hangup causes").wait_for(timeout=LOAD_MS)
    settle(page)
    assert_clean(page, "opening Hangup causes")
    # One leg's figures: one Cause picker, not one per tab.
    assert page.get_by_role("combobox", name="Cause", exact=True).count() == 1
    assert _listing_limit(page, "cause-calls-a") == "100"
    legs = page.locator('[data-testid="stMain"] [data-testid="stButtonGroup"]').first
    legs.get_by_text("B legs", exact=True).click()
    settle(page)
    assert_clean(page, "B legs on Hangup causes")
    assert "leg=B+legs" in query_string(page), "the leg is in the link"
    assert page.get_by_role("combobox", name="Cause", exact=True).count() == 1
    _show_rows(page, "newest 1,000")
    assert_clean(page, "a longer listing")
    assert _listing_limit(page, "cause-calls-b") == "1000"
    charts = page.locator('[data-testid="stMain"] .vega-embed')
    assert charts.count() == 3, "one leg's three charts"

    page.goto(f"{seeded.server.url}/legs?range=Last+30+days", timeout=LOAD_MS)
    page.locator("h1").filter(has_text="A/B legs").wait_for(timeout=LOAD_MS)
    settle(page)
    # The Pairings listing is drawn once opened, then searched like the other listings.
    assert page.get_by_role("textbox", name="Search").count() == 0
    page.locator('[data-testid="stMain"] [data-testid="stExpander"] summary').filter(
        has_text="Each A leg with the B legs it dialled"
    ).click()
    search = page.get_by_role("textbox", name="Search")
    search.wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening the pairings")
    search.fill(seeded.destination)
    search.press("Enter")
    settle(page)
    assert_clean(page, "searching the pairings")
    cells = _grid_cells(page, seeded.destination)
    assert seeded.destination in cells, cells
    search.fill("")
    search.press("Enter")
    settle(page)
    assert _listing_limit(page, "pairings") == "100"
    _show_rows(page, "newest 1,000")
    assert_clean(page, "more pairings")
    assert _listing_limit(page, "pairings") == "1000"


# -- the sidebar and live mode ----------------------------------------------------------------


def test_every_sidebar_control_keeps_the_page_working(seeded: Seeded, page: Any) -> None:
    page.goto(f"{seeded.server.url}/?range=Last+30+days", timeout=LOAD_MS)
    page.locator('[data-testid="stMetric"]').first.wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening the overview")
    sidebar = page.locator('[data-testid="stSidebar"]')

    def still_renders(what: str, in_link: str | None = None) -> None:
        assert_clean(page, what)
        assert page.locator("h1").filter(has_text="Call outcomes").count() == 1, what
        page.locator('[data-testid="stMetric"]').first.wait_for(timeout=LOAD_MS)
        assert page.locator(".vega-embed").count() >= 3, what
        if in_link:
            assert in_link in query_string(page), (what, page.url)

    sidebar_select(page, "Time range", "Last 24 hours")
    still_renders("time range", "range=Last+24+hours")
    sidebar_select(page, "Bucket", "hour")
    still_renders("bucket", "bucket=hour")
    sidebar.locator('[data-testid="stButtonGroup"]').get_by_text("inbound", exact=True).click()
    still_renders("direction", "dir=inbound")
    numbers = sidebar.locator('[data-testid="stMultiSelect"]').filter(has_text="Our numbers")
    numbers.locator("input").fill(seeded.our_number)
    page.get_by_role("option", name=seeded.our_number, exact=True).click()
    page.keyboard.press("Escape")
    still_renders("our numbers", urlencode({"num": seeded.our_number}))
    destinations = sidebar.locator('[data-testid="stMultiSelect"]').filter(has_text="B destination")
    destinations.locator("input").fill(seeded.destination)
    page.get_by_role("option", name=seeded.destination, exact=True).click()
    page.keyboard.press("Escape")
    still_renders("B destination", urlencode({"dest": seeded.destination}))
    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Time zone").click()
    page.keyboard.type("Asia/Tokyo")
    page.get_by_role("option", name="Asia/Tokyo", exact=True).click()
    still_renders("time zone", "tz=Asia%2FTokyo")
    assert "(Asia/Tokyo)" in main_text(page)
    sidebar.locator('[data-testid="stCheckbox"]').filter(has_text="Live").click()
    still_renders("live on", "live=true")

    # The sidebar's state follows the manager to every page, and each page renders.
    for title in ("Hangup causes", "A/B legs", "Calls", "Receiver health", "SQL"):
        sidebar.get_by_role("link", name=title, exact=True).click()
        page.locator("h1, h2").filter(has_text=title).first.wait_for(timeout=LOAD_MS)
        assert_clean(page, f"{title} with every control set, live on")
        if title not in ("Calls", "SQL"):
            assert "inbound" in main_text(page) and "Asia/Tokyo" in main_text(page), title


# The texts of metric labels and values whose box is narrower than the text (shown cut, "…").
CUT_METRIC_TEXT = """() => [...document.querySelectorAll(
        '[data-testid="stMetricLabel"], [data-testid="stMetricValue"]')]
    .flatMap(e => [e, ...e.querySelectorAll('*')])
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText)"""
HEALTH_TILES = (
    "Since last webhook",
    "Webhooks",
    "Duplicates",
    "Rejected",
    "Repeats not stored",
    "Spool depth",
)


@pytest.mark.parametrize("width", [1440, 1280])
def test_health_tiles_are_not_cut(seeded: Seeded, browser: Any, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{seeded.server.url}/health?range=Last+30+days", timeout=LOAD_MS)
        tiles = page.locator('[data-testid="stMetric"]')
        tiles.filter(has_text="Spool depth").wait_for(timeout=LOAD_MS)
        assert_clean(page, f"Receiver health at {width} px")
        shown = tiles.all_inner_texts()
        for label in HEALTH_TILES:
            assert any(text.startswith(label) for text in shown), (label, shown)
        assert page.evaluate(CUT_METRIC_TEXT) == [], width
    finally:
        context.close()


def test_live_mode_refreshes_in_place_and_widgets_still_work(seeded: Seeded, page: Any) -> None:
    page.goto(f"{seeded.server.url}/health?range=Last+30+days&live=true", timeout=LOAD_MS)
    tile = page.locator('[data-testid="stMetric"]').filter(has_text="Webhooks")
    tile.wait_for(timeout=LOAD_MS)
    # At the sidebar's foot, partly below a 1000 px window: `choose` scrolls it into view.
    interval = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').last
    choose(page, interval, "5 s")
    assert_clean(page, "live every 5 s")
    before = tile.inner_text()
    page.evaluate("window.__notReloaded = true")

    # A new webhook (a ring of a known call: no new call, the other tests' figures stay).
    reply = httpx.post(
        f"{seeded.server.url}/plivo/ring",
        data={"CallUUID": seeded.first_calls[0], "Event": "Ring", "Note": "live-refresh"},
        timeout=30,
    )
    assert reply.status_code == 200
    deadline = time.monotonic() + 40
    while tile.inner_text() == before:
        assert time.monotonic() < deadline, "live mode did not refresh the tile"
        time.sleep(0.5)
    assert page.evaluate("window.__notReloaded === true"), "live mode reloaded the page"
    assert_clean(page, "a live refresh")

    # Widgets inside a live page: the Calls search, then the SQL Run button, still live.
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Calls", exact=True).click()
    search = page.get_by_role("textbox", name="Search")
    search.wait_for(timeout=LOAD_MS)
    search.fill(seeded.first_calls[1])
    search.press("Enter")
    shows(page, f"Call {seeded.first_calls[1]}")
    time.sleep(6)  # a refresh tick with the search in place
    assert_clean(page, "a live refresh of a searched call")
    assert page.locator("h2").filter(has_text=f"Call {seeded.first_calls[1]}").count() == 1
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="SQL", exact=True).click()
    _run_button(page).wait_for(timeout=LOAD_MS)
    page.get_by_label("Query").fill("SELECT 'live-' || count(*) AS n FROM range(7)")
    _run_button(page).click()
    page.get_by_text("1 rows in").wait_for(timeout=LOAD_MS)
    assert _grid_cells(page, "live-7") == ["live-7"]
    assert_clean(page, "Run with live mode on")


# -- planted markup ---------------------------------------------------------------------------


class _Pixel(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Pixel.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def pixel() -> Iterator[str]:
    """A local server counting fetches: an image an attacker planted would hit it."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Pixel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Pixel.hits = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def assert_no_planted_links(page: Any, planted: tuple[str, ...]) -> None:
    """No element anywhere links to, loads or frames a planted address."""
    addresses = page.evaluate(
        """() => Array.from(document.querySelectorAll('[href], [src], [srcset], [action]'))
              .map(e => [e.tagName, e.getAttribute('href') || e.getAttribute('src')
                          || e.getAttribute('srcset') || e.getAttribute('action'),
                         (e.closest('[data-testid]') || e).getAttribute('data-testid') + ': '
                         + (e.closest('[data-testid]') || e).outerHTML.slice(0, 300)])"""
    )
    bad = [
        (tag, value, where) for tag, value, where in addresses if any(p in value for p in planted)
    ]
    assert not bad, bad


TOKEN = "markup-test-auth-token"


def test_planted_markup_shows_as_text(tmp_path: Path, pixel: str, page: Any) -> None:
    image = f"![x]({pixel}/pixel.png)"
    link = "[click](http://evil.example/c)"
    call_uuid = f"call-{link}-{image}"
    cause = f"**NORMAL** <img src={pixel}/tag.png> {link}"
    direction = f"{link} :material/home:"
    forwarded = f'evil.example"><img src={pixel}/header.png>{link}'
    number = f"+1555{image}"
    planted = ("evil.example", pixel.removeprefix("http://"))

    with (
        running_server(tmp_path / "markup.duckdb", {"PLIVO_AUTH_TOKEN": TOKEN}) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        # Signed webhooks (stored) whose parameters hold markup; the hangup delivered twice.
        # Never answered, so its cause shows on Hangup causes without "include answered".
        answer = [
            ("CallUUID", call_uuid),
            ("Direction", direction),
            ("From", number),
            ("To", "+14155550100"),
            ("CallStatus", "in-progress"),
            ("Event", "StartApp"),
        ]
        hangup = [
            *answer[:4],
            ("CallStatus", "completed"),
            ("HangupCause", cause),
            ("HangupCauseName", image),
            ("HangupCauseCode", "3000"),
            ("HangupSource", link),
            ("Duration", "0"),
            ("BillDuration", "0"),
        ]
        for path, pairs in (
            ("/plivo/answer", answer),
            ("/plivo/hangup", hangup),
            ("/plivo/hangup", hangup),
        ):
            reply = signed_request(client, "POST", path, pairs, base=server.url, token=TOKEN)
            assert reply.status_code == 200, reply.text
        # Refused requests with a crafted X-Forwarded-Host: five with a forged signature,
        # five with none.
        forged = {"X-Plivo-Signature-V3": "Zm9yZ2Vk", "X-Plivo-Signature-V3-Nonce": "1"}
        for headers in [forged] * 5 + [{}] * 5:
            reply = client.post(
                "/plivo/hangup",
                data={"CallUUID": call_uuid},
                headers={**headers, "X-Forwarded-Host": forwarded},
            )
            assert reply.status_code == 403

        links = urlencode({"range": "Last 24 hours", "num": number, "dest": link})
        page.goto(f"{server.url}/health?{links}", timeout=LOAD_MS)
        advice = page.locator('[data-testid="stMain"] [data-testid="stAlert"]').filter(
            has_text="any client can send"
        )
        advice.wait_for(timeout=LOAD_MS)
        assert_clean(page, "Receiver health with refused requests")
        text = main_text(page)
        assert f"http://{forwarded}" in visible(advice.inner_text()), "the header, as text"
        assert f"PUBLIC_BASE_URL=http://{forwarded}" not in text, "no advice from a header"
        assert "Set PUBLIC_BASE_URL" not in text
        assert "without Plivo signature headers" in text
        assert number in text and link in text, "the link's num and dest show as text"
        assert_no_planted_links(page, planted)

        # The dashboard reads the rollups while their refreshes keep up, a few seconds behind
        # the webhooks (docs/data.md): a page opened before the refresh that takes this call
        # in says "No call matches" until it is opened again, as a person would.
        deadline = time.monotonic() + 60
        while True:
            page.goto(f"{server.url}/calls?range=Last+24+hours", timeout=LOAD_MS)
            page.get_by_text("most recent matching calls").wait_for(timeout=LOAD_MS)
            settle(page)
            if page.locator("h2").filter(has_text="Call call-").count() or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(1)
        shows(page, "Call call-")
        heading = page.locator("h2").filter(has_text="Call call-")
        assert_clean(page, "Calls with a planted call")
        assert visible(heading.inner_text()).strip() == f"Call {call_uuid}"
        direction_tile = page.locator('[data-testid="stMetric"]').filter(has_text="Direction")
        assert direction in visible(direction_tile.inner_text())
        text = main_text(page)
        assert cause in text and image in text and link in text
        entry = page.locator('[data-testid="stExpander"]').filter(has_text="delivered 2 times")
        assert entry.count() == 1
        entry.locator("summary").click()
        entry.locator('[data-testid="stJson"]').wait_for(timeout=LOAD_MS)
        assert cause in visible(entry.inner_text())
        assert_no_planted_links(page, planted)

        # The other pages: the link's numbers in their captions, the planted cause among
        # Hangup causes' choices.
        for path, title, query in (
            ("/", "Call outcomes", links),
            ("/causes", "Hangup causes", "range=Last+24+hours"),
            ("/legs", "A/B legs", links),
        ):
            page.goto(f"{server.url}{path}?{query}", timeout=LOAD_MS)
            page.locator("h1").filter(has_text=title).wait_for(timeout=LOAD_MS)
            assert_clean(page, title)
            if query == links:
                assert number in main_text(page) and link in main_text(page), title
            else:
                cause_box = page.get_by_role("combobox", name="Cause", exact=True)
                assert image in cause_box.input_value()
            assert_no_planted_links(page, planted)

    time.sleep(0.5)
    assert _Pixel.hits == [], "the browser fetched a planted image"


# -- completeness against Plivo's call records --------------------------------------------------


def _tiles(page: Any) -> dict[str, str]:
    """Metric label -> value, as shown."""
    return {
        visible(metric.locator('[data-testid="stMetricLabel"]').inner_text()).strip(): visible(
            metric.locator('[data-testid="stMetricValue"]').inner_text()
        ).strip()
        for metric in page.locator('[data-testid="stMetric"]').all()
    }


@pytest.mark.parametrize("width", [1440, 1280])
def test_health_shows_completeness_from_call_records(
    tmp_path: Path, browser: Any, width: int
) -> None:
    from datetime import UTC, datetime, timedelta

    from callstatus.core.db import Database
    from tests.dashboard.completeness_sample import HAND_PER_DAY, hand_counts, store_sample
    from tests.factories import read_file

    db = tmp_path / "records.duckdb"
    day0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    database = Database(db)
    store_sample(database, day0)
    database.close()
    [counts] = read_file(
        db,
        "SELECT count(*), count(*) FILTER (WHERE source IN ('cdr', 'both')), "
        "count(*) FILTER (WHERE source IN ('webhooks', 'both')), "
        "count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'), "
        "count(*) FILTER (WHERE source = 'cdr') FROM calls",
    )
    [(webhooks,)] = read_file(db, "SELECT count(*) FROM webhook_events WHERE kind <> 'cdr'")
    everything = {"start": day0 - timedelta(days=9), "end": day0 + timedelta(days=9)}
    per_day = hand_counts(db, HAND_PER_DAY, {**everything, "tz": "America/New_York"})
    labels = (
        "Calls",
        "In Plivo's records",
        "Seen by webhook",
        "Completed from records",
        "Added from records",
    )
    # A tall window: the whole section fits, for the picture.
    context = browser.new_context(viewport={"width": width, "height": 2200})
    try:
        page = context.new_page()
        with running_server(db) as server:
            page.goto(
                f"{server.url}/health?range=Last+7+days&tz=America%2FNew_York", timeout=LOAD_MS
            )
            page.locator('[data-testid="stMetric"]').filter(has_text="Missed share").wait_for(
                timeout=LOAD_MS
            )
            assert_clean(page, "Receiver health with call records")
            shown = _tiles(page)
            assert [shown[label] for label in labels] == [f"{n:,}" for n in counts]
            assert shown["Missed share"] == f"{100 * counts[4] / counts[0]:.1f}%" == "28.6%"
            assert shown["Webhooks"] == str(webhooks)
            assert page.evaluate(CUT_METRIC_TEXT) == [], width
            text = main_text(page)
            assert "Last reconcile run ok at" in text, text
            assert "12 records read, 12 new" in text
            # The per-day table, row by row (the grid's cells hold the raw values).
            cells = _grid_cells(page, f"{per_day[0][0]} 00:00:00")
            rows = [cells[i : i + 7] for i in range(0, 7 * len(per_day), 7)]
            assert [row[:6] for row in rows] == [
                [f"{day} 00:00:00", *map(str, figures)] for day, *figures in per_day
            ]
            # The share in percent points (shown with one decimal; the CSV keeps fractions).
            assert [float(row[6]) for row in rows] == pytest.approx(
                [100 * added / calls for _, calls, *_, added in per_day]
            )
            assert len(per_day) >= 2 and sum(row[1] for row in per_day) == counts[0]
            section = page.locator("h3").filter(has_text="Completeness").bounding_box()
            after = page.locator("h3").filter(has_text="Webhooks per kind").bounding_box()
            assert section and after and after["y"] > section["y"]
            shot = tmp_path / f"health-{width}.png"
            page.screenshot(
                path=str(shot),
                clip={
                    "x": section["x"] - 24,
                    "y": section["y"] - 16,
                    "width": width - section["x"] + 8,
                    "height": after["y"] - section["y"],
                },
            )
            assert shot.stat().st_size > 10_000
    finally:
        context.close()
