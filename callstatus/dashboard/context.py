"""The dashboard's one way to the server in its process and to the settings.

Streamlit runs each page as a script, so pages cannot be handed parameters: they ask here.
With a server in this process (`callstatus serve`) its handle gives the settings it runs with,
its database and its rollup job; without one (`streamlit run`, AppTest) the configured settings.
"""

from __future__ import annotations

from callstatus.core import server as core_server
from callstatus.core.server import ServerHandle
from callstatus.core.settings import Settings, get_settings


def server() -> ServerHandle | None:
    """The server running in this process, if any."""
    return core_server.installed()


def settings() -> Settings:
    """The running server's settings, else the configured ones."""
    handle = server()
    return handle.settings if handle is not None else get_settings()
