"""Erasure of one number: every call it appears in, from every table that holds webhooks, the
rollups, refused requests and the Parquet archive; recorded in `erasures` by a pseudonym.

A row mentions the number when the number appears anywhere in its parameters or typed number
columns, in any form Plivo sends (with or without "+", "00", inside a SIP URI or a SIP header),
or as its pseudonym in masked mode. A call goes whole: every webhook, call record and PHLO
report of an A leg that mentions the number anywhere (its Dials' and B legs' rows included), so
the rollups, which lose the same calls, still equal the views afterwards.

Webhooks waiting in the spool (written while the database could not take them, or while the
file was compacted) are erased too, before the database: the lines that mention the number and
the other lines of the same calls (`SpooledLines`, the receiver's spool).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import duckdb

from callstatus.core import rollups
from callstatus.core.numbers import NumberMasker, normalise, pseudonym
from callstatus.core.settings import Settings
from callstatus.core.typed import typed_values
from callstatus.privacy import archive
from callstatus.privacy.maintenance import settle

KEYS = "erase_keys"
ROW_KEY = "coalesce(dial_a_leg_uuid, call_uuid)"
# The webhook row's text a number can hide in: its parameters and typed number columns.
ROW_TEXT = "concat_ws(' ', params::VARCHAR, from_number, to_number, dial_b_leg_from, dial_b_leg_to)"
INBOX_TEXT = "concat_ws(' ', params::VARCHAR, typed::VARCHAR)"
REJECTED_TEXT = "concat_ws(' ', params::VARCHAR, headers::VARCHAR, checked_url)"
CALL_TEXT = "concat_ws(' ', from_number, to_number)"
LEG_TEXT = "concat_ws(' ', b_leg_to, b_leg_from, a_from, a_to)"
# The hourly aggregates' columns that hold numbers (B destinations, our numbers).
HOURLY_TEXT = {
    "calls_hourly": "coalesce(our_number, '')",
    "dials_hourly": "coalesce(our_number, '')",
    "legs_hourly": "concat_ws(' ', our_number, b_leg_to)",
    "timings_hourly": "destination",
}
# The order counts are printed in.
TABLES = (
    "webhook_events",
    "calls_rollup",
    "dials_rollup",
    "dial_legs_rollup",
    "rejected_webhooks",
)


# The typed columns that name a call (its A leg, a B leg) in a spooled webhook.
SPOOL_KEYS = ("dial_a_leg_uuid", "call_uuid", "dial_b_leg_uuid")


class SpooledLines(Protocol):
    """The spool as an erasure uses it (callstatus/receiver/spool.py): `doomed` is given every
    spooled line (JSON) and picks those to remove, by index."""

    def drop_lines(
        self, doomed: Callable[[Sequence[str]], set[int]], *, dry_run: bool = False
    ) -> int: ...


class NotANumber(ValueError):
    """What was given to erase is no phone number."""


@dataclass(frozen=True)
class Target:
    """A number to erase: its E.164 form, the RE2 pattern that finds it in text, and the
    pseudonym it is recorded under."""

    e164: str
    pattern: str
    pseudonym: str
    keyed: bool


def target_for(number: str, settings: Settings) -> Target:
    e164 = normalise(number)
    if e164 is None or len(e164) < 7:
        # The value is not repeated: it may be a person's number mistyped.
        raise NotANumber("that is not a phone number: give it as Plivo sends it, e.g. +14155550107")
    digits = e164[1:]
    # Its digits not inside a longer run of digits: "+14155550107", "14155550107",
    # "0014155550107", "sip:14155550107@…", "%2B14155550107" all match, "914155550107" not.
    alternatives = [rf"(^|[^0-9])(00)?{digits}([^0-9]|$)"]
    masker = NumberMasker.from_settings(settings)
    if masker is not None:
        for form in masker.lookup_forms(e164):
            mark = re.search(r"#[0-9a-f]{10}", form)
            # A pseudonym is found by its HMAC: its "…" may be stored escaped in JSON text.
            alternatives.append(re.escape(mark.group(0)) + "([^0-9a-f]|$)" if mark else "")
    pattern = "|".join(a for a in alternatives if a)
    key = settings.number_key
    if key:
        return Target(e164, pattern, pseudonym(e164, key), True)
    # Without a key a hash of the number is all there is: anyone can hash every number of a
    # country and find it (docs/privacy.md), so a keyed pseudonym is preferred.
    return Target(e164, pattern, "sha256:" + hashlib.sha256(e164.encode()).hexdigest()[:16], False)


@dataclass
class Erasure:
    """What one erasure removed (or, dry, would remove), per table; archive files per table."""

    pseudonym: str
    keyed: bool
    dry_run: bool
    trigger: str
    erased_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    archive: dict[str, int] = field(default_factory=dict)
    snapshot: str = "none"  # what became of the analysts' snapshot: "rewritten" or "none"

    def as_json(self) -> dict[str, Any]:
        return {
            "pseudonym": self.pseudonym,
            "keyed": self.keyed,
            "dry_run": self.dry_run,
            "trigger": self.trigger,
            "erased_at": self.erased_at.isoformat(),
            "counts": self.counts,
            "archive": self.archive,
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Erasure:
        return cls(
            pseudonym=str(data["pseudonym"]),
            keyed=bool(data["keyed"]),
            dry_run=bool(data["dry_run"]),
            trigger=str(data["trigger"]),
            erased_at=datetime.fromisoformat(data["erased_at"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            archive={str(k): int(v) for k, v in data["archive"].items()},
            snapshot=str(data["snapshot"]),
        )

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{'dry run: ' if self.dry_run else ''}{self.pseudonym}: {verb}"]
        width = max(len(t) for t in (*self.counts, *(f"archive/{t}" for t in self.archive)))
        for table, rows in self.counts.items():
            lines.append(f"  {table:<{width}}  {rows:>9,} rows")
        for table, rows in self.archive.items():
            lines.append(f"  {'archive/' + table:<{width}}  {rows:>9,} rows")
        if not self.dry_run:
            lines.append(f"  snapshot: {self.snapshot}")
        return "\n".join(lines)


def erase(
    cur: duckdb.DuckDBPyConnection,
    settings: Settings,
    target: Target,
    *,
    dry_run: bool,
    trigger: str,
    spool: SpooledLines | None = None,
) -> Erasure:
    """Remove (or count) every call mentioning the target from the spool, then from this
    cursor's database, then the archive's rows, and record the erasure. The caller refreshed
    the rollups and pauses their job (callstatus/privacy/maintenance.py), and writes the new
    snapshot."""
    done = Erasure(target.pseudonym, target.keyed, dry_run, trigger, datetime.now(UTC))
    p = {"re": target.pattern}
    spooled = None
    spool_keys: set[str] = set()
    if spool is not None:
        # First: a line replayed after the database's rows went would bring the number back.
        (row,) = cur.execute(
            f"SELECT list(DISTINCT k) FILTER (WHERE k IS NOT NULL) FROM (SELECT unnest(["
            f"{ROW_KEY}, call_uuid, dial_b_leg_uuid]) AS k FROM webhook_rows"
            f" WHERE regexp_matches({ROW_TEXT}, $re))",
            p,
        ).fetchall()
        spool_keys.update(row[0] or [])
        zone = ZoneInfo(settings.plivo_timezone)
        # Gains the calls found in the spool: their stored rows go below too.
        spooled = spool.drop_lines(_spool_picker(target, spool_keys, zone), dry_run=dry_run)
    cur.execute("BEGIN")
    try:
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {KEYS} AS"
            f" SELECT DISTINCT k FROM (SELECT unnest([{ROW_KEY}, call_uuid, dial_b_leg_uuid]) AS k"
            f" FROM webhook_rows WHERE regexp_matches({ROW_TEXT}, $re)) WHERE k IS NOT NULL",
            p,
        )
        if spool_keys:
            cur.execute(
                f"INSERT INTO {KEYS} SELECT unnest($k) EXCEPT SELECT k FROM {KEYS}",
                {"k": sorted(spool_keys)},
            )
        keys = f"IN (SELECT k FROM {KEYS})"
        where = {
            "webhook_events": f"webhook_rows WHERE {ROW_KEY} {keys}"
            f" OR dial_b_leg_uuid {keys} OR regexp_matches({ROW_TEXT}, $re)",
            "webhook_inbox": f"webhook_inbox WHERE regexp_matches({INBOX_TEXT}, $re)"
            f" OR coalesce(typed->>'dial_a_leg_uuid', typed->>'call_uuid') {keys}",
            "calls_rollup": f"calls_rollup WHERE call_uuid {keys}"
            f" OR regexp_matches({CALL_TEXT}, $re)",
            "dials_rollup": f"dials_rollup WHERE a_leg_uuid {keys}",
            "dial_legs_rollup": f"dial_legs_rollup WHERE a_leg_uuid {keys} OR b_leg_uuid {keys}"
            f" OR regexp_matches({LEG_TEXT}, $re)",
            "rejected_webhooks": f"rejected_webhooks WHERE regexp_matches({REJECTED_TEXT}, $re)",
        }
        if _exists(cur, "number_destinations"):
            # Its row holds the number itself; the calls that used it go above.
            where["number_destinations"] = "number_destinations WHERE regexp_matches(number, $re)"
        verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
        # The hourly aggregates that count the rows going: recomputed once they are gone.
        hours = rollups.hours_holding(
            cur,
            f"SELECT k FROM {KEYS} UNION SELECT call_uuid FROM calls_rollup"
            f" WHERE regexp_matches({CALL_TEXT}, $re)",
            f"SELECT k FROM {KEYS} UNION SELECT b_leg_uuid FROM dial_legs_rollup"
            f" WHERE regexp_matches({LEG_TEXT}, $re)",
            p,
        )
        if not dry_run:
            # The A legs of the B legs going: their per-A-leg rows are recomputed without them.
            rollups.note_a_legs(cur, f"SELECT a_leg_uuid FROM {where['dial_legs_rollup']}", p)
        counts = {}
        for table, sql in where.items():
            used = p if "$re" in sql else {}
            (row,) = cur.execute(f"{verb} {sql}", used).fetchall()
            counts[table] = int(row[0])
        if not dry_run:
            rollups.recompute_a_legs(cur)
        counts["webhook_events"] += counts.pop("webhook_inbox")
        counts["hourly_aggregates"] = _hourly(cur, hours, p, dry_run)
        order = (*TABLES, "number_destinations", "hourly_aggregates")
        done.counts = {t: counts[t] for t in order if t in counts}
        if spooled is not None:
            done.counts["spool"] = spooled
        cur.execute(f"DROP TABLE {KEYS}")
        if settings.archive_dir is not None:
            done.archive = _archive(cur, settings.archive_dir, target, dry_run)
        cur.execute(
            "INSERT INTO erasures (erased_at, pseudonym, keyed, dry_run, trigger, counts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                done.erased_at,
                done.pseudonym,
                done.keyed,
                dry_run,
                trigger,
                json.dumps({**done.counts, **{f"archive/{t}": n for t, n in done.archive.items()}}),
            ],
        )
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    if not dry_run and any(done.counts.values()):
        settle(cur)
    return done


def _hourly(
    cur: duckdb.DuckDBPyConnection, hours: set[datetime], p: dict[str, str], dry_run: bool
) -> int:
    """The hourly aggregates (migration 0015) after the rollups lost the erased calls: their
    hours recomputed from the rollups, then the rows still naming the number removed (hours
    whose calls retention already removed, which no recompute can redo). Returns how many rows
    named the number before (the same in a dry run)."""
    if not _exists(cur, "legs_hourly"):
        return 0
    naming = {t: f"{t} WHERE regexp_matches({columns}, $re)" for t, columns in HOURLY_TEXT.items()}
    total = sum(
        int(cur.execute(f"SELECT count(*) FROM {sql}", p).fetchall()[0][0])
        for sql in naming.values()
    )
    if not dry_run:
        rollups.recompute_hours(cur, hours)
        for sql in naming.values():
            cur.execute(f"DELETE FROM {sql}", p)
    return total


def _spool_picker(
    target: Target, keys: set[str], zone: ZoneInfo
) -> Callable[[Sequence[str]], set[int]]:
    """Which spooled lines go: those mentioning the target, and every other line of a call that
    one of them, or a stored webhook mentioning the target (`keys`), belongs to. The calls of
    the lines mentioning the target are added to `keys`."""
    pattern = re.compile(target.pattern)

    def calls(line: str) -> set[str]:
        record = json.loads(line)
        params = json.loads(record["params"])
        typed = typed_values(params, zone)
        return {str(typed[k]) for k in SPOOL_KEYS if typed.get(k)}

    def pick(lines: Sequence[str]) -> set[int]:
        doomed = {i for i, line in enumerate(lines) if pattern.search(line)}
        for i in doomed:
            keys.update(calls(lines[i]))
        return doomed | {i for i, line in enumerate(lines) if line.strip() and calls(line) & keys}

    return pick


def _exists(cur: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = cur.execute(
        "SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [table]
    ).fetchall()
    return bool(rows)


def _archive(
    cur: duckdb.DuckDBPyConnection, folder: Path, target: Target, dry_run: bool
) -> dict[str, int]:
    """The archive's rows mentioning the target, per table: counted, or dropped from their
    files (each rewritten and renamed over the old one). Whole calls, as in the database: the
    keys are taken from the archived webhooks first."""
    texts = {"webhook_events": ROW_TEXT, "rejected_webhooks": REJECTED_TEXT}
    p: dict[str, object] = {"re": target.pattern}
    files = archive.all_files(folder)
    events = [str(f) for f in files if f.parent.parent.name == "webhook_events"]
    keys: list[str] = []
    if events:
        (row,) = cur.execute(
            f"SELECT list(DISTINCT k) FILTER (WHERE k IS NOT NULL) FROM (SELECT unnest(["
            f"{ROW_KEY}, call_uuid, dial_b_leg_uuid]) AS k FROM read_parquet($files)"
            f" WHERE regexp_matches({ROW_TEXT}, $re))",
            {**p, "files": events},
        ).fetchall()
        keys = list(row[0] or [])
    p["keys"] = keys
    where = {
        "webhook_events": f"regexp_matches({ROW_TEXT}, $re) OR list_contains($keys, {ROW_KEY})"
        " OR list_contains($keys, dial_b_leg_uuid)",
        "rejected_webhooks": f"regexp_matches({REJECTED_TEXT}, $re)",
    }
    counts = dict.fromkeys(texts, 0)
    for path in files:
        table = path.parent.parent.name
        used = {k: v for k, v in p.items() if f"${k}" in where[table]}
        if dry_run:
            found = archive.count_matching_file(cur, path, where[table], used)
        else:
            found = archive.rewrite_without(cur, path, where[table], used)
        counts[table] += found
    return counts
