"""The local stack's pieces each work on their own: stores, Kafka, Redis events, services.

Also how `make up` behaves around a running stack, and the one-line messages of the start
scripts (those two need no stack).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from pymongo import AsyncMongoClient

from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.ports import PORTS_ENV, read_ports
from regionstore_shared.settings import CommonSettings, KafkaSettings
from regionstore_testing.ports import free_port
from tests.stack import REPO_ROOT, Stack

LOCAL_BIN = REPO_ROOT / "deploy" / "local" / "bin"
EVENT_WITHIN_S = 15.0
integration = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@integration
@pytest.mark.parametrize("region", ["region_1", "region_2", "region_3"])
async def test_a_document_round_trips_through_each_store(stack: Stack, region: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        stack.endpoints.stores[region], serverSelectionTimeoutMS=5000
    )
    database = unique("smoke")
    try:
        collection = client[database]["customers"]
        await collection.insert_one({"_id": "c1", "customer_city": "sao paulo", "n": 1})
        found = await collection.find_one({"_id": "c1"})
        assert found == {"_id": "c1", "customer_city": "sao paulo", "n": 1}
    finally:
        await client.drop_database(database)
        await client.close()


def kafka_settings(stack: Stack) -> KafkaSettings:
    """The stack's broker, with the credentials the services read (REGIONSTORE_KAFKA__*)."""
    return CommonSettings().kafka.model_copy(
        update={"bootstrap_servers": stack.endpoints.kafka_bootstrap}
    )


@pytest.fixture
async def topic(stack: Stack) -> AsyncIterator[str]:
    """A fresh one-partition topic, deleted after the test."""
    name = unique("smoke")
    admin = kafka_admin(kafka_settings(stack), "tests-smoke")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@integration
async def test_a_message_round_trips_through_kafka(stack: Stack, topic: str) -> None:
    connection = kafka_connection(kafka_settings(stack))
    producer = AIOKafkaProducer(**connection, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, **connection, auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), EVENT_WITHIN_S)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"k1", b"hello")


@integration
async def test_redis_publishes_keyspace_events_for_set(stack: Stack) -> None:
    client = aioredis.from_url(stack.endpoints.redis_url)
    prefix = unique("smoke") + ":"
    db = client.connection_pool.connection_kwargs.get("db", 0)
    pubsub = client.pubsub()
    try:
        await pubsub.psubscribe(f"__keyspace@{db}__:{prefix}*")
        await client.set(f"{prefix}region_1:status", "available")
        event = await next_message(pubsub)
        assert event["channel"] == f"__keyspace@{db}__:{prefix}region_1:status".encode()
        assert event["data"] == b"set"
    finally:
        await client.delete(f"{prefix}region_1:status")
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def next_message(pubsub: aioredis.client.PubSub) -> dict[str, object]:
    deadline = time.monotonic() + EVENT_WITHIN_S
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return dict(message)
    raise AssertionError(f"no keyspace event within {EVENT_WITHIN_S}s")


@integration
@pytest.mark.parametrize("service", ["gateway", "writer", "replicator", "recovery"])
async def test_each_service_is_alive_and_ready(stack: Stack, service: str) -> None:
    async with httpx.AsyncClient(base_url=stack.endpoints.services[service], timeout=10) as http:
        alive = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert alive.status_code == 200, alive.text
    assert ready.status_code == 200, ready.text


@integration
@pytest.mark.local_stack
async def test_make_up_again_reuses_the_running_stack(stack: Stack) -> None:
    before = {name: proc["pid"] for name, proc in (await stack.processes()).items()}
    make = await asyncio.create_subprocess_exec(
        "make", "--no-print-directory", "up", cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await make.communicate()
    assert make.returncode == 0, output.decode()
    assert b"already running" in output
    after = {name: proc["pid"] for name, proc in (await stack.processes()).items()}
    assert after == before


def run_script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_prerequisite_check_names_the_missing_tool_in_one_line(tmp_path: Path) -> None:
    # Everything the check looks for except java, which is left off PATH.
    for tool in ["bash", "mvn", "go", "redis-server", "redis-cli", "uv", "python3", "patch"]:
        if found := shutil.which(tool):
            (tmp_path / tool).symlink_to(found)
    result = run_script(["bash", str(LOCAL_BIN / "prereqs.sh")], {"PATH": str(tmp_path)})
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (
        "java not found: apt-get install openjdk-17-jre-headless (Kafka 4 needs Java 17+)" in lines
    )
    assert all(" not found: " in line for line in lines), result.stderr


def test_up_names_a_port_taken_by_another_process(tmp_path: Path) -> None:
    # Every port of the stack on a free one, whatever the caller's environment holds.
    names = read_ports(PORTS_ENV.read_text())
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run")}
    env.update({name: str(free_port()) for name in names})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env["KAFKA_PORT"] = str(port)
        result = run_script([sys.executable, str(LOCAL_BIN / "stackctl.py"), "up"], env)
    assert result.returncode == 1
    assert f"port {port} (kafka) is in use by another process" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
