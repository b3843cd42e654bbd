"""Erasure on the real stack: after the deletes, no copy of the customers' fields is readable
anywhere, and an export shows what is held.

Customers carry a marker (a city, and a unique id) no other test writes. Some are parked for a
region that is down, one is dead-lettered, one is written with an idempotency key; all are
deleted. Then every store, every topic from its first offset, both Redis (their values and the
files on disk) and every log are scanned for the markers: none is found. A write parked for the
region while it is down again is still parked after recovery's trims, and is applied once the
region is back. With the erasure bound shortened (a setting given to the key topic), the
destroyed keys' secrets leave the key topic, read from its first offset, and every key table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
import uuid
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from regionstore_gateway.adapters.idempotency import BatchRecord, Record, decode_record
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.apply import Envelope, Rejected
from regionstore_shared.clients import kafka_admin, kafka_connection, kafka_producer, redis_client
from regionstore_shared.domain import upsert_command
from regionstore_shared.personal import seal_all
from regionstore_shared.personal_keys import KafkaKeyring, open_keyring
from regionstore_shared.pipeline import DeadLetters
from regionstore_shared.schemas import Customer, encode_command
from regionstore_shared.settings import CommonSettings, RedisSettings
from regionstore_shared.topics import ensure_topics
from regionstore_tools.cli import app
from tests.integration.test_parked_trimming import parked, trimmed
from tests.regionstore_env import Env, customer, env, new_id

pytestmark = pytest.mark.integration
__all__ = ["env"]

DOWN = "region_3"  # home of zips 70000-99999, replicated to region_2
RUN_DIR = Path(os.environ.get("RUN_DIR", Path(__file__).resolve().parents[2] / ".run"))
# The erasure bound, shortened: the key topic's compaction follows it.
SHORT_BOUND = timedelta(seconds=60)
runner = CliRunner()


def marked(marker: str, unique_id: str, **where: Any) -> dict[str, Any]:
    body = customer(**where)
    return {**body, "customer_city": marker, "customer_unique_id": unique_id}


async def dead_letter(settings: CommonSettings, body: dict[str, Any]) -> str:
    """An upsert sealed as the gateway seals it, dead-lettered as a consumer does: its id."""
    async with keyring(settings) as keys:
        command = upsert_command(
            Customer.model_validate(body),
            regions=settings.region_map,
            version=time.time_ns() // 1000,
            issued_at_ms=int(time.time() * 1000),
        )
        (sealed,) = await seal_all([command], keys)
    producer = kafka_producer(settings.kafka, "tests-erasure")
    await producer.start()
    try:
        rejected = Rejected(
            Envelope(sealed, encode_command(sealed), settings.kafka.command_topic),
            "121: Document failed validation",
        )
        await DeadLetters(producer, settings.kafka.deadletter_topic).send_commands(
            "region_1", [rejected]
        )
    finally:
        await producer.stop()
    return str(sealed.command_id)


async def every_record(
    settings: CommonSettings, only: list[str] | None = None
) -> dict[str, list[bytes]]:
    """Every record of every topic, keys and values, read from each partition's first offset."""
    admin = kafka_admin(settings.kafka, "tests-erasure")
    await admin.start()
    try:
        topics = only or [t for t in await admin.list_topics() if not t.startswith("__")]
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings.kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    found: dict[str, list[bytes]] = {t: [] for t in topics}
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        while left:
            polled = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in polled.items():
                for r in records:
                    found[tp.topic].append((r.key or b"") + b"|" + (r.value or b""))
                    found[tp.topic].extend(value for _, value in r.headers)
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return found


async def redis_values(settings: RedisSettings, *, records: bool) -> list[bytes]:
    """Every value of a Redis, whatever its type; idempotency records inflated."""
    redis = redis_client(settings, "tests-erasure", binary=True)
    values: list[bytes] = []
    try:
        async for name in redis.scan_iter(count=1000):
            kind = (await redis.type(name)).decode()
            if kind == "string":
                value = await redis.get(name) or b""
                values.append(name + b"|" + _inflated(value) if records else name + b"|" + value)
            elif kind == "hash":
                values += [k + b"=" + v for k, v in (await redis.hgetall(name)).items()]
            elif kind == "stream":
                values += [repr(e).encode() for e in await redis.xrange(name)]
            elif kind in {"list"}:
                values += await redis.lrange(name, 0, -1)
            elif kind in {"set"}:
                values += list(await redis.smembers(name))
            elif kind in {"zset"}:
                values += await redis.zrange(name, 0, -1)
    finally:
        await redis.aclose()
    return values


def _inflated(value: bytes) -> bytes:
    for kind in (Record, BatchRecord):
        try:
            return decode_record(kind, value).model_dump_json().encode()
        except (ValueError, zlib.error):
            continue
    return value


@contextlib.asynccontextmanager
async def keyring(settings: CommonSettings) -> Any:
    """A keyring of the test's own, which may make keys as a gateway does."""
    async with contextlib.AsyncExitStack() as stack:
        yield await open_keyring(stack, settings, writes=True)


async def secrets_of(keys: KafkaKeyring, ids: list[str]) -> list[bytes]:
    """The secrets of the customers' keys, as the key topic holds them (base64)."""
    await keys.find([(c, "0" * 16) for c in ids])  # a miss reads the partitions to their end
    return [base64.b64encode(key.secret) for c in ids for key, _ in keys.table.of(c)]


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Files under ``root`` that hold any of ``needles`` as bytes."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(str(path))
    return hits


