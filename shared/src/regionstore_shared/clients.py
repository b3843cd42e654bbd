"""Factories for every client a service opens, with timeouts set and connections named."""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from redis.asyncio import Redis

from regionstore_shared.settings import CommonSettings, KafkaSettings, RedisSettings, StoreSettings

MongoClient = AsyncMongoClient[dict[str, Any]]


def kafka_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """A producer whose acknowledgement means the command is durable (acks=all, idempotent)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        request_timeout_ms=settings.request_timeout_ms,
        max_batch_size=1024 * 1024,
    )


def kafka_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str,
    client_id: str,
    listener: ConsumerRebalanceListener | None = None,
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to, after its batch is applied or parked.

    ``listener`` hears of every rebalance of the group (see
    :class:`~regionstore_shared.pipeline.PartitionOwnership`).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=settings.max_batch_records,
        request_timeout_ms=settings.request_timeout_ms,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
    )
    consumer.subscribe(list(topics), listener=listener)
    return consumer


def mongo_client(uri: str, settings: StoreSettings, appname: str) -> MongoClient:
    """A client for one regional store. It fails fast so a dead region is parked, not waited on."""
    return AsyncMongoClient(
        uri,
        appname=appname,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        connectTimeoutMS=settings.server_selection_timeout_ms,
        socketTimeoutMS=settings.socket_timeout_ms,
        # Applies are idempotent and parked on failure; the driver's own retry would only add
        # latency before the park.
        retryWrites=False,
        tz_aware=True,
    )


def mongo_clients(settings: CommonSettings, appname: str) -> dict[str, MongoClient]:
    """One client per configured region."""
    return {
        region: mongo_client(settings.stores[region], settings.store, appname)
        for region in settings.region_map.names
    }


def redis_client(settings: RedisSettings, client_name: str) -> Redis:
    """A Redis client that answers strings and notices dead connections."""
    return Redis.from_url(
        settings.url,
        decode_responses=True,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=15,
        client_name=client_name,
    )


async def open_core(
    stack: contextlib.AsyncExitStack, settings: CommonSettings, name: str
) -> tuple[Redis, dict[str, AsyncCollection[dict[str, Any]]], AIOKafkaProducer]:
    """Redis, every region's customer collection and a started producer, closed by ``stack``."""
    redis = redis_client(settings.redis, name)
    stack.push_async_callback(redis.aclose)
    collections = {}
    for region, client in mongo_clients(settings, name).items():
        stack.push_async_callback(client.close)
        collections[region] = client[settings.store.database][settings.store.collection]
    producer = kafka_producer(settings.kafka, name)
    await producer.start()
    stack.push_async_callback(producer.stop)
    return redis, collections, producer
