"""The trim: only what a region's recovery group committed past is ever deleted."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.errors import KafkaTimeoutError

from regionstore_recovery.trimmer import Trimmer
from regionstore_shared.backlog import Offsets

TOPIC = "pending.region_1"


class Admin:
    def __init__(self, error: Exception | None = None) -> None:
        self.asked: list[tuple[dict[TopicPartition, int], int]] = []
        self.error = error

    async def delete_records(
        self, records: dict[TopicPartition, RecordsToDelete], timeout_ms: int
    ) -> dict[TopicPartition, int]:
        self.asked.append(({tp: r.before_offset for tp, r in records.items()}, timeout_ms))
        if self.error is not None:
            raise self.error
        return {tp: r.before_offset for tp, r in records.items()}


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


async def test_deletes_exactly_below_each_commit_and_counts_what_went() -> None:
    admin = Admin()
    offsets = {
        tp(0): Offsets(start=0, end=10, committed=7),
        tp(1): Offsets(start=4, end=12, committed=12),
    }
    deleted = await Trimmer(admin, timeout_ms=1500).trim("region_1", offsets)
    assert admin.asked == [({tp(0): 7, tp(1): 12}, 1500)]
    assert deleted == 7 + 8


@pytest.mark.parametrize(
    ("offsets", "why"),
    [
        (Offsets(start=0, end=10, committed=None), "never drained"),
        (Offsets(start=6, end=10, committed=6), "trimmed up to the commit already"),
        (Offsets(start=6, end=10, committed=2), "a commit below the first record held"),
        (Offsets(start=0, end=10, committed=15), "a commit past the end: a topic made anew"),
        (Offsets(start=0, end=0, committed=0), "empty"),
    ],
)
async def test_asks_nothing_where_nothing_held_was_consumed(offsets: Offsets, why: str) -> None:
    admin = Admin()
    assert await Trimmer(admin, timeout_ms=1000).trim("region_1", {tp(0): offsets}) == 0
    assert admin.asked == [], why


async def test_a_partition_with_nothing_to_delete_is_left_out_of_the_request() -> None:
    admin = Admin()
    offsets = {
        tp(0): Offsets(start=0, end=5, committed=None),
        tp(1): Offsets(start=0, end=5, committed=3),
    }
    await Trimmer(admin, timeout_ms=1000).trim("region_1", offsets)
    assert admin.asked == [({tp(1): 3}, 1000)]


async def test_a_failed_delete_is_raised_for_the_caller_to_try_again() -> None:
    admin = Admin(error=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await Trimmer(admin, timeout_ms=1000).trim(
            "region_1", {tp(0): Offsets(start=0, end=5, committed=5)}
        )
