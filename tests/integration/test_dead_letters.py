"""Dead letters on the real stack: kept forever, listed, shown and redriven (``regionstore dlq``).

Refused commands are dead-lettered by the consumers' own ``DeadLetters`` (a store refusing a
valid command for good cannot be provoked on demand); undecodable ones by the writer and the
replicator themselves. The command line runs in-process against the stack's Kafka, and the
redriven commands go through the real writer and replicator to the real stores.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner, Result

from regionstore_shared.apply import Envelope, Rejected
from regionstore_shared.clients import kafka_admin, kafka_connection, kafka_producer
from regionstore_shared.domain import upsert_command
from regionstore_shared.pipeline import DeadLetters
from regionstore_shared.schemas import Command, Customer, encode_command
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import ensure_topics
from regionstore_testing.audit import Expected
from regionstore_tools.cli import app
from tests.regionstore_env import Env, customer, env, new_id

pytestmark = pytest.mark.integration
__all__ = ["env"]

runner = CliRunner()
LISTED_WITHIN_S = 60.0


async def dlq(*args: str) -> Result:
    """``regionstore dlq ...`` as a user runs it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(runner.invoke, app, ["dlq", *args], env={"COLUMNS": "200"})


async def dlq_json(*args: str) -> Any:
    result = await dlq(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def dead_letter(settings: CommonSettings, region: str, *commands: Command) -> None:
    """Dead-letter ``commands`` as refused by ``region``, as a consumer does."""
    producer = kafka_producer(settings.kafka, "tests-dead-letters")
    await producer.start()
    try:
        rejected = [
            Rejected(
                Envelope(c, encode_command(c), settings.kafka.command_topic),
                "121: Document failed validation",
            )
            for c in commands
        ]
        await DeadLetters(producer, settings.kafka.deadletter_topic).send_commands(region, rejected)
    finally:
        await producer.stop()


def upsert(body: dict[str, Any], settings: CommonSettings, version: int) -> Command:
    return upsert_command(
        Customer.model_validate(body),
        regions=settings.region_map,
        version=version,
        issued_at_ms=int(time.time() * 1000),
    )


async def listed(command_ids: set[str], count: int) -> list[dict[str, Any]]:
    """The dead letters of these commands, once ``count`` of them are listed."""
    deadline = time.monotonic() + LISTED_WITHIN_S
    while True:
        mine = [e for e in await dlq_json("list") if e["command_id"] in command_ids]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.5)


async def test_a_dead_letter_topic_made_before_gets_unlimited_retention_at_start() -> None:
    base = CommonSettings()
    topic = f"tests.deadletter.{new_id()}"
    settings = base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"deadletter_topic": topic})}
    )
    admin = kafka_admin(settings.kafka, "tests-dead-letters")
    await admin.start()
    try:
        # As an earlier release made it: the broker's 7 days, and a setting of the operator's.
        await admin.create_topics(
            [NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "2097152"})]
        )
        await ensure_topics(settings, [topic])
        await ensure_topics(settings, [topic])  # every start does it again: nothing changes
        (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.delete_topics([topic])
        await admin.close()
    configs = {entry[0]: entry[1] for entry in answer.resources[0][4]}
    assert configs["retention.ms"] == configs["retention.bytes"] == "-1"
    assert configs["cleanup.policy"] == "delete"
    assert configs["max.message.bytes"] == "2097152"


async def test_refused_commands_are_redriven_and_the_version_guard_decides(env: Env) -> None:
    settings = env.settings
    # A newer write already applied: the dead-lettered older one must change nothing.
    overtaken = customer(zip_prefix=45000, state="BA", city="salvador")
    newer = await env.write("POST", "/v1/customers?wait=applied", json=overtaken)
    older = upsert({**overtaken, "customer_city": "overtaken"}, settings, newer["version"] - 1)
    # A create nothing else wrote: redriven, it is applied in its home and replica regions.
    fresh_body = customer(zip_prefix=45000, state="BA", city="feira de santana")
    fresh = upsert(fresh_body, settings, newer["version"])
    await dead_letter(settings, "region_2", older, fresh)
    ids = {str(older.command_id), str(fresh.command_id)}
    mine = {e["command_id"]: e for e in await listed(ids, 2)}
    assert {e["kind"] for e in mine.values()} == {"refused"}
    assert {e["region"] for e in mine.values()} == {"region_2"}
    fresh_id = mine[str(fresh.command_id)]["id"]

    shown = await dlq_json("show", fresh_id)
    assert shown["command"]["customer"] == fresh_body
    assert shown["error"] == "121: Document failed validation"

    done = await dlq_json("redrive", fresh_id)
    assert [r["dead_letter"] for r in done["redriven"]] == [fresh_id]
    done = await dlq_json("redrive", mine[str(older.command_id)]["id"])
    assert len(done["redriven"]) == 1
    env.finals[fresh.key] = Expected(fresh.key, fresh.version, deleted=False, home="region_2")
    report = await env.settle()
    assert report.clean, report
    stored = await env.documents(overtaken["customer_id"])
    assert {doc["customer_city"] for doc in stored.values() if doc} == {"salvador"}

    now = {e["command_id"]: e for e in await listed(ids, 2)}
    assert all(e["redriven"] is not None for e in now.values())
    assert not {e["id"] for e in await dlq_json("list", "--open")} & {e["id"] for e in now.values()}
    again = await dlq("redrive", fresh_id)
    assert again.exit_code == 1
    assert "add --again" in again.stderr


async def test_an_undecodable_message_is_listed_and_never_redriven(env: Env) -> None:
    settings = env.settings
    key = f"poison-{new_id()}"
    producer = AIOKafkaProducer(**kafka_connection(settings.kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.command_topic, b"{not json", key=key.encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + LISTED_WITHIN_S
    while len(mine := [e for e in await dlq_json("list") if e["customer_id"] == key]) < 2:
        assert time.monotonic() < deadline, mine
        await asyncio.sleep(0.5)
    # One from the writer's group, one from the replicator's.
    assert [e["kind"] for e in mine] == ["undecodable", "undecodable"]
    refused = await dlq("redrive", mine[0]["id"])
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1
    assert f"{mine[0]['id']} is not a command" in refused.stderr
    after = [e for e in await dlq_json("list") if e["customer_id"] == key]
    assert [e["redriven"] for e in after] == [None, None]


async def test_kafka_out_of_reach_is_one_line_and_exit_2() -> None:
    unreachable = "127.0.0.1:1"
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["dlq", "list"],
        env={"REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS": unreachable, "COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot read from Kafka at {unreachable}")
