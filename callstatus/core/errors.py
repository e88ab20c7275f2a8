"""Errors the `callstatus` command reports as one line on stderr, without a traceback."""

from __future__ import annotations


class CommandError(Exception):
    """A problem the user can fix, reported as one line; exit status 1."""

    exit_code = 1


class UsageError(CommandError):
    """The command line itself is wrong (a bad date, a missing option); exit status 2."""

    exit_code = 2


def one_line(text: object) -> str:
    """`text` on one line: DuckDB's messages span several (a caret under the query, hints)."""
    lines = [line.strip() for line in str(text).splitlines()]
    kept = [line for line in lines if line and set(line) != {"^"}]
    return "; ".join(kept) if kept else "(no message)"


def exception_line(exc: BaseException) -> str:
    """An exception as one line with its type: `OperationalError: connection refused …`."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
