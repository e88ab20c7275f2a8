"""An fsynced file spool for webhooks the database could not take, replayed when it can."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from callstatus.core.events import EventRecord, insert_events

log = logging.getLogger("callstatus.spool")


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("spool-*.jsonl"))

    def depth(self) -> int:
        """Webhooks waiting in the spool (one line each)."""
        total = 0
        for path in self.files():
            try:
                with path.open("rb") as handle:
                    total += sum(1 for _ in handle)
            except FileNotFoundError:
                continue
        return total

    def write(self, records: Sequence[EventRecord]) -> Path:
        """Write records durably: the file and its folder entry are fsynced before return."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            final = self.folder / f"spool-{time.time_ns():020d}-{os.getpid()}.jsonl"
            partial = final.with_suffix(".partial")
            with partial.open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(record.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
            _fsync_dir(self.folder)
        return final

    def replay(self, cur: duckdb.DuckDBPyConnection, plivo_timezone: str) -> int:
        """Move spooled webhooks into webhook_events, skipping any already stored."""
        moved = 0
        for path in self.files():
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [EventRecord.from_json(line) for line in lines if line.strip()]
            cur.execute("BEGIN")
            try:
                insert_events(cur, records, plivo_timezone, skip_existing=True)
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            path.unlink()
            moved += len(records)
            log.info("replayed %d spooled webhooks from %s", len(records), path.name)
        if moved:
            _fsync_dir(self.folder)
        return moved


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
