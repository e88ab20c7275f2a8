"""The `callstatus` command: serve, simulate, demo, seed, sql, export, reconcile, erase, import,
alerts.

Errors the user can act on end as one line on stderr, `callstatus: error: ...` with what to do
next: exit status 2 for a wrong command line or setting, 1 for anything else. A closed stdout
(`callstatus sql ... | head`) ends the command quietly, as for other Unix tools (status 141).
`--debug` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from callstatus.core.errors import CommandError, one_line
from callstatus.core.settings import Settings, SettingsError, get_settings

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE
EXIT_INTERRUPTED = 128 + 2


class Parser(argparse.ArgumentParser):
    """argparse's errors as one line in callstatus's form, pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"callstatus: error: {message} (see `{self.prog} --help`)\n")


def _settings(db: Path | None = None) -> Settings:
    settings = get_settings()
    if db is not None:
        settings = settings.model_copy(update={"db": db})
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from callstatus.app.server import serve

    serve(_settings(args.db), args.host, args.port, args.role)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from callstatus.simulator.simulate import SimulateOptions, run_simulate

    options = SimulateOptions(
        url=args.url,
        calls=args.calls,
        rate=args.rate,
        speed=args.speed,
        seed=args.seed,
        concurrency=args.concurrency,
        public_url=args.public_url,
        traffic=args.traffic,
        lose_calls=args.lose_calls,
        lose_hangups=args.lose_hangups,
        records_out=args.records_out,
        phlo=args.phlo,
    )
    return run_simulate(options, _settings())


def cmd_demo(args: argparse.Namespace) -> int:
    from callstatus.app.demo import run_demo

    return run_demo(_settings(args.db), host=args.host, port=args.port, rate=args.rate)


def cmd_seed(args: argparse.Namespace) -> int:
    from callstatus.simulator.seed import SeedOptions, run_seed

    options = SeedOptions(calls=args.calls, days=args.days, seed=args.seed, traffic=args.traffic)
    return run_seed(options, _settings(args.db))


def cmd_sql(args: argparse.Namespace) -> int:
    from callstatus.analyst.commands import SqlOptions, run_sql

    options = SqlOptions(
        query=args.query,
        format=args.format,
        out=args.out,
        time_limit=args.time_limit,
        memory_limit=args.memory_limit,
    )
    return run_sql(options, _settings(args.db))


def cmd_export(args: argparse.Namespace) -> int:
    from callstatus.analyst.export import ExportOptions, run_export

    options = ExportOptions(out=args.out, format=args.format, since=args.since, until=args.until)
    return run_export(options, _settings(args.db))


def cmd_reconcile(args: argparse.Namespace) -> int:
    from callstatus.app.reconcile_command import ReconcileOptions, run_reconcile

    options = ReconcileOptions(since=args.since, days=args.days, until=args.until)
    return run_reconcile(options, _settings(args.db))


def cmd_erase(args: argparse.Namespace) -> int:
    from callstatus.app.erase_command import EraseOptions, run_erase

    return run_erase(EraseOptions(args.number, args.dry_run), _settings(args.db))


def cmd_import(args: argparse.Namespace) -> int:
    from callstatus.app.import_command import ImportOptions, run_import

    return run_import(ImportOptions(args.source), _settings())


def cmd_alerts_check(args: argparse.Namespace) -> int:
    from callstatus.alerts.check import run_check

    return run_check(args.file, _settings(args.db))


