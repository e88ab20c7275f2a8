"""Driving the dashboard in Chromium: waiting for Streamlit to finish a run, checking that no
exception box or traceback shows, and reading the page as a person sees it."""

from __future__ import annotations

import time
from typing import Any

from callstatus.dashboard.text import WORD_JOINER

LOAD_MS = 60_000
EXCEPTION = '[data-testid="stException"]'


def settle(page: Any, timeout: float = 60) -> None:
    """Wait until Streamlit has finished the current run (app or fragment) and nothing on the
    page is stale."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        assert time.monotonic() < deadline, "the dashboard never finished running"
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        stale = page.locator('[data-stale="true"]').count()
        quiet = quiet + 1 if state == "notRunning" and not stale else 0
        time.sleep(0.15)


def assert_clean(page: Any, what: str) -> None:
    """No Streamlit exception box, no traceback text, after `what`."""
    settle(page)
    assert page.locator(EXCEPTION).count() == 0, (what, page.locator(EXCEPTION).all_inner_texts())
    body = page.locator("body").inner_text()
    for text in ("StreamlitAPIException", "Traceback (most recent call last)"):
        assert text not in body, (what, text)


def visible(text: str) -> str:
    """Text as a reader sees it: without the invisible word joiners that keep URLs unlinked."""
    return text.replace(WORD_JOINER, "")


def main_text(page: Any) -> str:
    return visible(str(page.locator('[data-testid="stMain"]').inner_text()))


def choose(page: Any, select: Any, option: str, tries: int = 3) -> None:
    """Pick `option` in the selectbox `select` as a person does: open its list, click it.

    A run that ends while the list is open draws the select again and closes the list, so
    the click waits for the run to end, and opens the list again if it closed before the
    option showed."""
    wanted = page.get_by_role("option", name=option, exact=True)
    for attempt in range(tries):
        settle(page)
        # A select cut by the window's edge opens no list: scrolled into view first.
        select.evaluate("e => e.scrollIntoView({block: 'center'})")
        select.click()
        try:
            wanted.wait_for(timeout=5_000)
        except Exception:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
            continue
        wanted.click()
        return
