"""The running server's parts: the database, the receiver's intake (writer and spool), the rollup
and snapshot jobs, and the handle through which the dashboard in this process sees them.

Built with the app (`build_app`), so the endpoints are handed its intake then; the database is
opened only by `start()`, which the app's lifespan runs, and everything stops in order: webhooks
refused first, the writer drained, the rollups' final refresh, the final snapshot (holding every
acknowledged webhook), then the database closed.

Roles (`serve --role`, clustered mode): `all` is everything above; with CALLSTATUS_POSTGRES_URL
its webhooks go to PostgreSQL (callstatus.cluster.writer) instead of the database, which is then
a replica. `receiver` opens no database and runs no jobs: only the PostgreSQL writer.
`dashboard` runs the database and its jobs without the receiver's writer.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from callstatus.alerts.model import AlertsConfig
from callstatus.alerts.rules import as_stored, load, require_settings
from callstatus.core import server
from callstatus.core.db import Database
from callstatus.core.rollups import RollupJob
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.settings import Settings, SettingsError
from callstatus.core.snapshot import SnapshotJob, age_s
from callstatus.privacy.compaction import LiveCompactor, compact_at_start
from callstatus.privacy.retention import RetentionJob
from callstatus.receiver.intake import Intake
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import Writer
from callstatus.reconcile.run import ReconcileJob

if TYPE_CHECKING:
    from callstatus.alerts.job import AlertJob as AlertJobType
    from callstatus.cluster.replica_records import RecordStore
    from callstatus.cluster.sync import SyncJob
    from callstatus.cluster.writer import PgWriter
    from callstatus.dashboard.warmup import Warmup

log = logging.getLogger("callstatus")
WARMUP_STOP_S = 60

Role = Literal["all", "receiver", "dashboard"]


def check_role(settings: Settings, role: Role) -> None:
    """Refuse a role that cannot work with these settings (before the server listens)."""
    if role == "receiver" and not settings.clustered:
        raise SettingsError(
            "--role receiver stores webhooks in PostgreSQL: set CALLSTATUS_POSTGRES_URL "
            "(postgresql://USER:PASSWORD@HOST:5432/DATABASE), or serve with --role all"
        )
    if role == "dashboard" and not settings.clustered:
        raise SettingsError(
            "--role dashboard shows a replica of PostgreSQL's webhooks: set "
            "CALLSTATUS_POSTGRES_URL, or serve with --role all"
        )


def open_database(settings: Settings) -> Database:
    """The server's database, migrated, within CALLSTATUS_MEMORY_LIMIT."""
    return Database(settings.db, memory_limit=settings.memory_limit)


class NotStarted(RuntimeError):
    """A part that only exists while the server runs was asked for before `start()`."""


