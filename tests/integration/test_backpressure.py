"""Backpressure on the real stack: a lag burst is refused with 429, and nothing refused lands.

A gateway of the test's own (a real process, with thresholds low enough for a short burst and
the stack's Kafka, Redis and stores) takes writes while the stack's writer and replicator are
stopped, so the lag grows with every accepted command. Once the lag passes the threshold the
writes are answered 429 with Retry-After, reads still are not, and a refused keyed write leaves
no idempotency record. Read back from the command topic, no refused write was ever published;
once the consumers caught up, writes are taken again, and every accepted write is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from regionstore_gateway.adapters.idempotency import IdempotencyStore
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clients import kafka_connection, redis_client
from regionstore_testing.ports import free_port
from tests.keys import headers, server_secret
from tests.regionstore_env import Env, customer, env
from tests.stack import REPO_ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

THRESHOLD = 400
BATCH = 100
REFUSED_BATCHES = 5
AT_MOST_BATCHES = 200
READY_WITHIN_S = 90.0
CAUGHT_UP_WITHIN_S = 120.0
# Clock ids 0 and 1 are the stack's gateways'.
NODE_ID = 62
CONSUMERS = ("writer", "replicator")


@contextlib.asynccontextmanager
async def gateway_process(logs: Path) -> AsyncIterator[str]:
    """A gateway with low backpressure thresholds on the stack's infrastructure; its URL."""
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "REGIONSTORE_HTTP__PORT": str(port),
        "REGIONSTORE_NODE_ID": str(NODE_ID),
        "REGIONSTORE_SERVICE_NAME": "gateway-backpressure",
        "REGIONSTORE_AUTH__SECRET": server_secret(),
        "REGIONSTORE_BACKPRESSURE__MAX_WRITER_LAG": str(THRESHOLD),
        "REGIONSTORE_BACKPRESSURE__MAX_REPLICATOR_LAG": str(THRESHOLD),
        "REGIONSTORE_BACKPRESSURE__REFRESH_S": "0.2",
    }
    log = logs / "gateway-backpressure.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "regionstore_gateway",
            cwd=REPO_ROOT,
            env=environment,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert process.returncode is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.2)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


class CommandTopic:
    """The command topic from where it ended when opened: the customers it was published for."""

    def __init__(self, consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]) -> None:
        self.consumer = consumer
        self.starts = starts

    async def published(self) -> dict[str, int]:
        """How many commands each customer got since the topic was opened."""
        partitions = list(self.starts)
        for tp, offset in self.starts.items():
            self.consumer.seek(tp, offset)
        ends = await self.consumer.end_offsets(partitions)
        counts: dict[str, int] = {}
        async with asyncio.timeout(60):
            while [tp for tp in partitions if await self.consumer.position(tp) < ends[tp]]:
                batch = await self.consumer.getmany(*partitions, timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        if record.key is not None:
                            key = record.key.decode()
                            counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture
async def command_topic() -> AsyncIterator[CommandTopic]:
    settings = GatewaySettings()
    consumer = AIOKafkaConsumer(**kafka_connection(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        # The services create it with this many partitions, and refuse to run on another count.
        topic = settings.kafka.command_topic
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        consumer.assign(partitions)
        yield CommandTopic(consumer, await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def consumers_stopped(stack: Stack) -> AsyncIterator[None]:
    for name in CONSUMERS:
        await stack.stop(name)
    try:
        yield
    finally:
        for name in CONSUMERS:
            await stack.start(name)


async def test_a_lag_burst_is_refused_once_over_the_threshold_and_nothing_refused_lands(
    env: Env, stack: Stack, command_topic: CommandTopic, tmp_path: Path
) -> None:
    accepted: dict[str, dict[str, Any]] = {}
    refused: set[str] = set()
    refusals: list[httpx.Response] = []
    keyed = {"Idempotency-Key": f"backpressure-{uuid.uuid4().hex}"}
    keyed_body = customer()
    async with gateway_process(tmp_path) as url:
        async with httpx.AsyncClient(base_url=url, headers=headers(), timeout=60) as http:
            async with consumers_stopped(stack):
                for _ in range(AT_MOST_BATCHES):
                    bodies = [customer() for _ in range(BATCH)]
                    response = await http.post(
                        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
                    )
                    if response.status_code == 429:
                        refusals.append(response)
                        refused.update(b["customer_id"] for b in bodies)
                        if len(refusals) == REFUSED_BATCHES:
                            break
                        continue
                    assert response.status_code == 202, response.text
                    for result in response.json()["results"]:
                        assert result["status"] == "accepted", result
                        accepted[result["customer_id"]] = result
                assert len(refusals) == REFUSED_BATCHES, f"no 429 after {len(accepted)} writes"
                # Refused only once the threshold was crossed.
                assert len(accepted) > THRESHOLD

                # Every write route refuses the same way; a keyed write leaves no record.
                single = customer()
                singles = [
                    await http.post("/v1/customers", json=single),
                    await http.post("/v1/customers", json=keyed_body, headers=keyed),
                    await http.post("/create-customer", json=customer()),
                ]
                assert [r.status_code for r in singles] == [429, 429, 429]
                refusals += singles
                refused.update({single["customer_id"], keyed_body["customer_id"]})
                records = redis_client(GatewaySettings().idempotency_redis, "tests", binary=True)
                try:
                    store = IdempotencyStore(
                        records, prefix=GatewaySettings().api.idempotency_key_prefix, ttl_s=60
                    )
                    assert await store.find([keyed["Idempotency-Key"]]) == [None]
                finally:
                    await records.aclose()

                # Reads are never refused for it.
                some = next(iter(accepted))
                read = await http.get(f"/v1/customers/{some}")
                listed = await http.get("/v1/customers", params={"limit": 5})
                assert read.status_code in (200, 404), read.text
                assert listed.status_code == 200, listed.text

            for response in refusals:
                assert response.headers["Retry-After"]
                assert response.json()["outcome"] == "not_accepted"
                assert "commands behind" in response.json()["detail"]

            # The consumers are back: once they caught up, writes are taken again, and the
            # keyed write that was refused is a new write, not a replay.
            await env.consumed()
            deadline = time.monotonic() + CAUGHT_UP_WITHIN_S
            again = await http.post("/v1/customers", json=keyed_body, headers=keyed)
            while again.status_code == 429:
                assert time.monotonic() < deadline, again.text
                await asyncio.sleep(0.5)
                again = await http.post("/v1/customers", json=keyed_body, headers=keyed)
            assert again.status_code == 202, again.text
            assert again.headers.get("Idempotent-Replayed") is None
            accepted[keyed_body["customer_id"]] = again.json()
            refused.discard(keyed_body["customer_id"])

    published = await command_topic.published()
    assert refused.isdisjoint(published), sorted(refused & set(published))[:5]
    assert all(published.get(customer_id) == 1 for customer_id in accepted)

    for result in accepted.values():
        env.remember(result)
    report = await env.settle()
    assert report.clean, report
    for customer_id in sorted(refused)[:20]:
        assert set((await env.documents(customer_id)).values()) == {None}, customer_id
