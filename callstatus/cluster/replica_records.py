"""Reconciliation in clustered mode: Plivo's call records stored in PostgreSQL as a receiver
stores webhooks (kind `cdr`, signature `api`), so that a replica rebuilt from it keeps them,
then copied into this dashboard's replica before the run reads them back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

from callstatus.cluster import inbox, pg
from callstatus.core.records import EventRecord


class RecordStore:
    """`reconcile`'s store in clustered mode: one transaction per flush, then `sync` (a replica
    step) so that the run's cursor sees the records when it classifies them."""

    def __init__(
        self, url: str, plivo_timezone: str, name: str, sync: Callable[[], object]
    ) -> None:
        self.url = url
        self.zone = ZoneInfo(plivo_timezone)
        self.name = name  # the receiver column: who stored them
        self.sync = sync

    def __call__(self, records: Sequence[EventRecord]) -> None:
        with pg.connect(self.url) as con:
            inbox.insert_events(con, records, self.zone, self.name)
            con.commit()
        self.sync()
