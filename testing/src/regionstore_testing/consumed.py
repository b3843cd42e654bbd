"""Waits until consumer groups have committed everything a topic holds now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.settings import KafkaSettings


async def wait_consumed(
    kafka: KafkaSettings, topic: str, groups: Iterable[str], *, within_s: float
) -> None:
    """Return once every group's committed offsets reach the topic's current ends.

    A group that committed past a command has written (or parked) whatever it routes of it.
    Raises TimeoutError naming the partitions still behind.
    """
    admin = kafka_admin(kafka, "consumed-check")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        if not partitions:
            raise ValueError(f"topic {topic} has no partitions (does it exist?)")
        consumer = AIOKafkaConsumer(**kafka_connection(kafka), client_id="consumed-check")
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        deadline = time.monotonic() + within_s
        for group in groups:
            while True:
                done = await admin.list_consumer_group_offsets(group, partitions=partitions)
                # A partition the group never committed reads -1, or is left out of the answer:
                # behind only if it holds anything.
                behind = sorted(
                    tp.partition
                    for tp in partitions
                    if (tp not in done or max(done[tp].offset, 0) < ends[tp]) and ends[tp] > 0
                )
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{group} is behind on {topic} partitions {behind}")
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