class Runtime:
    def __init__(
        self,
        settings: Settings,
        address: tuple[str, int] | None = None,
        role: Role = "all",
    ) -> None:
        check_role(settings, role)
        self.settings = settings
        self.role: Role = role
        # Where `serve` listens: written to settings.server_file, so that commands that write
        # (`callstatus reconcile`) ask this server instead of failing on the database's lock.
        self.address = address
        # Proves a command runs as the user who started the server (it can read server_file).
        self.local_token = secrets.token_urlsafe(32)
        self.intake = Intake(settings)
        # Clustered mode's writer (roles all and receiver with CALLSTATUS_POSTGRES_URL).
        self.pg_writer: PgWriter | None = None
        # Clustered mode's replica sync (roles all and dashboard with CALLSTATUS_POSTGRES_URL).
        self.replica: SyncJob | None = None
        self._database: Database | None = None
        self.rollups: RollupJob | None = None
        self.snapshot: SnapshotJob | None = None
        self.reconcile: ReconcileJob | None = None
        self.retention: RetentionJob | None = None
        # Read now, so that a mistake in the rules file stops `serve` before it listens.
        self.alerts_config = load_alerts(settings)
        self.alerts: AlertJobType | None = None
        self.warmup: Warmup | None = None

    @property
    def database(self) -> Database:
        if self._database is None:
            raise NotStarted("the server's database is open only while it runs")
        return self._database

    @property
    def writer(self) -> Writer:
        """The embedded database's writer."""
        writer = self.intake.writer
        if not isinstance(writer, Writer):
            raise NotStarted("the database's writer runs only while the server runs")
        return writer

    @property
    def receives(self) -> bool:
        """Whether this process takes webhooks (not `--role dashboard`)."""
        return self.role != "dashboard"

    @property
    def running(self) -> bool:
        """Between `start()` and `stop()`."""
        return self.intake.writer is not None or self._database is not None

    def start(self) -> None:
        if self.role == "receiver":
            self._start_pg_writer()
            return
        if self.settings.retention_days is not None:
            # Before the file is opened: the writer cannot follow a file replaced under it.
            compact_at_start(self.settings.db, self.settings.memory_limit)
        database = self._database = open_database(self.settings)
        if self.role == "all":
            if self.settings.clustered:
                self._start_pg_writer()
            else:
                self.intake.start(database)
        # The rollups first, so that at stop their final refresh lands in the final snapshot.
        self.rollups = RollupJob(database)
        self.rollups.loop.start()
        self.snapshot = SnapshotJob(
            database, self.settings.snapshot_path, self.settings.snapshot_interval_s
        )
        self.snapshot.loop.start()
        # Before reconciliation: in clustered mode its records reach the replica through it.
        if self.settings.clustered:
            self._start_replica_sync(database)
        if self.settings.reconcile_configured:
            self.reconcile = ReconcileJob(database, self.settings, self._record_store())
            self.reconcile.start()
        # CALLSTATUS_RETENTION_DAYS: a run now and then daily, pausing the rollups while it deletes,
        # and compacting the file while serving when worth it (not a clustered replica's).
        if self.settings.retention_days is not None:
            compactor = None
            if self.role == "all" and not self.settings.clustered:
                compactor = LiveCompactor(database, self.writer, self._writers_to_pause)
            self.retention = self._retention_job(database, compactor)
            self.retention.start()
        server.install(
            ServerHandle(
                self.settings,
                database,
                self.rollups,
                self.status,
                send_test=self._send_test if self.alerts_config is not None else None,
            )
        )
        # After the handle, whose database the dashboard's queries read: the first page after
        # a start then finds its modules imported and its data read (dashboard/warmup.py).
        # Imported here: a receiver process never loads the dashboard's modules.
        from callstatus.dashboard.warmup import Warmup

        self.warmup = Warmup()
        self.warmup.start()
        # After the handle: rules are measured by the dashboard's queries, which read the
        # installed server's database.
        if self.alerts_config is not None:
            # Imported only with a rules file: the job reads the dashboard's queries, whose
            # Streamlit caches warn on stderr when imported before Streamlit's runtime exists.
            from callstatus.alerts.job import AlertJob

            self.alerts = AlertJob(database, self.settings, self.alerts_config)
            self.alerts.start()
        if self.address is not None:
            _write_server_file(self.settings.server_file, self.address, self.local_token)

    def _writers_to_pause(self) -> list[threading.Lock]:
        """What holds the file's other writers between two runs, for a live compaction: the
        jobs' loops (a job's loop before its own lock, as they are taken there)."""
        locks = []
        if self.rollups is not None:
            locks.append(self.rollups.loop._lock)
        if self.snapshot is not None:
            locks += [self.snapshot.loop._lock, self.snapshot._lock]
        if self.alerts is not None:
            locks.append(self.alerts.loop._lock)
        if self.reconcile is not None:
            locks.append(self.reconcile._lock)
        return locks

    def _start_pg_writer(self) -> None:
        """Clustered mode's writer: webhooks into PostgreSQL, spooled beside this process's
        port (receivers sharing a machine keep apart spools)."""
        # Clustered mode's modules (and psycopg) are imported only with CALLSTATUS_POSTGRES_URL.
        from callstatus.cluster.heartbeat import receiver_name
        from callstatus.cluster.writer import PgWriter

        assert self.settings.postgres_url is not None
        host, port = self.address if self.address is not None else ("", 0)
        writer = PgWriter(
            self.settings.postgres_url,
            Spool(self.settings.spool_dir / f"postgres-{port}"),
            self.settings.plivo_timezone,
            receiver_name(host, port),
            # What the embedded writer left spooled before clustered mode was switched on.
            adopt=self.settings.spool_dir,
        )
        writer.start()
        self.pg_writer = writer
        self.intake.attach(writer)

    def _start_replica_sync(self, database: Database) -> None:
        """Clustered mode's dashboard side (roles all and dashboard): the sync job that keeps
        `database` a replica of PostgreSQL starts here, and stops in `_stop_replica_sync`."""
        from callstatus.cluster.sync import SyncJob

        assert self.settings.postgres_url is not None
        self.replica = SyncJob(database, self.settings.postgres_url)
        self.replica.start()

    def _record_store(self) -> RecordStore | None:
        """Clustered mode: Plivo's call records stored in PostgreSQL (a replica rebuilt from
        it keeps them), then copied into the replica at once."""
        if self.replica is None or self.settings.postgres_url is None:
            return None
        from callstatus.cluster.heartbeat import receiver_name
        from callstatus.cluster.replica_records import RecordStore

        host, port = self.address if self.address is not None else ("", 0)
        return RecordStore(
            self.settings.postgres_url,
            self.settings.plivo_timezone,
            "reconcile@" + receiver_name(host, port),
            self.replica.sync_now,
        )

    def _retention_job(self, database: Database, compactor: LiveCompactor | None) -> RetentionJob:
        """Clustered mode: what a run removes from the replica goes from PostgreSQL too."""
        if self.replica is None:
            return RetentionJob(database, self.settings, self.rollups, compactor=compactor)
        from callstatus.cluster.retention_job import MirroredRetentionJob

        return MirroredRetentionJob(database, self.settings, self.rollups, self.replica)

    def _stop_replica_sync(self) -> None:
        """Stops what `_start_replica_sync` started, before the database closes."""
        if self.replica is not None:
            self.replica.stop()
            self.replica = None

    def stop(self) -> None:
        server.install(None)
        if self.address is not None and self._database is not None:
            _remove_server_file(self.settings.server_file)
        if self.alerts is not None:
            _stop("alerts", self.alerts.stop)
        # Before the writer drains: a run stops at its next page or backoff wait.
        if self.reconcile is not None:
            _stop("reconcile", self.reconcile.stop)
        if self.retention is not None:
            _stop("retention", self.retention.stop)
        self.intake.stop()
        # Before the final refresh, which then holds the last rows synced.
        if self._database is not None and self.settings.clustered:
            _stop("replica sync", self._stop_replica_sync)
        # After the writer drained, before the database closes: the final refresh and the final
        # snapshot then hold every webhook that was acknowledged.
        if self.rollups is not None:
            _stop("rollups", self.rollups.stop)
        if self.snapshot is not None:
            _stop("snapshot", self.snapshot.loop.stop)
        # The warm-up stops after its current query once the handle is gone (above); it must
        # not be reading when the database closes.
        if self.warmup is not None and not self.warmup.wait(WARMUP_STOP_S):
            log.warning("the dashboard warm-up was still reading after %d s", WARMUP_STOP_S)
        if self._database is not None:
            self._database.close()
        self.rollups = self.snapshot = self._database = self.reconcile = self.alerts = None
        self.warmup = None
        self.retention = None
        self.pg_writer = None

    def _send_test(self, channel: str) -> str:
        """The Alerts page's test button: queue a test message to `channel` and try it now."""
        from callstatus.alerts import outbox

        assert self.alerts_config is not None
        return outbox.send_test(self.database.cursor(), self.alerts_config, self.settings, channel)

    def spool_depth(self) -> int:
        """Webhooks waiting in this process's spool (PostgreSQL's in clustered mode)."""
        if self.pg_writer is not None:
            return self.pg_writer.spool_depth()
        return self.intake.spool.depth() if self.receives else 0

    def status(self) -> ReceiverStatus:
        """What the receiver says about itself (Receiver health, /healthz)."""
        writer = self.intake.writer
        if writer is not None:
            last_error = writer.last_error
        else:
            last_error = None if not self.receives and self.running else "the server is stopping"
        return ReceiverStatus(
            spool_depth=self.spool_depth(),
            writer_queue=writer.queue_depth() if writer is not None else 0,
            last_error=last_error,
            snapshot_age_s=age_s(self.snapshot.target) if self.snapshot is not None else None,
        )


def _stop(name: str, stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception as exc:
        log.warning("stopping the %s job failed: %s", name, exc)


def load_alerts(settings: Settings) -> AlertsConfig | None:
    """The rules file (CALLSTATUS_ALERTS, or ./alerts.toml), checked against the settings it
    needs; None without one. A mistake raises RulesError naming the file, line, rule and key."""
    path = settings.alerts_path
    if path is None:
        return None
    config = load(path)
    require_settings(config, settings)
    config = as_stored(config, settings)
    log.info("alerts: %d rules, %d reports from %s", len(config.rules), len(config.reports), path)
    return config


def server_url(host: str, port: int) -> str:
    """The URL a command on this machine reaches a server listening on host:port at."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _write_server_file(path: Path, address: tuple[str, int], token: str) -> None:
    """{"url", "pid", "token"}, readable by this user only, replaced atomically."""
    body = json.dumps({"url": server_url(*address), "pid": os.getpid(), "token": token})
    partial = path.with_name(path.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(partial, path)
    except OSError as exc:
        log.warning("could not write %s (commands cannot reach this server): %s", path, exc)


def _remove_server_file(path: Path) -> None:
    """Remove the file if it is still this process's (another server may have replaced it)."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
