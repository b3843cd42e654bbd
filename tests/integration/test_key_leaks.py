"""API keys never leak: after requests with a real key and with a forged one (the real key's id,
another secret), neither secret appears in the gateway's log, in its /metrics, or in the
audit trail; the key id, which is public, does appear in the log."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from regionstore_gateway.auth.apikeys import parse_key
from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.settings import CommonSettings
from tests.keys import headers, new_key
from tests.regionstore_env import customer
from tests.stack import REPO_ROOT, Stack

pytestmark = pytest.mark.integration

LOG_WITHIN_S = 30.0
RUN_DIR = Path(os.environ.get("RUN_DIR", REPO_ROOT / ".run"))


def _forge(key: str) -> str:
    """The same key id with another well-formed secret."""
    parsed = parse_key(key)
    assert parsed is not None
    return f"rsk_{parsed.key_id}_{secrets.token_urlsafe(32)}"


async def _use(http: httpx.AsyncClient, key: str) -> list[int]:
    """Requests of every kind with a key: reads, a write, a refused status change, a session."""
    sent = headers(key)
    answers = [
        await http.get("/v1/regions", headers=sent),
        await http.get("/v1/customers?limit=1", headers=sent),
        await http.post("/v1/customers", json=customer(), headers=sent),
        await http.delete(f"/v1/customers/{customer()['customer_id']}", headers=sent),
        await http.put("/v1/regions/region_1/status", json={"status": "nonsense"}, headers=sent),
        await http.post("/v1/customers", content=b"{not json", headers=sent),
        await http.post("/v1/session", json={"key": key}),
        await http.get("/v1/session", headers={"Cookie": f"regionstore_session={key}"}),
    ]
    return [a.status_code for a in answers]


async def _log_mentions(text: str) -> str:
    """The gateway log once it mentions ``text`` (its lines are written as they come)."""
    path = RUN_DIR / "logs" / "gateway.log"
    deadline = time.monotonic() + LOG_WITHIN_S
    while True:
        log = path.read_text(errors="replace")
        if text in log or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.2)


async def _audit_events(settings: CommonSettings) -> list[bytes] | None:
    """Every message of the audit topic (key, value, headers), or None when there is none."""
    topic = settings.kafka.audit_topic
    admin = kafka_admin(settings.kafka, "tests-key-leaks")
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return None
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings.kafka), enable_auto_commit=False, client_id="tests-key-leaks"
    )
    await consumer.start()
    try:
        start = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        remaining = {p for p in partitions if end[p] > start[p]}
        messages: list[bytes] = []
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for records in batches.values():
                messages += [(r.key or b"") + b" " + (r.value or b"") for r in records]
                messages += [b"%s=%s" % (k.encode(), v) for r in records for k, v in r.headers]
            for partition in list(remaining):
                if await consumer.position(partition) >= end[partition]:
                    remaining.discard(partition)
        return messages
    finally:
        await consumer.stop()


async def test_neither_a_key_nor_a_forged_one_leaks(stack: Stack) -> None:
    key = await new_key("writer", name="leak test")
    forged = _forge(key)
    parsed, forged_parsed = parse_key(key), parse_key(forged)
    assert parsed is not None
    assert forged_parsed is not None
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        real = await _use(http, key)
        fake = await _use(http, forged)
        metrics = await http.get("/metrics", headers=headers())
    assert 202 in real, real
    assert set(fake) == {401}, fake
    assert metrics.status_code == 200

    log = await _log_mentions(parsed.key_id)
    assert parsed.key_id in log, "the refused forged key's id should be logged"
    events = await _audit_events(CommonSettings())
    places = {"gateway log": log, "/metrics": metrics.text}
    if events is not None:
        places["audit trail"] = b"\n".join(events).decode(errors="replace")
    for place, text in places.items():
        for secret in (parsed.secret, forged_parsed.secret):
            assert secret not in text, f"a key's secret is in the {place}"
