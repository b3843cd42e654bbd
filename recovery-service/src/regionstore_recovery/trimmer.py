"""Parked means until drained: a parking topic's records go once its region has taken them.

A region's recovery group commits an offset only after every command below it was applied to
the region (or dead-lettered), so everything below the group's committed offset is a command
the region has. Recovery deletes exactly that (Kafka's DeleteRecords moves the partition's log
start offset) at every resync, so a drained command stays in Kafka at most one resync interval.

What is never deleted: a parked command the region has not taken, however long it waits. The
offset asked for is the commit the group coordinator reported, never one this process thinks
it reached, so a drainer killed before its commit, a rebalance, or recovery killed in the
middle of a trim (a DeleteRecords the broker applied or not, whole per partition) can only
leave drained commands behind for the next trim, never take an undrained one. A commit past
the end of a partition is left alone: it is no drain's progress through these records (the
topic was made anew), and the next drain reads them from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client import Counter, Gauge

from regionstore_shared.backlog import Offsets

log = logging.getLogger(__name__)

TRIMMED = Counter(
    "regionstore_pending_trimmed_messages_total",
    "Drained commands deleted from a region's parking topic (pending.<region>).",
    ["region"],
)
HELD = Gauge(
    "regionstore_pending_held_messages",
    "Commands a region's parking topic holds, drained or not, after the trim of each resync.",
    ["region"],
)


class Trimmer:
    """Deletes the records of a parking topic that its recovery group has consumed."""

    def __init__(self, admin: AIOKafkaAdminClient, *, timeout_ms: int) -> None:
        self._admin = admin
        self._timeout_ms = timeout_ms

    async def trim(self, region: str, offsets: Mapping[TopicPartition, Offsets]) -> int:
        """Delete what ``region``'s group consumed, by the ``offsets`` just read; how many
        records were deleted. Raises KafkaError: nothing or part of it was deleted, and the
        next trim deletes the rest."""
        cut = {
            tp: RecordsToDelete(at.committed)
            for tp, at in offsets.items()
            if at.consumed and at.committed is not None
        }
        if not cut:
            return 0
        await self._admin.delete_records(cut, timeout_ms=self._timeout_ms)
        deleted = sum(offsets[tp].consumed for tp in cut)
        TRIMMED.labels(region=region).inc(deleted)
        log.info(
            "drained commands deleted",
            extra={
                "region": region,
                "deleted": deleted,
                "below": {f"{tp.topic}:{tp.partition}": r.before_offset for tp, r in cut.items()},
            },
        )
        return deleted
