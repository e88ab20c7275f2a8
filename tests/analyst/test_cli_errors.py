"""`callstatus` as a user types it: every expected failure is one line on stderr, never a traceback.

Each case runs `python -m callstatus.cli` as a real process; the cases run a few at a time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from callstatus import cli
from callstatus.core.db import Database
from tests.factories import store

RUNAWAY = "SELECT length(regexp_replace(repeat('a', 300000000), 'a', 'bb', 'g'))"
PREFIX = "callstatus: error: "


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    message: str  # in the one line on stderr ("" for a success)
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float


def _env(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLSTATUS_", "PLIVO_"))}
    env.update(extra)
    return env


def callstatus(
    *argv: str, cwd: Path, env: tuple[tuple[str, str], ...] = (), timeout: float = 60
) -> Outcome:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "callstatus.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(env),
        timeout=timeout,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a few webhooks, a file that is not a database, a file in the way."""
    path = tmp_path_factory.mktemp("cli")
    database = Database(path / "callstatus.duckdb")
    store(database, [("answer", {"CallUUID": f"c{i}", "Direction": "inbound"}) for i in range(5)])
    database.close()
    (path / "notes.txt").write_text("not a database\n")
    (path / "tmp").mkdir()
    return path


def cases(folder: Path) -> dict[str, Case]:
    db = str(folder / "callstatus.duckdb")
    missing = str(folder / "nothing.duckdb")
    blocked = folder / "notes.txt"  # a file where a folder should be
    return {
        "export until the last day": Case(
            ("export", "--db", db, "--out", str(folder / "all"), "--until", "9999-12-31"), 0, ""
        ),
        "bad day": Case(
            ("export", "--db", db, "--out", str(folder / "x"), "--since", "yesterday"),
            2,
            "--since wants a day as YYYY-MM-DD",
        ),
        "unknown column": Case(
            ("sql", "--db", db, "SELECT nope FROM calls"), 1, "SQL error: Binder Error"
        ),
        "missing database (sql)": Case(("sql", "--db", missing, "SELECT 1"), 1, "no database at"),
        "not a database": Case(("sql", "--db", str(blocked), "SELECT 1"), 1, "cannot open"),
        "unwritable sql --out": Case(
            ("sql", "--db", db, "--format", "csv", "--out", str(blocked / "r.csv"), "SELECT 1"),
            1,
            "does not exist",
        ),
        "unwritable export --out": Case(
            ("export", "--db", db, "--out", str(blocked / "export")), 1, "cannot write to"
        ),
        "parquet without --out": Case(
            ("sql", "--db", db, "--format", "parquet", "SELECT 1"), 2, "add --out FILE"
        ),
        "bad memory limit": Case(
            ("sql", "--db", db, "--memory-limit", "lots", "SELECT 1"), 2, "--memory-limit wants"
        ),
        "unknown option": Case(("sql", "--bogus", "SELECT 1"), 2, "unrecognized arguments"),
        "no command": Case((), 2, "required: COMMAND"),
        "bad setting": Case(
            ("sql", "SELECT 1"),
            2,
            "CALLSTATUS_MEMORY_LIMIT",
            (("CALLSTATUS_MEMORY_LIMIT", "lots"),),
        ),
        "time limit in one function call": Case(
            (
                "sql",
                "--db",
                db,
                "--format",
                "csv",
                "--out",
                str(folder / "never.csv"),
                "--time-limit",
                "1",
                RUNAWAY,
            ),
            1,
            "stopped after 1 s (--time-limit)",
            (("TMPDIR", str(folder / "tmp")),),  # to see that the temporary files go
        ),
    }


@pytest.fixture(scope="module")
def outcomes(folder: Path) -> dict[str, Outcome]:
    every = cases(folder)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(callstatus, *case.argv, cwd=folder, env=case.env)
            for name, case in every.items()
        }
        return {name: future.result() for name, future in futures.items()}


NAMES = list(cases(Path("/")))


@pytest.mark.parametrize("name", NAMES)
def test_one_line_and_the_right_status(
    name: str, folder: Path, outcomes: dict[str, Outcome]
) -> None:
    case = cases(folder)[name]
    outcome = outcomes[name]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == case.code, outcome.stderr
    if case.code == 0:
        assert PREFIX not in outcome.stderr
        return
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith(PREFIX)
    assert case.message in lines[0]


def test_the_time_limit_ends_even_one_long_function_call(
    folder: Path, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes["time limit in one function call"]
    # The limit, the grace for the interrupt, and Python's start on a busy machine.
    assert outcome.seconds < 1 + 1 + 4, outcome.seconds
    assert not (folder / "never.csv").exists()  # no half-written --out
    assert list((folder / "tmp").iterdir()) == []  # DuckDB's spill folder and the result's


def test_export_until_the_last_day_exports_everything(
    folder: Path, outcomes: dict[str, Outcome]
) -> None:
    assert outcomes["export until the last day"].code == 0
    assert len(pd.read_parquet(folder / "all" / "webhook_events")) == 5


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_closed_pipe_ends_quietly(folder: Path, fmt: str) -> None:
    db = folder / "callstatus.duckdb"
    query = "SELECT range, repeat('x', 100) AS pad FROM range(300000)"
    script = (
        f"{shlex.quote(sys.executable)} -m callstatus.cli sql --db {shlex.quote(str(db))} "
        f"--format {fmt} {shlex.quote(query)} 2>stderr-{fmt}.txt | head -1; "
        'echo "status=${PIPESTATUS[0]}"'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=folder, env=_env(), timeout=60
    )
    first, status = done.stdout.splitlines()
    assert first  # head got its line
    assert status in ("status=0", "status=141")
    assert (folder / f"stderr-{fmt}.txt").read_text() == ""


def test_a_closed_pipe_is_status_141_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def closed(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)  # pytest holds stdout
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), "sql", closed))
    assert cli.main(["sql", "SELECT 1"]) == cli.EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def _with_func(
    parser: argparse.ArgumentParser, command: str, func: Callable[[object], int]
) -> argparse.ArgumentParser:
    """The real parser, with `command` running `func`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.choices[command].set_defaults(func=func)
    return parser


def test_an_unexpected_error_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("the disk\nis on fire")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), "sql", broken))
    assert cli.main(["sql", "SELECT 1"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"{PREFIX}unexpected RuntimeError: the disk; is on fire "
        "(run with --debug for the traceback)\n"
    )
    for argv in (["--debug", "sql", "SELECT 1"], ["sql", "--debug", "SELECT 1"]):
        with pytest.raises(RuntimeError, match="on fire"):
            cli.main(argv)


@pytest.fixture
def holder(folder: Path) -> Iterator[None]:
    """Another process holds the database the way a server does, with no snapshot written."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(60)",
            str(folder / "callstatus.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_a_locked_database_is_explained(folder: Path, holder: None) -> None:
    outcome = callstatus("sql", "--db", str(folder / "callstatus.duckdb"), "SELECT 1", cwd=folder)
    assert outcome.code == 1 and "Traceback" not in outcome.stderr
    (line,) = outcome.stderr.splitlines()
    assert line.startswith(PREFIX) and "held by another process" in line
    assert "try again" in line
