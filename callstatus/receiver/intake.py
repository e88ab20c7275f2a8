"""What the webhook endpoints need of the running server, handed to them when the app is built.

The process (callstatus.app.runtime) builds one Intake from the settings, gives it to every
endpoint, and starts it once the database is open (in the lifespan): until then, and from the
moment it stops, `writer` is None and the endpoints answer 503 `starting`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from callstatus.core.db import Database
from callstatus.core.numbers import NumberMasker
from callstatus.core.records import EventRecord, Params
from callstatus.core.settings import Settings
from callstatus.receiver import rejected
from callstatus.receiver.rejected import RejectedRecord, RejectionBudget
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import Writer


class WebhookWriter(Protocol):
    """What the endpoints and /healthz use of a writer: the embedded database's
    (callstatus.receiver.writer) or, in clustered mode, PostgreSQL's (callstatus.cluster)."""

    last_event_at: datetime | None
    last_error: str | None

    async def store(self, record: EventRecord) -> str: ...

    def store_rejected(self, record: RejectedRecord) -> None: ...

    def queue_depth(self) -> int: ...

    def stop(self) -> None: ...


class Intake:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.rejections = RejectionBudget(limit=rejected.ROWS_PER_HOUR)
        self.writer: WebhookWriter | None = None
        # Masked mode (CALLSTATUS_NUMBERS=masked): numbers are masked before anything is written.
        self.masker = NumberMasker.from_settings(settings)

    def mask(self, kind: str, params: Params) -> Params:
        """A webhook's parameters as stored: numbers masked in masked mode, else unchanged."""
        return params if self.masker is None else self.masker.mask_params(kind, params)

    def start(self, database: Database) -> Writer:
        """Start the writer (it replays the spool first) and take webhooks."""
        writer = Writer(database, self.spool, self.settings.plivo_timezone)
        writer.start()
        # The hourly budget survives a restart: this hour's kept rows count against it.
        self.rejections.resume(database.cursor())
        self.writer = writer
        return writer

    def attach(self, writer: WebhookWriter) -> None:
        """Take webhooks through a writer already started (clustered mode's, into PostgreSQL)."""
        self.writer = writer

    def stop(self) -> None:
        """Stop taking webhooks, then drain the writer's queue and checkpoint."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.stop()
