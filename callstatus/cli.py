"""The `callstatus` command: serve, simulate, demo, seed, sql, export."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from callstatus.core.settings import Settings, SettingsError, get_settings


def _settings(db: Path | None = None) -> Settings:
    settings = get_settings()
    if db is not None:
        settings = settings.model_copy(update={"db": db})
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from callstatus.app.server import serve

    serve(_settings(args.db), args.host, args.port)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from callstatus.simulator.simulate import run_simulate

    return run_simulate(args, _settings())


def cmd_demo(args: argparse.Namespace) -> int:
    from callstatus.simulator.simulate import run_demo

    return run_demo(args, _settings(args.db))


def cmd_seed(args: argparse.Namespace) -> int:
    from callstatus.simulator.seed import run_seed

    return run_seed(args, _settings(args.db))


def cmd_sql(args: argparse.Namespace) -> int:
    from callstatus.analyst.commands import run_sql

    return run_sql(args, _settings(args.db))


def cmd_export(args: argparse.Namespace) -> int:
    from callstatus.analyst.commands import run_export

    return run_export(args, _settings(args.db))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callstatus",
        description="Plivo voice webhooks into DuckDB, and a dashboard of how calls end.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="receive webhooks and serve the dashboard")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--db", type=Path, default=None, help="DuckDB file (CALLSTATUS_DB)")
    serve.set_defaults(func=cmd_serve)

    simulate = sub.add_parser("simulate", help="send realistic signed Plivo traffic to a server")
    simulate.add_argument("--url", default="http://127.0.0.1:8000")
    simulate.add_argument("--calls", type=int, default=100)
    simulate.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    simulate.add_argument("--speed", type=float, default=0.0,
                          help="call-time speed-up; 0 sends each call's events back to back")
    simulate.add_argument("--seed", type=int, default=None, help="random seed")
    simulate.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    simulate.add_argument("--public-url", default=None,
                          help="base URL the server verifies signatures against "
                          "(default: PUBLIC_BASE_URL, else --url)")
    simulate.add_argument("--traffic", type=Path, default=None,
                          help="JSON file overriding the traffic model's settings")
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="serve plus simulated traffic, for a first look")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--db", type=Path, default=None)
    demo.add_argument("--rate", type=float, default=1.0, help="new calls per second")
    demo.set_defaults(func=cmd_demo)

    seed = sub.add_parser("seed", help="write simulated calls straight into a database")
    seed.add_argument("--db", type=Path, default=None)
    seed.add_argument("--calls", type=int, default=10_000)
    seed.add_argument("--days", type=float, default=30.0)
    seed.add_argument("--seed", type=int, default=None, help="random seed")
    seed.add_argument("--traffic", type=Path, default=None,
                      help="JSON file overriding the traffic model's settings")
    seed.set_defaults(func=cmd_seed)

    sql = sub.add_parser("sql", help="run a read-only SQL query over the call data")
    sql.add_argument("query")
    sql.add_argument("--db", type=Path, default=None)
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    sql.add_argument("--out", type=Path, default=None)
    sql.set_defaults(func=cmd_sql)

    export = sub.add_parser("export", help="export every table and view to Parquet or CSV")
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--db", type=Path, default=None)
    export.add_argument("--since", default=None, help="first day (YYYY-MM-DD, UTC)")
    export.add_argument("--until", default=None, help="last day (YYYY-MM-DD, UTC)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        for error in exc.errors():
            name = error["loc"][0] if error["loc"] else "setting"
            print(f"callstatus: invalid {name}: {error['msg']}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"callstatus: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
