"""Prometheus metrics every service shares; names follow the Prometheus conventions."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

COMMANDS_APPLIED = Counter(
    "regionstore_commands_applied_total",
    "Command applications written to a regional store (stale ones are counted in"
    " regionstore_commands_stale_total instead).",
    ["region", "role"],
)
COMMANDS_STALE = Counter(
    "regionstore_commands_stale_total",
    "Command applications skipped because the store already held a newer version.",
    ["region"],
)
COMMANDS_PARKED = Counter(
    "regionstore_commands_parked_total",
    "Commands parked in a region's parking topic (pending.<region>) because the region was"
    " unavailable.",
    ["region", "reason"],
)
COMMANDS_DEADLETTERED = Counter(
    "regionstore_commands_deadlettered_total",
    "Messages that could never be applied, sent to the dead-letter topic: undecodable ones"
    " (region empty) and commands a region refused for good.",
    ["source_topic", "region"],
)


def expect_dead_letters(source_topic: str, regions: Iterable[str]) -> None:
    """Export the dead-letter counters of ``source_topic`` at 0 before any dead letter.

    A series that first appears at 1 has no increase to alert on (``increase()`` needs two
    samples), so the first dead letter would pass unseen. One series per region that may
    refuse a command, and one (region empty) for undecodable messages.
    """
    for region in ("", *regions):
        COMMANDS_DEADLETTERED.labels(source_topic=source_topic, region=region)


ERASED_APPLIED = Counter(
    "regionstore_erased_upserts_total",
    "Sealed upserts whose customer key was destroyed (the customer was deleted), applied as "
    "tombstones, by role.",
    ["role"],
)
STORE_ERRORS = Counter(
    "regionstore_store_errors_total",
    "Failed writes or reads against a regional store, by kind.",
    ["region", "kind"],
)
KAFKA_ERRORS = Counter(
    "regionstore_kafka_errors_total",
    "Kafka operations that failed, by operation.",
    ["operation"],
)
BATCH_SECONDS = Histogram(
    "regionstore_batch_apply_seconds",
    "Time to apply or park one consumed batch.",
    ["role"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
APPLY_LAG_SECONDS = Histogram(
    "regionstore_apply_lag_seconds",
    "Time from a command's acceptance at the gateway to its application in a region.",
    ["role"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "regionstore_consumer_lag_messages",
    "Messages between a consumer's position and the end of its partition.",
    ["group", "topic", "partition"],
)
TARGETS_ROUTED = Counter(
    "regionstore_targets_routed_total",
    "Region writes a consumer's placement table routed commands to, by role and action.",
    ["role", "action"],
)
PLACEMENT_ENTRIES = Gauge(
    "regionstore_placement_entries",
    "Customers in a consumer's placement table, by group and command partition.",
    ["group", "partition"],
)
PLACEMENT_COMMITS = Counter(
    "regionstore_placement_commits_total",
    "Kafka transactions that committed a partition's placement table with its offsets (one per"
    " partition a commit covers): what a consumer pays per commit interval, not per batch.",
    ["group"],
)
PLACEMENT_FENCED = Counter(
    "regionstore_placement_fenced_total",
    "Batch commits refused because another consumer had taken the partition (fenced).",
    ["group"],
)
