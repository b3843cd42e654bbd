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
        """Commands not yet applied by each consumer group, by name; None where unknown.

        Every group's commits are read first, then the topic's starts and ends once for them
        all: the gateway reads this every second, and the groups share the topic.
        """
        topic = self._settings.command_topic
        lag: dict[str, int | None] = dict.fromkeys(groups)
        try:
            tps = await self._topic_partitions(topic)
            if not tps:
                none: dict[str, int | None] = dict.fromkeys(groups, 0)
                return none
            committed: dict[str, dict[TopicPartition, int | None]] = {}
            for name, group in groups.items():
                try:
                    committed[name] = await self._committed(group, tps)
                except KafkaError as error:
                    log.warning(
                        "lag unavailable",
                        extra={"topic": topic, "group": group, "error": str(error)},
                    )
            if not committed:
                return lag
            bounds = await self._bounds(tps)
        except KafkaError as error:
            log.warning("lag unavailable", extra={"topic": topic, "error": str(error)})
            return lag
        for name, commits in committed.items():
            lag[name] = sum(_offsets(tp, bounds, commits).backlog for tp in tps)
        return lag

    async def offsets(self, topic: str, group: str) -> dict[TopicPartition, Offsets]:
        """Every partition of ``topic`` and where ``group`` stands in it; raises KafkaError.

        A topic that does not exist yet has no partitions.
        """
        tps = await self._topic_partitions(topic)
        if not tps:
            return {}
        # The commit first: read before the end, a real one is never past it.
        committed = await self._committed(group, tps)
        bounds = await self._bounds(tps)
        return {tp: _offsets(tp, bounds, committed) for tp in tps}

    async def _topic_partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, described once; none (asked again) while it does not exist."""
        tps = self._partitions.get(topic)
        if tps is None:
            described = await self._admin.describe_topics([topic])
            tps = sorted(
                TopicPartition(topic, p["partition"])
                for t in described
                if t["error_code"] == 0
                for p in t["partitions"]
            )
            if tps:
                self._partitions[topic] = tps
        return tps

    async def _committed(
        self, group: str, tps: list[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        found: dict[TopicPartition, int | None] = {}
        for tp in tps:
            done = committed.get(tp)
            # Kafka answers -1 for a partition the group never committed.
            found[tp] = done.offset if done is not None and done.offset >= 0 else None
        return found

    async def _bounds(self, tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """Each partition's first record held and its end."""
        starts = await self._offsets.beginning_offsets(tps)
        ends = await self._offsets.end_offsets(tps)
        return {tp: (starts[tp], ends[tp]) for tp in tps}


def _offsets(
    tp: TopicPartition,
    bounds: Mapping[TopicPartition, tuple[int, int]],
    committed: Mapping[TopicPartition, int | None],
) -> Offsets:
    start, end = bounds[tp]
    return Offsets(start=start, end=end, committed=committed.get(tp))
