"""TYPED_COLUMNS, the one list of typed copies, agrees with the schema the migrations build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from callstatus.core.db import connect, migrate, migrations
from callstatus.core.storage import INBOX_COLUMNS
from callstatus.core.typed import TYPED_COLUMNS

# The columns every webhook row has before its typed copies (migration 0001).
BASE_COLUMNS = (
    "event_id",
    "received_at",
    "kind",
    "http_method",
    "params",
    "signature",
    "duplicate",
    "params_hash",
)


def _spelled(con: duckdb.DuckDBPyConnection, sql_type: str) -> str:
    """A type as DESCRIBE spells it (TIMESTAMPTZ is 'TIMESTAMP WITH TIME ZONE')."""
    row = con.execute(f"SELECT typeof(NULL::{sql_type})").fetchone()
    assert row is not None
    return str(row[0])


def _described(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {relation}").fetchall()]


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = connect(tmp_path / "fresh.duckdb")
    migrate(con)
    return con


@pytest.mark.parametrize("relation", ["webhook_rows", "webhook_inbox_typed", "webhook_events"])
def test_typed_relations_have_exactly_the_typed_columns(
    con: duckdb.DuckDBPyConnection, relation: str
) -> None:
    described = _described(con, relation)
    names = [name for name, _ in described]
    assert tuple(names[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    typed = described[len(BASE_COLUMNS) :]
    if relation == "webhook_rows":  # and the rollups' bookkeeping (migration 0016)
        assert typed.pop() == ("seq", "BIGINT")
    assert typed == [(column, _spelled(con, sql_type)) for column, _, sql_type in TYPED_COLUMNS]


def test_the_inbox_holds_the_typed_copies_as_one_json_column(
    con: duckdb.DuckDBPyConnection,
) -> None:
    described = _described(con, "webhook_inbox")
    assert tuple(name for name, _ in described) == INBOX_COLUMNS
    assert (*BASE_COLUMNS, "typed") == INBOX_COLUMNS
    assert dict(described)["typed"] == "JSON"


def test_the_inbox_json_transform_structure_is_the_typed_columns() -> None:
    sql = dict(migrations())["0006_webhook_inbox"]
    found = re.search(r"json_transform\(typed, '(\{.*?\})'\)", sql, re.DOTALL)
    assert found, "migration 0006 no longer types the inbox with json_transform(typed, '{...}')"
    structure = json.loads(found.group(1))
    assert list(structure.items()) == [(column, sql_type) for column, _, sql_type in TYPED_COLUMNS]


def test_each_plivo_parameter_has_one_typed_column() -> None:
    columns = [column for column, _, _ in TYPED_COLUMNS]
    params = [param for _, param, _ in TYPED_COLUMNS]
    assert len(set(columns)) == len(columns)
    assert len(set(params)) == len(params)
    assert {sql_type for _, _, sql_type in TYPED_COLUMNS} <= {
        "VARCHAR",
        "INTEGER",
        "BOOLEAN",
        "TIMESTAMPTZ",
    }
