"""The test harness's server start survives a port taken between picking it and binding it."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests import servers


def test_a_server_whose_picked_port_was_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, servers.free_port()])
        monkeypatch.setattr(servers, "free_port", lambda: next(picks))

        server = servers.start_server(tmp_path / "callstatus.duckdb")
        try:
            assert server.url != f"http://127.0.0.1:{busy}"
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        finally:
            server.stop(signal.SIGKILL)

        with pytest.raises(servers.PortTaken, match="address already in use"):
            servers.start_server(tmp_path / "callstatus.duckdb", port=busy)
