"""The server running in this process, as the dashboard sees it.

Streamlit runs each dashboard page as a script, so a page cannot be handed parameters. The
process that serves the dashboard (`callstatus.app`) installs a `ServerHandle` here while it
runs; the dashboard reads it through its one accessor, `callstatus.dashboard.context`. Without a
server in this process (`streamlit run`, AppTest) there is none, and the dashboard opens the
configured database file read-only instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callstatus.core.db import Database
from callstatus.core.rollups import RollupJob
from callstatus.core.settings import Settings


@dataclass(frozen=True)
class ReceiverStatus:
    """What the receiver says about itself on Receiver health and /healthz."""

    spool_depth: int
    writer_queue: int
    last_error: str | None  # the write path's failure, if it is failing now
    snapshot_age_s: float | None


@dataclass(frozen=True)
class ServerHandle:
    settings: Settings
    database: Database
    rollups: RollupJob | None
    status: Callable[[], ReceiverStatus]
    # Queues a test message to the named alert channel, tries it, and returns one line to show;
    # None while the server runs without alerts.
    send_test: Callable[[str], str] | None = None


_installed: ServerHandle | None = None


def install(handle: ServerHandle | None) -> None:
    """Called by the process that serves the dashboard: at start, and with None at stop."""
    global _installed
    _installed = handle


def installed() -> ServerHandle | None:
    """The server running in this process, if any."""
    return _installed
