"""`callstatus seed` and the demo's history in masked mode: pseudonyms written, never the clear
numbers the traffic model makes (the same seed in clear mode shows which those are)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from callstatus.core.numbers import NumberMasker, is_pseudonym
from callstatus.core.settings import Settings
from callstatus.simulator.simulate import backfill

ROOT = Path(__file__).resolve().parents[2]
KEY = "a-seeding-test-key-0123456789"
ARGS = ("--calls", "300", "--days", "2", "--seed", "11")
MASKED = {"CALLSTATUS_NUMBERS": "masked", "CALLSTATUS_NUMBER_KEY": KEY}
NUMBERS = "SELECT DISTINCT n FROM (SELECT unnest([from_number, to_number, dial_b_leg_from,"
NUMBERS += " dial_b_leg_to]) AS n FROM webhook_events) WHERE n IS NOT NULL"


def seed(db: Path, env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CALLSTATUS_", "DIAL_"))}
    done = subprocess.run(
        [sys.executable, "-m", "callstatus.cli", "seed", "--db", str(db), *ARGS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=db.parent,
        env={**clean, **env},
    )
    assert done.returncode == 0, done.stderr


def read(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def clear_numbers(db: Path) -> set[str]:
    """The caller and agent numbers the model wrote in clear (SIP users' numbers too)."""
    return {str(row[0]) for row in read(db, NUMBERS)}


def test_seed_in_masked_mode_writes_pseudonyms(tmp_path: Path) -> None:
    clear, masked = tmp_path / "clear.duckdb", tmp_path / "masked.duckdb"
    seed(clear, {})
    seed(masked, MASKED)
    numbers = clear_numbers(clear)
    assert len(numbers) > 50
    stored = {str(row[0]) for row in read(masked, NUMBERS)}
    assert stored and all(is_pseudonym(n) or "#" in n for n in stored), sorted(stored)[:5]
    # The same calls, each number as the receiver would have masked it.
    masker = NumberMasker(KEY, [])
    assert {masker.mask(n) for n in numbers} == stored
    # No clear number anywhere in the parameters, nor in the file's bytes.
    digits = {n.lstrip("+").split("@")[0].removeprefix("sip:") for n in numbers}
    digits = {d for d in digits if sum(c.isdigit() for c in d) >= 7}
    (params,) = read(masked, "SELECT string_agg(params::VARCHAR, ' ') FROM webhook_events")[0]
    assert not [d for d in digits if d in str(params)]
    content = masked.read_bytes()
    assert not [d for d in digits if d.encode() in content]


def test_the_demo_history_in_masked_mode_holds_pseudonyms(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    settings = Settings(CALLSTATUS_DB=str(db), **MASKED)  # type: ignore[arg-type]
    assert backfill(settings, 5) > 0
    stored = {str(row[0]) for row in read(db, NUMBERS)}
    assert stored and all("#" in n for n in stored), sorted(stored)[:5]
