"""The audit trail on the real stack: status changes and deletes recorded in ``audit.events``
under the caller's key id (never the key), and the console's recent changes read back from it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from regionstore_gateway.auth.apikeys import parse_key
from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.settings import CommonSettings, KafkaSettings
from tests.keys import headers, new_key
from tests.regionstore_env import customer
from tests.stack import Stack

integration = pytest.mark.integration
REGION = "region_3"
SHOWN_WITHIN_S = 30.0


@pytest_asyncio.fixture(loop_scope="session")
async def operator(stack: Stack) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A fresh operator key (so its events are told apart from anyone else's) and a client."""
    key = await new_key("operator", name="audit trail test")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers=headers(key), timeout=60
    ) as http:
        try:
            yield key, http
        finally:
            await http.put(f"/v1/regions/{REGION}/status", json={"status": "available"})


def _kafka(stack: Stack) -> KafkaSettings:
    """The stack's broker, with the credentials the services read (REGIONSTORE_KAFKA__*)."""
    return CommonSettings().kafka.model_copy(
        update={"bootstrap_servers": stack.endpoints.kafka_bootstrap}
    )


async def _trail(kafka: KafkaSettings) -> list[bytes]:
    """Every record of the audit topic, from the beginning to its current end."""
    partition = TopicPartition(kafka.audit_topic, 0)
    consumer = AIOKafkaConsumer(**kafka_connection(kafka), group_id=None)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while await consumer.position(partition) < end:
            batches = await consumer.getmany(partition, timeout_ms=1000)
            values += [record.value or b"" for record in batches.get(partition, [])]
        return values
    finally:
        await consumer.stop()


async def _recent_changes(http: httpx.AsyncClient, key_id: str, count: int) -> list[Any]:
    """The region's recent changes made with ``key_id``, once ``count`` of them are shown."""
    deadline = time.monotonic() + SHOWN_WITHIN_S
    while True:
        response = await http.get("/v1/regions")
        assert response.status_code == 200, response.text
        (region,) = [r for r in response.json()["regions"] if r["name"] == REGION]
        mine = [c for c in region["recent_changes"] if c["key_id"] == key_id]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.2)


@integration
async def test_status_changes_and_a_delete_are_in_the_trail(
    stack: Stack, operator: tuple[str, httpx.AsyncClient]
) -> None:
    key, http = operator
    parsed = parse_key(key)
    assert parsed is not None
    for status in ("unavailable", "available"):
        response = await http.put(f"/v1/regions/{REGION}/status", json={"status": status})
        assert response.status_code == 200, response.text
    body = customer()
    created = await http.post("/v1/customers", json=body)
    assert created.status_code == 202, created.text
    deleted = await http.delete(f"/v1/customers/{body['customer_id']}")
    assert deleted.status_code == 202, deleted.text

    records = await _trail(_kafka(stack))
    events = [json.loads(value) for value in records]
    mine = [e for e in events if e["key_id"] == parsed.key_id]
    assert [(e["action"], e["target"], e["detail"]) for e in mine] == [
        ("region.status", REGION, {"status": "unavailable"}),
        ("region.status", REGION, {"status": "available"}),
        (
            "customer.delete",
            body["customer_id"],
            {"command_id": deleted.json()["command_id"], "version": deleted.json()["version"]},
        ),
    ]
    assert all(e["role"] == "operator" and "outcome" not in e for e in mine)
    stamps = [datetime.fromisoformat(e["at"]) for e in mine]
    assert stamps == sorted(stamps)
    assert all(stamp.utcoffset() is not None and not stamp.utcoffset() for stamp in stamps)
    for value in records:
        assert key.encode() not in value
        assert parsed.secret.encode() not in value

    shown = await _recent_changes(http, parsed.key_id, 2)
    assert [c["status"] for c in shown[:2]] == ["available", "unavailable"]
    assert [datetime.fromisoformat(c["at"]) for c in shown[:2]] == stamps[1::-1]


@integration
async def test_the_topic_is_one_partition_kept_forever(stack: Stack) -> None:
    kafka = _kafka(stack)
    topic = kafka.audit_topic
    admin = kafka_admin(kafka, "tests-audit")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 1
    (resource,) = [r for response in responses for r in response.resources]
    configs = {entry[0]: entry[1] for entry in resource[4]}
    assert configs["retention.ms"] == "-1"
    assert configs["retention.bytes"] == "-1"
    assert configs["cleanup.policy"] == "delete"
