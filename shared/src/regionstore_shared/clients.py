"""Factories for every client a service opens, with timeouts set and connections named."""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from regionstore_shared.documents import Collection
from regionstore_shared.settings import CommonSettings, KafkaSettings, RedisSettings, StoreSettings

MongoClient = AsyncMongoClient[dict[str, Any]]


def kafka_connection(settings: KafkaSettings) -> dict[str, Any]:
    """Where and how every Kafka client connects: the brokers, and SASL (and TLS) when set.

    Every producer, consumer and admin client takes these, so none connects without the
    credentials. TLS verifies the brokers against the system's CA store.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.uses_sasl:
        options |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    if settings.security_protocol == "SASL_SSL":
        options["ssl_context"] = create_ssl_context()
    return options


def kafka_admin(settings: KafkaSettings, client_id: str) -> AIOKafkaAdminClient:
    """An admin client (topics, group offsets)."""
    return AIOKafkaAdminClient(
        **kafka_connection(settings),
        client_id=client_id,
        request_timeout_ms=settings.request_timeout_ms,
    )


def kafka_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """A producer whose acknowledgement means the command is durable (acks=all, idempotent)."""
    return AIOKafkaProducer(
        **kafka_connection(settings),
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
    gather: bool = False,
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to, after its batch is applied or parked.

    ``listener`` hears of every rebalance of the group (see
    :class:`~regionstore_shared.pipeline.PartitionOwnership`). With ``gather`` and a
    ``settings.fetch_min_bytes`` over one, a fetch waits for that many bytes up to
    ``settings.fetch_max_wait_ms`` (the command consumers: see
    :class:`~regionstore_shared.settings.KafkaSettings`); otherwise it is answered as soon as
    anything comes, and held ``settings.held_fetch_ms`` while nothing does.
    """
    gathering = gather and settings.fetch_min_bytes > 1
    fetch = {
        "fetch_min_bytes": settings.fetch_min_bytes if gathering else 1,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms if gathering else settings.held_fetch_ms,
    }
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=settings.max_batch_records,
        request_timeout_ms=settings.request_timeout_ms,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        **fetch,
    )
    consumer.subscribe(list(topics), listener=listener)
    return consumer


def mongo_client(uri: str, settings: StoreSettings, appname: str) -> MongoClient:
    """A client for one regional store. It fails fast so a dead region is parked, not waited on.

    It logs in with ``settings``' username and password when set, else with the URI's.
    """
    login: dict[str, Any] = {}
    if settings.username:
        login = {"username": settings.username, "password": settings.password.get_secret_value()}
    return AsyncMongoClient(
        uri,
        **login,
        appname=appname,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        connectTimeoutMS=settings.server_selection_timeout_ms,
        socketTimeoutMS=settings.socket_timeout_ms,
        # Applies are idempotent and parked on failure; the driver's own retry would only add
        # latency before the park.
        retryWrites=False,
        tz_aware=True,
    )


def customers(client: MongoClient, settings: StoreSettings) -> Collection:
    """A region's customers collection: in the database its URI names (``mongodb://.../db``),
    else ``settings.database``; so several regions can share one store, a database each."""
    return client.get_default_database(settings.database)[settings.collection]


def mongo_clients(settings: CommonSettings, appname: str) -> dict[str, MongoClient]:
    """One client per configured region."""
    return {
        region: mongo_client(settings.stores[region], settings.store, appname)
        for region in settings.region_map.names
    }


def redis_client(settings: RedisSettings, client_name: str, *, binary: bool = False) -> Redis:
    """A Redis client that answers strings (bytes if ``binary``) and notices dead connections.

    It logs in as the URL says, or else with ``settings``' username and password.
    """
    login: dict[str, Any] = {}
    if settings.password.get_secret_value():
        login = {"password": settings.password.get_secret_value()}
        if settings.username:
            login["username"] = settings.username
    return Redis.from_url(
        settings.url,
        **login,
        decode_responses=not binary,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=15,
        client_name=client_name,
    )


async def open_core(
    stack: contextlib.AsyncExitStack, settings: CommonSettings, name: str
) -> tuple[Redis, dict[str, Collection], AIOKafkaProducer]:
    """Redis, every region's customer collection and a started producer, closed by ``stack``."""
    redis = redis_client(settings.redis, name)
    stack.push_async_callback(redis.aclose)
    collections = {}
    for region, client in mongo_clients(settings, name).items():
        stack.push_async_callback(client.close)
        collections[region] = customers(client, settings.store)
    producer = kafka_producer(settings.kafka, name)
    await producer.start()
    stack.push_async_callback(producer.stop)
    return redis, collections, producer
