"""Scenario 1: what Kafka and one regional store do on their own, with the ingest's data.

Everything here uses the services' own client settings (``kafka_producer``, the consumer's
fetch size), a fresh random topic and a fresh database, both removed afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from regionstore_shared.clients import (
    customers,
    kafka_admin,
    kafka_connection,
    kafka_producer,
    mongo_client,
)
from regionstore_shared.indexes import CUSTOMER_INDEXES
from regionstore_shared.settings import CommonSettings

from .plan import Plan
from .stats import latency_summary, median, rate

log = logging.getLogger("regionstore_bench")

INSERT_CHUNK = 1000


async def _produce_all(
    settings: CommonSettings, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    producer = kafka_producer(settings.kafka, "bench-baseline")
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _consume_all(settings: CommonSettings, topic: str, count: int) -> float:
    kafka = settings.kafka
    # The services' fetch settings, without a group: nothing is left behind on the broker.
    consumer = AIOKafkaConsumer(
        **kafka_connection(kafka),
        client_id="bench-baseline",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=kafka.max_batch_records,
        request_timeout_ms=kafka.request_timeout_ms,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def _round_trips(
    settings: CommonSettings, topic: str, messages: list[tuple[bytes, bytes]], count: int
) -> list[float]:
    producer = kafka_producer(settings.kafka, "bench-rtt")
    await producer.start()
    try:
        for key, value in messages[:50]:  # warm the connection and metadata
            await producer.send_and_wait(topic, value=value, key=key)
        seconds = []
        for i in range(count):
            key, value = messages[i % len(messages)]
            started = time.perf_counter()
            await producer.send_and_wait(topic, value=value, key=key)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        await producer.stop()


async def kafka_baselines(
    settings: CommonSettings, plan: Plan, messages: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """Produce and consume rates of the ingest's messages, and single-message round trips."""
    kafka = settings.kafka
    admin = kafka_admin(kafka, "bench-admin")
    await admin.start()
    produce_s: list[float] = []
    consume_s: list[float] = []
    topics: list[str] = []
    try:
        for run in range(plan.baseline_runs):
            topic = f"bench.baseline.{uuid.uuid4().hex[:12]}"
            topics.append(topic)
            await admin.create_topics([NewTopic(topic, kafka.partitions, kafka.replication_factor)])
            produce_s.append(await _produce_all(settings, topic, messages))
            consume_s.append(await _consume_all(settings, topic, len(messages)))
            log.info(
                "baseline kafka run %d: produce %.0f msg/s, consume %.0f msg/s",
                run + 1,
                len(messages) / produce_s[-1],
                len(messages) / consume_s[-1],
            )
        rtt = await _round_trips(settings, topics[-1], messages, plan.rtt_messages)
    finally:
        if topics:
            await admin.delete_topics(topics)
        await admin.close()
    sizes = [len(value) for _, value in messages]
    produce_rates = [rate(len(messages), s) for s in produce_s]
    consume_rates = [rate(len(messages), s) for s in consume_s]
    log.info("baseline produce round trip p50 %.2f ms", median(rtt) * 1000)
    return {
        "kafka_produce": {
            "messages": float(len(messages)),
            "message_bytes_mean": sum(sizes) / len(sizes),
            "partitions": float(kafka.partitions),
            "linger_ms": float(kafka.linger_ms),
            "runs_msgs_per_s": produce_rates,
            "msgs_per_s": median(produce_rates),
        },
        "kafka_consume": {
            "messages": float(len(messages)),
            "max_poll_records": float(kafka.max_batch_records),
            "runs_msgs_per_s": consume_rates,
            "msgs_per_s": median(consume_rates),
        },
        "produce_rtt": latency_summary(rtt),
    }


async def _fill(collection: Any, documents: list[dict[str, Any]], count: int) -> None:
    for start in range(0, count, INSERT_CHUNK):
        chunk = [
            documents[i % len(documents)] | {"_id": uuid.uuid4().hex}
            for i in range(start, min(count, start + INSERT_CHUNK))
        ]
        await collection.insert_many(chunk, ordered=False)


async def insert_baseline(
    settings: CommonSettings,
    plan: Plan,
    documents: list[dict[str, Any]],
    region: str,
    *,
    holding: int = 0,
) -> dict[str, Any]:
    """insert_many of the ingest's documents into a fresh database of one regional store.

    The collection gets the secondary indexes the services create on the customers collection
    (CUSTOMER_INDEXES), so the rate compares like for like with the ingest and the drain, which
    maintain them on every write. Documents go in chunks of INSERT_CHUNK, unordered, one after
    the other: the store's own bulk-write rate. With ``holding``, the collection first receives
    that many copies under new ids, untimed: a store's insert rate falls as its collection and
    its indexes grow, and a scenario writes into a full one.
    """
    # A long socket timeout: a slow chunk should be measured, not fail.
    store = settings.store.model_copy(update={"socket_timeout_ms": 120_000})
    client = mongo_client(settings.stores[region], store, "bench-baseline")
    rates: list[float] = []
    indexes: list[str] = []
    try:
        live = sorted(await customers(client, store).index_information())
        for run in range(plan.insert_runs):
            name = f"bench_{uuid.uuid4().hex[:12]}"
            collection = client[name][settings.store.collection]
            try:
                # Unlike the services' start-up, a failure here stops the run: a baseline
                # without the indexes would flatter the store.
                await collection.create_indexes(list(CUSTOMER_INDEXES))
                indexes = sorted(await collection.index_information())
                await _fill(collection, documents, holding)
                started = time.perf_counter()
                for start in range(0, len(documents), INSERT_CHUNK):
                    chunk = [dict(d) for d in documents[start : start + INSERT_CHUNK]]
                    await collection.insert_many(chunk, ordered=False)
                rates.append(rate(len(documents), time.perf_counter() - started))
            finally:
                await client.drop_database(name)
            log.info("baseline insert_many run %d: %.0f docs/s", run + 1, rates[-1])
    finally:
        await client.close()
    if live and live != indexes:
        # A store keeps the indexes services running older code created.
        log.warning(
            "baseline indexes %s differ from %s's customers collection %s", indexes, region, live
        )
    return {
        "region": region,
        "documents": float(len(documents)),
        "chunk": float(INSERT_CHUNK),
        "indexes": indexes,
        "customer_collection_indexes": live,
        "holding": float(holding),
        "runs_docs_per_s": rates,
        "docs_per_s": median(rates),
    }
