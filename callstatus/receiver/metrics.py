"""Prometheus metrics of the receiver, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOKS = Counter(
    "callstatus_webhooks",
    "Webhooks received, by kind and result (stored, spooled, repeat: counted, not stored, "
    "rejected, invalid, failed)",
    ["kind", "result"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "callstatus_rejections",
    "Requests refused, by reason",
    ["reason"],
    registry=REGISTRY,
)
REJECTIONS_NOT_STORED = Counter(
    "callstatus_rejections_not_stored",
    "Refused requests only counted because rejected_webhooks reached its hourly bound",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "callstatus_writer_batch_size",
    "Webhooks per committed transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "callstatus_writer_commit_seconds",
    "Time to insert and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "callstatus_writer_queue_depth", "Webhooks waiting for the writer", registry=REGISTRY
)
SPOOL_DEPTH = Gauge(
    "callstatus_spool_depth", "Webhooks waiting in the file spool", registry=REGISTRY
)
REPEATS_NOT_STORED = Counter(
    "callstatus_webhook_repeats_not_stored",
    "Repeated deliveries of one webhook past the first few, acknowledged and counted in "
    "webhook_repeats but not stored, by kind",
    ["kind"],
    registry=REGISTRY,
)
REJECTED_PRUNED = Counter(
    "callstatus_rejected_pruned",
    "Oldest rows removed from rejected_webhooks to keep it within its bounds",
    registry=REGISTRY,
)
WAL_BYTES = Gauge(
    "callstatus_wal_bytes", "Size of the database's write-ahead log", registry=REGISTRY
)
CHECKPOINTS = Counter(
    "callstatus_wal_checkpoints",
    "Checkpoints the writer ran because the write-ahead log grew past its bound",
    registry=REGISTRY,
)
