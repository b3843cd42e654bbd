"""How far behind the consumers are: end offsets minus where each group resumes, per topic and
group; and what a group consumed that its topic still holds."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata

from regionstore_shared import backlog
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.settings import KafkaSettings

UNKNOWN_TOPIC = 3


class Cluster:
    """What the broker knows: partitions and end offsets per topic, commits per group."""

    def __init__(self) -> None:
        self.ends: dict[str, list[int]] = {}
        self.starts: dict[str, list[int]] = {}
        self.commits: dict[str, dict[TopicPartition, int]] = {}
        self.failing_groups: set[str] = set()
        self.described: list[str] = []
        self.events: list[str] = []
        self.asked: list[str] = []
        """The offset requests made: commits (by group) and ends, in order."""

    def topic(self, name: str, ends: list[int], starts: list[int] | None = None) -> None:
        self.ends[name] = ends
        self.starts[name] = starts or [0] * len(ends)

    def commit(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        self.commits[group] = {TopicPartition(topic, p): o for p, o in offsets.items()}


class FakeAdmin:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        self.cluster.events.append("admin started")

    async def close(self) -> None:
        self.cluster.events.append("admin closed")

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.cluster.described.extend(topics)
        return [
            {
                "topic": name,
                "error_code": 0 if name in self.cluster.ends else UNKNOWN_TOPIC,
                "partitions": [
                    {"partition": p} for p in range(len(self.cluster.ends.get(name, [])))
                ],
            }
            for name in topics
        ]

    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.cluster.asked.append(group)
        if group in self.cluster.failing_groups:
            raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1:9092")
        # Kafka answers -1 for a partition the group never committed.
        commits = self.cluster.commits.get(group, {})
        return {tp: OffsetAndMetadata(commits.get(tp, -1), "") for tp in partitions}


class FakeOffsets:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        self.cluster.events.append("offsets started")

    async def stop(self) -> None:
        self.cluster.events.append("offsets stopped")

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.cluster.asked.append("ends")
        return {tp: self.cluster.ends[tp.topic][tp.partition] for tp in partitions}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: self.cluster.starts[tp.topic][tp.partition] for tp in partitions}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    cluster = Cluster()
    monkeypatch.setattr(backlog, "kafka_admin", lambda *_, **__: FakeAdmin(cluster))
    monkeypatch.setattr(backlog, "AIOKafkaConsumer", lambda *_, **__: FakeOffsets(cluster))
    return cluster


@pytest.fixture
def probe(cluster: Cluster) -> BacklogProbe:
    return BacklogProbe(KafkaSettings(), "recovery")


class TestPendingBacklog:
    async def test_counts_end_minus_committed_over_every_partition(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [10, 5, 7])
        cluster.commit("regionstore.recovery.region_1", "pending.region_1", {0: 4, 1: 5, 2: 1})
        assert await probe.backlog(["region_1"]) == {"region_1": 6 + 0 + 6}

    async def test_a_group_that_never_committed_counts_from_the_start(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_2", [3, 4])
        cluster.commit("regionstore.recovery.region_2", "pending.region_2", {0: 3})
        assert await probe.backlog(["region_2"]) == {"region_2": 0 + 4}

    async def test_no_commit_counts_from_the_first_record_held(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_2", [10, 4], starts=[6, 0])
        cluster.commit("regionstore.recovery.region_2", "pending.region_2", {1: 1})
        offsets = await probe.offsets("pending.region_2", "regionstore.recovery.region_2")
        assert [(o.resume, o.end) for o in offsets.values()] == [(6, 10), (1, 4)]
        assert await probe.backlog(["region_2"]) == {"region_2": 4 + 3}

    async def test_each_region_is_its_own_topic_and_recovery_group(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [10])
        cluster.topic("pending.region_3", [10])
        cluster.commit("regionstore.recovery.region_1", "pending.region_1", {0: 10})
        cluster.commit("regionstore.recovery.region_3", "pending.region_3", {0: 2})
        assert await probe.backlog(["region_1", "region_3"]) == {"region_1": 0, "region_3": 8}

    async def test_a_commit_past_the_end_counts_nothing(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [5])
        cluster.commit("regionstore.recovery.region_1", "pending.region_1", {0: 9})
        assert await probe.backlog(["region_1"]) == {"region_1": 0}

    async def test_a_topic_not_created_yet_counts_nothing_and_is_asked_again(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        assert await probe.backlog(["region_1"]) == {"region_1": 0}
        cluster.topic("pending.region_1", [2])
        assert await probe.backlog(["region_1"]) == {"region_1": 2}
        assert cluster.described == ["pending.region_1", "pending.region_1"]

    async def test_partitions_are_described_once_per_topic(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [1, 1])
        for _ in range(3):
            await probe.backlog(["region_1"])
        assert cluster.described == ["pending.region_1"]

    async def test_a_trimmed_partition_counts_from_the_commit_as_before(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [10, 8], starts=[6, 8])
        cluster.commit("regionstore.recovery.region_1", "pending.region_1", {0: 6, 1: 8})
        assert await probe.backlog(["region_1"]) == {"region_1": 4}

    async def test_without_a_commit_a_trimmed_partition_counts_from_its_first_record(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        # An expired commit (an empty group's, after offsets.retention.minutes): the next
        # drain starts at the first record held, so that is what is left.
        cluster.topic("pending.region_1", [10, 8], starts=[6, 8])
        assert await probe.backlog(["region_1"]) == {"region_1": 4 + 0}

    async def test_a_commit_below_the_first_record_held_counts_from_that_record(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_1", [10], starts=[7])
        cluster.commit("regionstore.recovery.region_1", "pending.region_1", {0: 2})
        assert await probe.backlog(["region_1"]) == {"region_1": 3}

    async def test_a_failure_leaves_that_region_unknown_and_the_others_counted(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        for region in ("region_1", "region_2"):
            cluster.topic(f"pending.{region}", [4])
        cluster.failing_groups = {"regionstore.recovery.region_1"}
        assert await probe.backlog(["region_1", "region_2"]) == {"region_1": None, "region_2": 4}


class TestCommandLag:
    async def test_counts_what_each_group_has_not_applied_by_name(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("customers.commands", [100, 50])
        cluster.commit("regionstore.writer", "customers.commands", {0: 100, 1: 40})
        cluster.commit("regionstore.replicator", "customers.commands", {0: 90, 1: 30})
        lag = await probe.command_lag(
            {"writer": "regionstore.writer", "replicator": "regionstore.replicator"}
        )
        assert lag == {"writer": 10, "replicator": 30}

    async def test_a_kafka_error_is_unknown_not_zero(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("customers.commands", [100])
        cluster.failing_groups = {"regionstore.writer"}
        assert await probe.command_lag({"writer": "regionstore.writer"}) == {"writer": None}

    async def test_one_group_unreadable_leaves_the_other_counted(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("customers.commands", [100])
        cluster.commit("regionstore.replicator", "customers.commands", {0: 70})
        cluster.failing_groups = {"regionstore.writer"}
        lag = await probe.command_lag(
            {"writer": "regionstore.writer", "replicator": "regionstore.replicator"}
        )
        assert lag == {"writer": None, "replicator": 30}

    async def test_the_ends_are_read_once_for_every_group_after_their_commits(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("customers.commands", [100, 50])
        await probe.command_lag(
            {"writer": "regionstore.writer", "replicator": "regionstore.replicator"}
        )
        # A commit read after the end could be past it; one read of the ends serves both.
        assert cluster.asked == ["regionstore.writer", "regionstore.replicator", "ends"]

    async def test_a_topic_not_created_yet_lags_nothing(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        assert await probe.command_lag({"writer": "regionstore.writer"}) == {"writer": 0}


class TestOffsets:
    async def test_what_a_group_consumed_and_the_topic_still_holds(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_2", [10, 8, 5, 9], starts=[2, 8, 0, 4])
        cluster.commit(
            "regionstore.recovery.region_2", "pending.region_2", {0: 7, 1: 8, 2: 9, 3: 1}
        )
        offsets = await probe.offsets("pending.region_2", "regionstore.recovery.region_2")
        held = {tp.partition: (o.consumed, o.backlog) for tp, o in offsets.items()}
        # 2: a commit past the end is no drain's progress (the topic was made anew): the
        # records there are unconsumed. 3: a commit below the first record held.
        assert held == {0: (5, 3), 1: (0, 0), 2: (0, 0), 3: (0, 5)}

    async def test_a_partition_never_committed_has_consumed_nothing(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        cluster.topic("pending.region_2", [10], starts=[3])
        (offsets,) = (await probe.offsets("pending.region_2", "g")).values()
        assert (offsets.committed, offsets.consumed, offsets.backlog) == (None, 0, 7)

    async def test_a_topic_not_created_yet_has_no_partitions(
        self, cluster: Cluster, probe: BacklogProbe
    ) -> None:
        assert await probe.offsets("pending.region_9", "g") == {}


async def test_start_and_close_connect_and_disconnect_both_clients(
    cluster: Cluster, probe: BacklogProbe
) -> None:
    await probe.start()
    await probe.close()
    assert cluster.events == ["admin started", "offsets started", "offsets stopped", "admin closed"]
