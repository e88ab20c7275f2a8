"""`callstatus serve` on a port another process listens on stops at once with one line saying so,
before it opens the database or starts a job (uvicorn alone would find out after all of that)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from callstatus.app.server import check_port_free
from callstatus.core.errors import CommandError
from tests.factories import run_cli


def test_serve_on_a_taken_port_says_so_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "callstatus.duckdb"
        done = run_cli("serve", "--port", str(port), "--db", str(db), cwd=tmp_path)
    assert done.returncode == 1, done
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}: address already in use" in line
    assert "--port" in line
    assert not db.exists()  # nothing was opened or created


def test_a_free_port_passes_and_a_bad_host_is_explained() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", 0)  # any free port: nothing to check
    with pytest.raises(CommandError, match=r"cannot listen on no-such-host\.invalid"):
        check_port_free("no-such-host.invalid", port)
