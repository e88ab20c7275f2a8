"""An fsynced file spool for webhooks the database could not take, replayed when it can.

Each failed batch becomes one file, `spool-<time_ns>-<pid>.jsonl`, written as `.partial`,
fsynced, renamed and its folder entry fsynced before any of its webhooks is acknowledged. The
writer replays the spool in steps of a bounded number of webhooks between batches of new ones
(`replay_some`), so a long spool never holds new webhooks up for long. A step stores its webhooks
in one transaction, skipping event_ids already stored; only then are the files it finished
removed (and the folder entry fsynced). How far a file is replayed is kept in memory: after a
crash a file is replayed from its start again, and what is already stored is skipped, so
nothing is lost or stored twice.

An erasure (`callstatus erase`) removes the lines about a number (`drop_lines`): each file that
holds one is written anew without it (fsynced, renamed over the old one), replayed lines too,
so that a replay from the start after a crash cannot bring an erased webhook back.

Clustered mode's writer (callstatus.cluster.writer) keeps its own spool in a folder inside this
one, and at start adopts the files the embedded writer left here (`adopt`): webhooks spooled
before CALLSTATUS_POSTGRES_URL was set are replayed into PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb

from callstatus.core.records import EventRecord
from callstatus.core.storage import insert_events

log = logging.getLogger("callstatus.spool")


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        # A replay step and an erasure's rewrite, one at a time.
        self._replay_lock = threading.Lock()
        # file name -> (byte offset, lines) of its beginning already in the database
        self._done: dict[str, tuple[int, int]] = {}

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("spool-*.jsonl"))

    def depth(self) -> int:
        """Webhooks waiting in the spool (one line each)."""
        with self._lock:
            done = dict(self._done)
        total = 0
        for path in self.files():
            try:
                with path.open("rb") as handle:
                    total += sum(1 for _ in handle)
            except FileNotFoundError:
                continue
            total -= done.get(path.name, (0, 0))[1]
        return total

    def clean_partials(self) -> int:
        """Remove `.partial` files: a write that never finished, never acknowledged (a full disk
        or a crash mid-write). Return how many."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for path in self.folder.glob("spool-*.partial"):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        if removed:
            _fsync_dir(self.folder)
            log.warning("removed %d unfinished spool files (never acknowledged)", removed)
        return removed

    def adopt(self, folder: Path) -> int:
        """Move the spool files of `folder` into this spool (renamed: each file is taken by one
        spool only, even when several processes adopt from the same folder at once), both
        folder entries fsynced; how many. Their names keep them before newer files, so they are
        replayed first; their lines keep their event_ids, so a replay skips what is stored."""
        if not folder.is_dir() or folder.resolve() == self.folder.resolve():
            return 0
        moved = 0
        with self._lock:
            for path in sorted(folder.glob("spool-*.jsonl")):
                self.folder.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(path, self.folder / path.name)
                except FileNotFoundError:
                    continue  # another process took it
                moved += 1
            if moved:
                _fsync_dir(self.folder)
                _fsync_dir(folder)
        return moved

    def write(self, records: Sequence[EventRecord]) -> Path:
        """Write records durably: the file and its folder entry are fsynced before return. A
        failed write leaves no file behind."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            final = self.folder / f"spool-{time.time_ns():020d}-{os.getpid()}.jsonl"
            partial = final.with_suffix(".partial")
            try:
                with partial.open("w", encoding="utf-8") as handle:
                    for record in records:
                        handle.write(record.to_json() + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, final)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            _fsync_dir(self.folder)
        return final

    def hashes(self) -> Iterator[tuple[int, str]]:
        """(params_hash, received_at) of every spooled webhook not yet replayed, oldest file
        first: what the writer's duplicate tracker must know at start."""
        for path in self.files():
            offset = self._done.get(path.name, (0, 0))[0]
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    for line in handle:
                        if line.strip():
                            data = json.loads(line)
                            yield int(data["params_hash"]), str(data["received_at"])
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                # Replay reports it (and retries); the server must start all the same.
                log.error("unreadable line in %s: %s", path.name, exc)

    def replay_some(
        self,
        cur: duckdb.DuckDBPyConnection,
        plivo_timezone: str,
        limit: int,
        committed: Callable[[], None] | None = None,
    ) -> int:
        """Move up to `limit` spooled webhooks (oldest first, across files) into webhook_events
        in one transaction, skipping any already stored; return how many lines were read (0 when
        the spool is empty). `committed` runs after the commit and before any file is removed
        or marked done: if it raises, the spool stays as it was."""

        def store(records: Sequence[EventRecord]) -> None:
            cur.execute("BEGIN")
            try:
                insert_events(cur, records, plivo_timezone, skip_existing=True)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

        return self.replay_with(store, limit, committed)

    def replay_with(
        self,
        store: Callable[[Sequence[EventRecord]], None],
        limit: int,
        committed: Callable[[], None] | None = None,
    ) -> int:
        """`replay_some` into any store: `store` must make the records durable (skipping those
        already stored) before it returns, or raise, in which case the spool stays as it was."""
        with self._replay_lock:
            return self._replay_with(store, limit, committed)

    def _replay_with(
        self,
        store: Callable[[Sequence[EventRecord]], None],
        limit: int,
        committed: Callable[[], None] | None,
    ) -> int:
        records: list[EventRecord] = []
        finished: list[Path] = []
        progress: dict[str, tuple[int, int]] = {}
        for path in self.files():
            if len(records) >= limit:
                break
            offset, lines = self._done.get(path.name, (0, 0))
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            with handle:
                handle.seek(offset)
                while len(records) < limit:
                    line = handle.readline()
                    if not line:
                        break
                    lines += 1
                    if line.strip():
                        records.append(EventRecord.from_json(line.decode("utf-8")))
                offset = handle.tell()
                at_end = not handle.read(1)
            if at_end:
                finished.append(path)
            else:
                progress[path.name] = (offset, lines)
        if not records and not finished:
            return 0
        store(records)
        if committed is not None:
            committed()
        with self._lock:
            self._done.update(progress)
            for path in finished:
                self._done.pop(path.name, None)
        for path in finished:
            path.unlink(missing_ok=True)
        if finished:
            _fsync_dir(self.folder)
        log.info("replayed %d spooled webhooks (%d files finished)", len(records), len(finished))
        return len(records) or len(finished)

    def drop_lines(
        self, doomed: Callable[[Sequence[str]], set[int]], *, dry_run: bool = False
    ) -> int:
        """Remove the spooled lines `doomed` picks (by their index among every line of every
        file, oldest file first, replayed lines included); how many (counted only, with
        `dry_run`). Each file losing a line is rewritten: fsynced, renamed over the old one."""
        with self._replay_lock, self._lock:
            contents: list[tuple[Path, list[bytes]]] = []
            for path in self.files():
                try:
                    contents.append((path, path.read_bytes().splitlines(keepends=True)))
                except FileNotFoundError:
                    continue
            flat = [line.decode("utf-8") for _, lines in contents for line in lines]
            drop = doomed(flat)
            if dry_run or not drop:
                return len(drop)
            first = 0
            for path, lines in contents:
                mine = {i - first for i in drop if first <= i < first + len(lines)}
                first += len(lines)
                if mine:
                    self._rewrite(path, lines, mine)
            _fsync_dir(self.folder)
        log.info("removed %d spooled webhooks (erasure)", len(drop))
        return len(drop)

    def _rewrite(self, path: Path, lines: list[bytes], drop: set[int]) -> None:
        """`path` without the lines at `drop`; what is replayed of it kept in step."""
        done = self._done.get(path.name, (0, 0))[1]
        kept = [line for i, line in enumerate(lines) if i not in drop]
        before = [line for i, line in enumerate(lines[:done]) if i not in drop]
        if not kept:
            path.unlink(missing_ok=True)
            self._done.pop(path.name, None)
            return
        partial = path.with_suffix(".partial")
        try:
            with partial.open("wb") as handle:
                handle.writelines(kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if path.name in self._done:
            self._done[path.name] = (sum(len(line) for line in before), len(before))

    def replay(self, cur: duckdb.DuckDBPyConnection, plivo_timezone: str) -> int:
        """Move every spooled webhook into webhook_events, skipping any already stored."""
        moved = 0
        while step := self.replay_some(cur, plivo_timezone, 5000):
            moved += step
        return moved


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
