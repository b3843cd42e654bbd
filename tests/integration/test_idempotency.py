"""Idempotency keys on the real stack: a write retried with its key is one command, applied once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from regionstore_gateway.adapters.idempotency import IdempotencyStore
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clients import kafka_connection, redis_client
from regionstore_shared.schemas import Command, decode_command
from tests.regionstore_env import Env, customer, env, new_id

pytestmark = pytest.mark.integration
__all__ = ["env"]


class CommandLog:
    """The command topic from a starting point: what was published after it, per customer."""

    def __init__(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        self.consumer = consumer
        self.partitions = partitions

    async def published_for(self, customer_id: str) -> list[Command]:
        """Every command published for a customer since the log was opened."""
        ends = await self.consumer.end_offsets(self.partitions)
        ours: list[Command] = []
        async with asyncio.timeout(60):
            while [tp for tp in self.partitions if await self.consumer.position(tp) < ends[tp]]:
                batch = await self.consumer.getmany(*self.partitions, timeout_ms=1000)
                ours += [
                    decode_command(record.value)
                    for records in batch.values()
                    for record in records
                    if record.key == customer_id.encode() and record.value is not None
                ]
        return ours


@pytest_asyncio.fixture(loop_scope="session")
async def command_log() -> AsyncIterator[CommandLog]:
    settings = GatewaySettings()
    topic = settings.kafka.command_topic
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_connection(settings.kafka),
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        await consumer.seek_to_end()
        partitions = sorted(consumer.assignment())
        assert partitions, f"no partitions for {topic}"
        for tp in partitions:
            await consumer.position(tp)
        yield CommandLog(consumer, partitions)
    finally:
        await consumer.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def idempotency_key() -> AsyncIterator[str]:
    """A fresh key, whose record is removed from Redis afterwards."""
    settings = GatewaySettings()
    key = f"integration-{new_id()}"
    yield key
    redis: Redis = redis_client(settings.idempotency_redis, "tests")
    store = IdempotencyStore(
        redis, prefix=settings.api.idempotency_key_prefix, ttl_s=settings.api.idempotency_ttl_s
    )
    try:
        await redis.delete(store.redis_key(key))
    finally:
        await redis.aclose()


async def test_a_post_retried_with_its_key_is_one_command_applied_once(
    env: Env, command_log: CommandLog, idempotency_key: str
) -> None:
    body = customer(zip_prefix=1310)  # region_1, replica region_3
    headers = {"Idempotency-Key": idempotency_key}
    first = await env.http.post("/v1/customers", json=body, headers=headers)
    again = await env.http.post("/v1/customers", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202), again.text
    accepted = first.json()
    assert again.json() == accepted
    assert again.headers.get("Idempotent-Replayed") == "true"

    (command,) = await command_log.published_for(body["customer_id"])
    assert (str(command.command_id), command.version) == (
        accepted["command_id"],
        accepted["version"],
    )

    env.remember(accepted)
    report = await env.settle()
    assert report.clean, report
    docs = await env.documents(body["customer_id"])
    for region in ("region_1", "region_3"):
        doc = docs[region]
        assert doc is not None
        assert (doc["_v"], doc["_deleted"]) == (accepted["version"], False)


async def test_the_same_key_with_another_body_is_refused(
    env: Env, command_log: CommandLog, idempotency_key: str
) -> None:
    body = customer(zip_prefix=1310)
    headers = {"Idempotency-Key": idempotency_key}
    first = await env.http.post("/v1/customers", json=body, headers=headers)
    assert first.status_code == 202, first.text
    env.remember(first.json())
    other = await env.http.post(
        "/v1/customers", json={**body, "customer_city": "campinas"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert len(await command_log.published_for(body["customer_id"])) == 1
    assert (await env.settle()).clean
