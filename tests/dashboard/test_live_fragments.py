"""Each page's live fragment has a name of its own (Streamlit runs every page as `__main__`)."""

from __future__ import annotations

from collections.abc import Callable

from callstatus.dashboard import controls


def _page_render(page: str, ran: list[str]) -> Callable[[], None]:
    """A page file's `render`, defined as Streamlit runs a page: in a module named __main__."""
    source = f"def render():\n    ran.append({page!r})\n"
    namespace: dict[str, object] = {"__name__": "__main__", "ran": ran}
    exec(compile(source, f"/srv/callstatus/dashboard/screens/{page}.py", "exec"), namespace)
    render = namespace["render"]
    assert callable(render)
    return render  # type: ignore[no-any-return]


def test_pages_bodies_get_names_of_their_own() -> None:
    ran: list[str] = []
    health, calls = _page_render("health", ran), _page_render("calls", ran)
    # As Streamlit names fragments (module, then name): the same for both pages as written.
    assert (health.__module__, health.__qualname__) == (calls.__module__, calls.__qualname__)
    named = [controls._named_for_its_page(body) for body in (health, calls)]
    names = [(run.__module__, run.__qualname__) for run in named]
    assert names == [
        ("callstatus.dashboard.screens.health", "health.render"),
        ("callstatus.dashboard.screens.calls", "calls.render"),
    ]
    for run in named:
        run()
    assert ran == ["health", "calls"]
