"""Opening databases: telling "a running server holds the file" from other failures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from callstatus.core.db import connect, held_by_another_process

HOLD = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A database file another process holds open (as `callstatus serve` does)."""
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == b"held\n"
        yield path
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_held_by_another_process_is_recognised(held: Path, read_only: bool) -> None:
    with pytest.raises(duckdb.Error) as caught:
        connect(held, read_only=read_only)
    assert held_by_another_process(caught.value)


def test_a_file_that_is_not_a_database_is_not_taken_for_a_held_one(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("not a database\n" * 100)
    with pytest.raises(duckdb.Error) as caught:
        connect(path, read_only=True)
    assert not held_by_another_process(caught.value)
