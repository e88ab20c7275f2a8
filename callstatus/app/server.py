"""Running the app under uvicorn: one worker, uvloop/httptools, exit 0 after SIGTERM."""

from __future__ import annotations

import errno
import importlib.util
import logging
import signal
import socket
import sys
from types import FrameType

import duckdb
import uvicorn

from callstatus.app.asgi import build_app
from callstatus.app.runtime import Role, check_role
from callstatus.core.errors import CommandError
from callstatus.core.settings import Settings
from callstatus.receiver.protocol import Limits, protocol_class, raise_fd_limit

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SWITCH_INTERVAL_S = 0.0005


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises the captured signal after shutdown, which turns a clean
        # SIGTERM stop into exit status 143; a drained, checkpointed stop is a success.
        if sig == signal.SIGTERM:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            return
        super().handle_exit(sig, frame)


def configure_streamlit() -> None:
    from streamlit import config

    for key, value in {
        "browser.gatherUsageStats": False,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "client.toolbarMode": "viewer",
        "theme.base": "light",
    }.items():
        config.set_option(key, value)


def check_port_free(host: str, port: int) -> None:
    """Refuse, before anything starts, to serve on an address another process listens on (uvicorn
    would find out only after the database, its jobs and the dashboard's warm-up had started)."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds (asyncio's reuse_address): a port in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise CommandError(
                        f"cannot listen on {host}:{port}: address already in use by another "
                        "process: stop it, or pass --port with a free port (and point Plivo's "
                        "URLs at it)"
                    ) from exc
                raise CommandError(
                    f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                ) from exc


def check_replica_file(settings: Settings, role: Role) -> None:
    """In clustered mode, refuse at once to keep as a replica a file a single server wrote (its
    sync would refuse it anyway, leaving a dashboard that never updates)."""
    if not settings.clustered or role == "receiver" or not settings.db.is_file():
        return
    from callstatus.cluster.sync import foreign_webhooks, not_a_replica

    try:
        con = duckdb.connect(str(settings.db), read_only=True)
    except duckdb.Error:
        return  # held, or not a database: opening it for the server says what is wrong
    try:
        count = foreign_webhooks(con)
    finally:
        con.close()
    if count:
        raise CommandError(not_a_replica(str(settings.db), count))


def serve(settings: Settings, host: str, port: int, role: Role = "all") -> None:
    settings.check_serving(host)
    check_role(settings, role)
    check_port_free(host, port)
    check_replica_file(settings, role)
    if role != "receiver":
        configure_streamlit()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # The writer thread hands the GIL back and forth with the event loop on every batch;
    # a shorter switch interval keeps a commit from waiting 5 ms for its turn.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    max_connections = raise_fd_limit(settings.max_connections)
    config = uvicorn.Config(
        build_app(settings, (host, port), role),
        host=host,
        port=port,
        workers=1,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools, with the request deadline, head size limit and connection cap added.
        http=protocol_class(Limits(settings.request_timeout_s, max_connections)),
        lifespan="on",
        access_log=False,
        # Idle time allowed between requests on a kept-alive connection; uvicorn's is typed
        # int but any number of seconds works (it is handed to loop.call_later).
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=10,
        ws_ping_interval=20,
    )
    _Server(config).run()