async def test_deleted_customers_leave_no_readable_copy_anywhere(env: Env) -> None:
    settings = env.settings
    marker = f"zzerase{new_id()[:12]}"
    unique_id = uuid.uuid4().hex
    needles = [marker.encode(), unique_id.encode()]
    await env.set_status(DOWN, "unavailable")
    bodies = [
        marked(marker, unique_id, zip_prefix=14409, state="SP"),  # region_1, replica region_3
        marked(marker, unique_id, zip_prefix=45000, state="BA"),  # region_2, replica region_1
        marked(marker, unique_id, zip_prefix=75000, state="GO"),  # region_3: parked
        marked(marker, unique_id, zip_prefix=76000, state="GO"),  # region_3: parked
    ]
    for body in bodies[:-1]:
        await env.write("POST", "/v1/customers", json=body)
    keyed = {"Idempotency-Key": f"erasure-{new_id()}"}
    await env.write("POST", "/v1/customers", json=bodies[-1], headers=keyed)
    await env.wait_pending(DOWN, at_least=3)
    dead = marked(marker, unique_id, zip_prefix=14409, state="SP")
    await dead_letter(settings, dead)
    await env.consumed()

    # Export before: every id of the person, with region_3 named as unreadable.
    exported = await env.http.get("/v1/customers:export", params={"customer_unique_id": unique_id})
    assert exported.status_code == 200, exported.text
    export = exported.json()
    assert {b["customer_id"] for b in bodies} <= set(export["customer_ids"])
    assert DOWN in export["unreadable"]
    assert export["complete"] is False
    assert any(p["customer"] and p["customer"]["customer_city"] == marker for p in export["parked"])
    one = await env.http.get(f"/v1/customers/{dead['customer_id']}/export")
    assert one.status_code == 200, one.text
    assert [d["customer"]["customer_city"] for d in one.json()["dead_letters"]] == [marker]

    ids = [b["customer_id"] for b in [*bodies, dead]]
    async with keyring(settings) as keys:
        destroyed = await secrets_of(keys, ids)
    assert len(destroyed) >= len(ids)
    for customer_id in ids:
        await env.write("DELETE", f"/v1/customers/{customer_id}")
    await env.set_status(DOWN, "available")
    await env.consumed()
    report = await env.settle()
    assert report.clean, report

    # A write parked while the region is down again survives recovery's trims.
    await env.set_status(DOWN, "unavailable")
    survivor = customer(zip_prefix=77000, state="GO", city="anapolis")
    await env.write("POST", "/v1/customers", json=survivor)
    await env.wait_pending(DOWN, at_least=1)
    await trimmed(settings)  # the drained commands are gone: a trim ran
    assert survivor["customer_id"] in await parked(settings)

    # The shortened bound passes: the key topic, given the bound, compacts the destroyed keys
    # away; every key table dropped them at once.
    async with keyring(settings) as keys:
        assert await secrets_of(keys, ids) == []
    short = settings.model_copy(update={"erasure_within": SHORT_BOUND})
    await ensure_topics(short, [settings.kafka.key_topic])
    try:
        deadline = time.monotonic() + 3 * SHORT_BOUND.total_seconds()
        while True:
            topic = settings.kafka.key_topic
            kept = (await every_record(settings, [topic]))[topic]
            if not [r for r in kept if any(d in r for d in destroyed)]:
                break
            assert time.monotonic() < deadline, "a destroyed key is still in the key topic"
            # A segment is closed (and then compacted) only once a record comes after it.
            await env.write("POST", "/v1/customers", json=customer())
            await asyncio.sleep(2)
    finally:
        await ensure_topics(settings, [settings.kafka.key_topic])
    raw = [base64.b64decode(d) for d in destroyed]
    assert files_holding(RUN_DIR / "state", raw) == []

    for region, collection in env.collections.items():
        held = await collection.find(
            {"$or": [{"customer_city": marker}, {"customer_unique_id": unique_id}]}
        ).to_list()
        assert held == [], region
    in_topics = {
        topic: sum(1 for r in records if any(n in r for n in needles))
        for topic, records in (await every_record(settings)).items()
    }
    assert {t: n for t, n in in_topics.items() if n} == {}
    for section, records in ((settings.redis, False), (idempotency_redis(), True)):
        values = await redis_values(section, records=records)
        assert [v for v in values if any(n in v for n in needles)] == []
    assert files_holding(RUN_DIR / "logs", needles) == []
    assert files_holding(RUN_DIR / "redis", needles) == []
    assert files_holding(RUN_DIR / "redis-idempotency", needles) == []

    gone = await env.http.get("/v1/customers:export", params={"customer_unique_id": unique_id})
    assert gone.status_code == 200, gone.text
    assert marker not in json.dumps(gone.json())
    # An unknown customer answers as a known one does: nothing to show.
    unknown = await env.http.get(f"/v1/customers/{new_id()}/export")
    assert unknown.status_code == 200, unknown.text
    assert unknown.json()["regions"] == unknown.json()["parked"] == []

    await env.set_status(DOWN, "available")
    deadline = time.monotonic() + 90
    while (await env.documents(survivor["customer_id"]))[DOWN] is None:
        assert time.monotonic() < deadline, "the parked write was never drained"
        await asyncio.sleep(0.5)
    # Every region read again: the command line's export is complete, and shows nothing.
    cli = await asyncio.to_thread(runner.invoke, app, ["export", dead["customer_id"]])
    assert cli.exit_code == 0, cli.output
    shown = json.loads(cli.stdout)
    assert shown["customer_ids"] == [dead["customer_id"]]
    assert [d["erased"] for d in shown["dead_letters"]] == [True]
    assert marker not in cli.stdout


def idempotency_redis() -> RedisSettings:
    return GatewaySettings().idempotency_redis
