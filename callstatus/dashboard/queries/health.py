"""Receiver health: webhooks per kind, totals, repeats not stored, and refused requests.

These read webhook_events, webhook_counts, webhook_repeats and rejected_webhooks, never the
calls: only the counts per kind depend on the rollups (webhook_counts). Plivo's call records
(kind 'cdr', fetched from its Call API) are stored beside the webhooks but are none: every
figure here leaves them out.
"""

from __future__ import annotations

from callstatus.core.storage import events_count_and_last
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.base import BUCKET, BUCKET_END, Result, run, with_
from callstatus.dashboard.queries.relations import Relations

# The newest webhook that Plivo sent (call records fetched by reconcile are not webhooks).
NEWEST_WEBHOOK = events_count_and_last(where="kind <> 'cdr'")

# The webhooks received in the range, as (t, kind, duplicate, signature, webhooks) rows.
RECEIVED = """
received AS (
    SELECT received_at AS t, kind, duplicate, signature, 1 AS webhooks FROM webhook_events
    WHERE received_at >= $start AND received_at < $end AND kind <> 'cdr'
)"""
# The same on the rollups: webhook_counts (migration 0005) for the 5-minute buckets wholly in
# the range, the webhooks themselves for the buckets its ends cut. Bucketing a row by its
# bucket_at in the chosen zone counts its webhooks where their own times would: every zone's
# offset from UTC is a multiple of 15 minutes, and has changed only at whole 5 minutes UTC
# since 2023 (tzdata 2020-2040), so a 5-minute bucket never straddles a local bucket's edge.
RECEIVED_COUNTS = """
received AS (
    SELECT bucket_at AS t, kind, duplicate, signature, webhooks FROM webhook_counts
    WHERE bucket_at >= $start AND bucket_at <= $end - INTERVAL 5 MINUTE AND kind <> 'cdr'
    UNION ALL
    SELECT received_at, kind, duplicate, signature, 1 FROM webhook_events
    WHERE received_at >= $start AND received_at < $end AND kind <> 'cdr'
      AND (received_at < $start + INTERVAL 5 MINUTE OR received_at >= $end - INTERVAL 5 MINUTE)
      AND NOT (time_bucket(INTERVAL 5 MINUTE, received_at) >= $start
               AND time_bucket(INTERVAL 5 MINUTE, received_at) + INTERVAL 5 MINUTE <= $end)
)"""


def _received(rel: Relations) -> str:
    return RECEIVED_COUNTS if rel.stored else RECEIVED


def webhooks_per_kind(rel: Relations, f: Filters) -> Result:
    sql = (
        with_(_received(rel))
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, kind, CAST(sum(webhooks) AS BIGINT) AS webhooks,
           CAST(coalesce(sum(webhooks) FILTER (WHERE duplicate), 0) AS BIGINT) AS duplicates
    FROM received GROUP BY ALL ORDER BY bucket, kind
    """
    )
    return run(sql, f.params())


def receiver_totals(rel: Relations, f: Filters) -> Result:
    sql = (
        with_(_received(rel))
        + f"""
    SELECT (SELECT last FROM ({NEWEST_WEBHOOK})) AS last_event_at,
           CAST(coalesce(sum(webhooks), 0) AS BIGINT) AS webhooks,
           CAST(coalesce(sum(webhooks) FILTER (WHERE duplicate), 0) AS BIGINT) AS duplicates,
           CAST(coalesce(sum(webhooks) FILTER (WHERE signature = 'unchecked'), 0) AS BIGINT)
               AS unchecked,
           (SELECT count(*) FROM rejected_webhooks
            WHERE received_at >= $start AND received_at < $end) AS rejected
    FROM received
    """
    )
    return run(sql, f.params())


def repeats_not_stored(f: Filters) -> Result:
    """Deliveries of a webhook past the first few, acknowledged but only counted
    (webhook_repeats, per 5-minute bucket of received_at: a bucket counts when it starts in
    the range)."""
    sql = """
    SELECT CAST(coalesce(sum(repeats), 0) AS BIGINT) AS repeats
    FROM webhook_repeats WHERE bucket >= $start AND bucket < $end
    """
    return run(sql, f.params())


def rejections(f: Filters) -> Result:
    """Refused requests grouped by why, where, and the URL we checked against what was sent."""
    sql = """
    SELECT reason, path, regexp_extract(checked_url, '^(https?://[^/]+)') AS checked_base,
           coalesce(headers->>'x-forwarded-proto', '') AS forwarded_proto,
           coalesce(headers->>'x-forwarded-host', '') AS forwarded_host,
           coalesce(headers->>'host', '') AS host_header,
           count(*) AS requests, timezone($tz, max(received_at)) AS last_seen,
           any_value(checked_url) AS example_checked_url
    FROM rejected_webhooks WHERE received_at >= $start AND received_at < $end
    GROUP BY ALL ORDER BY requests DESC
    """
    return run(sql, f.params())


def rejected_samples(f: Filters, per_reason: int = 20) -> Result:
    """The newest refused requests of each reason, whole (headers and parameters as JSON
    text), for the advice on Receiver health: it checks their signatures against the
    addresses their headers claim."""
    sql = """
    SELECT reason, http_method, checked_url, CAST(headers AS VARCHAR) AS headers,
           CAST(params AS VARCHAR) AS params, truncated
    FROM rejected_webhooks WHERE received_at >= $start AND received_at < $end
    QUALIFY row_number() OVER (PARTITION BY reason ORDER BY received_at DESC) <= $per_reason
    ORDER BY received_at DESC
    """
    return run(sql, {**f.params(), "per_reason": per_reason})


# Clustered mode (callstatus/cluster/sync.py, migration 0014): read at every render, never from
# the cache, so that the lag shown is now's. Receivers are named by host:port.
REPLICA = """
SELECT source, synced_at, finished_at, total_webhooks,
       epoch(now() - synced_at) AS lag_s, epoch(now() - finished_at) AS since_sync_s
FROM replica_state
"""
RECEIVERS = """
SELECT receiver, seen_at AS last_seen, last_webhook_at AS last_webhook, spool_depth, stored,
       started_at, epoch(now() - seen_at) AS silent_s
FROM cluster_receivers ORDER BY receiver
"""


def replica_state() -> Result:
    """The replica's position: empty before its first sync."""
    return _live(REPLICA)


def cluster_receivers() -> Result:
    """Each receiver's last heartbeat, as the last sync copied it."""
    return _live(RECEIVERS)


def _live(sql: str) -> Result:
    return Result(connection.cursor().execute(sql).df(), sql.strip())