DEBUG_HELP = "show the traceback of an unexpected error"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="callstatus",
        description="Plivo voice webhooks into DuckDB, and a dashboard of how calls end.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # --debug after the command too; SUPPRESS keeps a value given before it.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    serve = sub.add_parser(
        "serve", parents=[common], help="receive webhooks and serve the dashboard"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--db", type=Path, default=None, help="DuckDB file (CALLSTATUS_DB)")
    serve.add_argument(
        "--role",
        choices=("all", "receiver", "dashboard"),
        default="all",
        help="clustered mode (CALLSTATUS_POSTGRES_URL): receiver takes webhooks into PostgreSQL "
        "only; dashboard serves the dashboard over a replica; all does both (default)",
    )
    serve.set_defaults(func=cmd_serve)

    simulate = sub.add_parser(
        "simulate", parents=[common], help="send realistic signed Plivo traffic to a server"
    )
    simulate.add_argument("--url", default="http://127.0.0.1:8000")
    simulate.add_argument("--calls", type=int, default=100)
    simulate.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    simulate.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="call-time speed-up; 0 sends each call's events back to back",
    )
    simulate.add_argument("--seed", type=int, default=None, help="random seed")
    simulate.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    simulate.add_argument(
        "--public-url",
        default=None,
        help="base URL the server verifies signatures against "
        "(default: PUBLIC_BASE_URL, else --url)",
    )
    simulate.add_argument(
        "--traffic",
        type=Path,
        default=None,
        help="JSON file overriding the traffic model's settings",
    )
    simulate.add_argument(
        "--lose-calls",
        type=float,
        default=0.0,
        help="share of calls none of whose webhooks is sent (0-1), to try reconciliation",
    )
    simulate.add_argument(
        "--lose-hangups",
        type=float,
        default=0.0,
        help="share of other calls whose A-leg hangup webhook is not sent (0-1)",
    )
    simulate.add_argument(
        "--records-out",
        type=Path,
        default=None,
        help="write every call's Plivo call records here, one JSON object a line",
    )
    simulate.add_argument(
        "--phlo",
        type=float,
        default=0.0,
        help="share of Dials reported through PHLO to /plivo/phlo instead of a Dial action (0-1)",
    )
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo", parents=[common], help="serve plus simulated traffic, for a first look"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--db", type=Path, default=None)
    demo.add_argument("--rate", type=float, default=1.0, help="new calls per second")
    demo.set_defaults(func=cmd_demo)

    seed = sub.add_parser(
        "seed", parents=[common], help="write simulated calls straight into a database"
    )
    seed.add_argument("--db", type=Path, default=None)
    seed.add_argument("--calls", type=int, default=10_000)
    seed.add_argument("--days", type=float, default=30.0)
    seed.add_argument("--seed", type=int, default=None, help="random seed")
    seed.add_argument(
        "--traffic",
        type=Path,
        default=None,
        help="JSON file overriding the traffic model's settings",
    )
    seed.set_defaults(func=cmd_seed)

    sql = sub.add_parser(
        "sql",
        parents=[common],
        help="run a read-only SQL query over the call data",
        description="Run a read-only SQL query over the database, or over the server's snapshot "
        "while a server holds the database. CSV and JSON (stdout or --out FILE) and Parquet "
        "get every row: results are not limited in rows or bytes here, unlike the dashboard's "
        "SQL page; --format table shows a preview. DuckDB's memory is bounded (--memory-limit; "
        "beyond it DuckDB spills to a temporary folder).",
    )
    sql.add_argument("query")
    sql.add_argument("--db", type=Path, default=None)
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    sql.add_argument("--out", type=Path, default=None, help="write the result to this file")
    sql.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop the query after SECONDS, whatever it is doing (default: none)",
    )
    sql.add_argument(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="DuckDB's memory, e.g. 4GB (default: 2GB)",
    )
    sql.set_defaults(func=cmd_sql)

    export = sub.add_parser(
        "export", parents=[common], help="export every table and view to Parquet or CSV"
    )
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--db", type=Path, default=None)
    export.add_argument("--since", default=None, help="first day (YYYY-MM-DD, UTC)")
    export.add_argument("--until", default=None, help="last day (YYYY-MM-DD, UTC)")
    export.set_defaults(func=cmd_export)

    erase = sub.add_parser(
        "erase",
        parents=[common],
        help="remove every call mentioning one number (an erasure request)",
        description="Remove every call in which NUMBER appears (its webhooks, call records, PHLO "
        "reports, rollup rows, refused requests and archived rows), write a new snapshot, and "
        "record the erasure in the erasures table by a pseudonym. Prints the rows per table. "
        "Through the running server when one holds the database.",
    )
    erase.add_argument("--number", required=True, help="the number, e.g. +14155550107")
    erase.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    erase.add_argument("--db", type=Path, default=None, help="DuckDB file (CALLSTATUS_DB)")
    erase.set_defaults(func=cmd_erase)

    reconcile = sub.add_parser(
        "reconcile",
        parents=[common],
        help="fill gaps from Plivo's call records (--days 90 imports the history)",
        description="Read Plivo's call records (Call API, last 90 days) of the calls that ended "
        "in a window, and store those not stored yet: calls whose webhooks were lost are added, "
        "calls whose hangup webhook was lost are completed. Through the running server when one "
        "holds the database.",
    )
    reconcile.add_argument("--db", type=Path, default=None, help="DuckDB file (CALLSTATUS_DB)")
    window = reconcile.add_mutually_exclusive_group()
    window.add_argument(
        "--since", default=None, help="from this end time (YYYY-MM-DD[THH:MM], UTC)"
    )
    window.add_argument("--days", type=float, default=None, help="this many days back (default 1)")
    reconcile.add_argument(
        "--until",
        default=None,
        help="up to this end time (default: now minus CALLSTATUS_RECONCILE_GRACE)",
    )
    reconcile.set_defaults(func=cmd_reconcile)

    importing = sub.add_parser(
        "import",
        parents=[common],
        help="copy a single server's database into clustered mode's PostgreSQL",
        description="Copy every webhook, call record and refused request of a single server's "
        "database (FILE) into the PostgreSQL of CALLSTATUS_POSTGRES_URL, skipping rows already "
        "there, so that clustered mode's dashboards show the calls taken before the switch. The "
        "server that wrote FILE must be stopped. An interrupted import is run again and goes on "
        "where it stopped.",
    )
    importing.add_argument(
        "--from", dest="source", type=Path, required=True, metavar="FILE", help="DuckDB file"
    )
    importing.set_defaults(func=cmd_import)

    alerts = sub.add_parser("alerts", parents=[common], help="alert rules and reports")
    alerts_sub = alerts.add_subparsers(
        dest="alerts_command", required=True, metavar="COMMAND", parser_class=Parser
    )
    check = alerts_sub.add_parser(
        "check",
        parents=[common],
        help="validate the rules file and print each rule's value now",
        description="Read the rules file (FILE, else CALLSTATUS_ALERTS, else ./alerts.toml), "
        "refuse it with the line, rule and key at fault, or print each rule's current value "
        "and each report's next time (from the snapshot while a server runs).",
    )
    check.add_argument("file", type=Path, nargs="?", default=None, metavar="FILE")
    check.add_argument("--db", type=Path, default=None, help="DuckDB file (CALLSTATUS_DB)")
    check.set_defaults(func=cmd_alerts_check)
    return parser


def _error(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may be gone too
        print(f"callstatus: error: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final flush
    does not complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = error["loc"][0] if error["loc"] else "setting"
            problems.append(f"invalid {name}: {error['msg']}")
        _error("; ".join(problems) + " (fix the environment or .env)")
        return 2
    except SettingsError as exc:
        _error(one_line(exc))
        return 2
    except CommandError as exc:
        _error(one_line(exc))
        return exc.exit_code
    except Exception as exc:
        if args.debug:
            raise
        _error(
            f"unexpected {type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
