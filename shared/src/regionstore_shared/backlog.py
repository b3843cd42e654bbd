"""How far behind the consumers are: parked commands per region, unapplied commands per group."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Offsets:
    """Where one partition stands for one consumer group."""

    start: int
    """The log start offset: the first record the partition still holds (retention, or
    recovery's trimming of what it drained, moves it)."""
    end: int
    """The high watermark: the offset the next record will get."""
    committed: int | None
    """The group's committed offset, the next record it reads; None if it never committed
    (or its commit expired)."""

    @property
    def resume(self) -> int:
        """Where the group's next consumer starts: its commit, or the first record held when it
        has none or its commit fell below it (``auto_offset_reset="earliest"``)."""
        return self.start if self.committed is None else max(self.committed, self.start)

    @property
    def backlog(self) -> int:
        """Records the group has not consumed yet."""
        return max(0, self.end - self.resume)

    @property
    def consumed(self) -> int:
        """Records the group consumed and the partition still holds: the first ``consumed``
        records from ``start`` may be deleted. None past the end: a commit there is no
        consumer's progress through these records (the topic was made anew), so nothing
        it covers is known to be consumed."""
        if self.committed is None or self.committed > self.end:
            return 0
        return max(0, self.committed - self.start)


class BacklogProbe:
    """Reads the parking topics' start and end offsets and the recovery groups' commits
    (and the same of the command topic for the writer's and the replicator's groups)."""

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        self._settings = settings
        self._admin = kafka_admin(settings, f"{client_id}-backlog")
        self._offsets = AIOKafkaConsumer(
            **kafka_connection(settings),
            client_id=f"{client_id}-backlog",
            enable_auto_commit=False,
            request_timeout_ms=settings.request_timeout_ms,
        )
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        """Connect both clients."""
        await self._admin.start()
        await self._offsets.start()

    async def close(self) -> None:
        """Disconnect both clients."""
        await self._offsets.stop()
        await self._admin.close()

    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]:
        """Parked-but-not-replayed commands per region; None where Kafka could not say."""
        return {
            region: None if offsets is None else sum(o.backlog for o in offsets.values())
            for region, offsets in (await self.pending(regions)).items()
        }

    async def pending(
        self, regions: Iterable[str]
    ) -> dict[str, dict[TopicPartition, Offsets] | None]:
        """Each region's parking topic and where its recovery group stands in it, by
        partition; None where Kafka could not say."""
        found: dict[str, dict[TopicPartition, Offsets] | None] = {}
        for region in regions:
            topic = self._settings.pending_topic(region)
            try:
                found[region] = await self.offsets(topic, self._settings.recovery_group(region))
            except KafkaError as error:
                log.warning("lag unavailable", extra={"topic": topic, "error": str(error)})
                found[region] = None
        return found

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]:
        """Commands not yet applied by each consumer group, by name; None where unknown."""
        topic = self._settings.command_topic
        return {name: await self._lag_or_none(topic, group) for name, group in groups.items()}

    async def _lag_or_none(self, topic: str, group: str) -> int | None:
        try:
            return await self._lag(topic, group)
        except KafkaError as error:
            log.warning("lag unavailable", extra={"topic": topic, "error": str(error)})
            return None

    async def offsets(self, topic: str, group: str) -> dict[TopicPartition, Offsets]:
        """Every partition of ``topic`` and where ``group`` stands in it; raises KafkaError.

        A topic that does not exist yet has no partitions.
        """
        tps = self._partitions.get(topic)
        if tps is None:
            described = await self._admin.describe_topics([topic])
            tps = sorted(
                TopicPartition(topic, p["partition"])
                for t in described
                if t["error_code"] == 0
                for p in t["partitions"]
            )
            if not tps:
                return {}
            self._partitions[topic] = tps
        # The commit first: read before the end, a real one is never past it.
        committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        starts = await self._offsets.beginning_offsets(tps)
        ends = await self._offsets.end_offsets(tps)
        found = {}
        for tp in tps:
            done = committed.get(tp)
            # Kafka answers -1 for a partition the group never committed.
            offset = done.offset if done is not None and done.offset >= 0 else None
            found[tp] = Offsets(start=starts[tp], end=ends[tp], committed=offset)
        return found

    async def _lag(self, topic: str, group: str) -> int:
        return sum(offsets.backlog for offsets in (await self.offsets(topic, group)).values())
