"""A batch under one Idempotency-Key: one small record, and every item published as the same
command whichever attempt publishes it. The real app over fake Kafka, Redis and stores."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.errors import RequestTimedOutError
from app_fakes import ACK, NEVER, SEND_FAILS, TTL_S, Document, Gateway, body

from regionstore_gateway.adapters.idempotency import BatchRecord, decode_record, encode_record
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_shared.clock import VERSION_STEP
from regionstore_shared.domain import republished
from regionstore_shared.schemas import DeleteCustomer, UpsertCustomer
from regionstore_shared.settings import KafkaSettings
from regionstore_testing.keys import customer_of

KEY = "load-batch-1"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings(
        kafka=KafkaSettings(request_timeout_ms=1000), api=ApiSettings(retry_after_s=7)
    )


@pytest.fixture
def gateway(settings: GatewaySettings) -> Gateway:
    return Gateway(settings)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


def items(count: int) -> list[Document]:
    return [{"customer": body(customer_id=f"c{i}")} for i in range(count)]


async def post(client: httpx.AsyncClient, batch: list[Any], key: str = KEY) -> httpx.Response:
    return await client.post(
        "/v1/customers:batch", json={"items": batch}, headers={"Idempotency-Key": key}
    )


def record(gateway: Gateway, key: str = KEY) -> BatchRecord:
    return decode_record(BatchRecord, gateway.redis.values[gateway.keys.batch_redis_key(key)])


class TestFirstAttempt:
    async def test_one_small_record_for_the_whole_batch(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        response = await post(client, items(1000))
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 1000
        (name,) = gateway.redis.values
        assert name == gateway.keys.batch_redis_key(KEY)
        assert len(gateway.redis.values[name]) < 200
        assert gateway.redis.ttls[name] == TTL_S

    async def test_each_items_command_is_made_from_the_record(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        batch = [*items(2), {"op": "delete", "customer_id": "c9"}]
        response = await post(client, batch)
        kept = record(gateway)
        sent = gateway.producer.commands()
        assert [c.command_id for c in sent] == [kept.command_id(i) for i in range(3)]
        assert [c.version for c in sent] == [
            kept.first_version + i * VERSION_STEP for i in range(3)
        ]
        assert {c.issued_at_ms for c in sent} == {kept.issued_at_ms}
        assert [(r["command_id"], r["version"]) for r in response.json()["results"]] == [
            (str(c.command_id), c.version) for c in sent
        ]
        assert isinstance(sent[2], DeleteCustomer)

    async def test_two_items_for_one_customer_keep_the_request_order(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        batch = [{"customer": body(city="franca")}, {"customer": body(city="campinas")}]
        await post(client, batch)
        first, second = gateway.producer.commands()
        assert isinstance(second, UpsertCustomer)
        assert second.version > first.version
        assert (await customer_of(second, gateway.keyring)).customer_city == "campinas"

    async def test_versions_made_later_are_above_the_whole_batch(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await post(client, items(50))
        single = await client.post("/v1/customers", json=body(customer_id="after"))
        assert single.json()["version"] > max(c.version for c in gateway.producer.commands()[:50])


class TestRetry:
    async def test_an_acknowledged_batch_is_answered_from_its_record(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        batch = [*items(3), {"customer": body(customer_id="z", zip_prefix=5)}]
        first = await post(client, batch)
        again = await post(client, batch)
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert first.headers.get("Idempotent-Replayed") is None
        assert len(gateway.producer.sent) == 3

    async def test_only_what_was_not_acknowledged_is_published_again_as_the_same_command(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [ACK, RequestTimedOutError(), SEND_FAILS, NEVER]
        first = await post(client, items(4))
        statuses = [r["status"] for r in first.json()["results"]]
        assert statuses == ["accepted", "unknown", "failed", "unknown"]
        first_sent = gateway.producer.commands()

        again = await post(client, items(4))

        assert [r["status"] for r in again.json()["results"]] == ["accepted"] * 4
        assert again.headers.get("Idempotent-Replayed") is None
        again_sent = gateway.producer.commands()[len(first_sent) :]
        assert [c.key for c in again_sent] == ["c1", "c2", "c3"]
        # The unknown ones are published again as the first time, marked republished; the one
        # Kafka certainly did not take is a new command, to be ordered as one.
        assert again_sent[0] == republished(first_sent[1])
        assert again_sent[2] == republished(first_sent[2])
        assert not again_sent[1].republished
        assert again_sent[1].command_id == record(gateway).command_id(2)
        assert [r["command_id"] for r in again.json()["results"]] == [
            str(record(gateway).command_id(i)) for i in range(4)
        ]
        assert [record(gateway).is_acked(i) for i in range(4)] == [True] * 4

    async def test_items_are_marked_sent_before_kafka_can_take_them(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        seen: list[list[bool]] = []
        gateway.producer.on_send = lambda _: seen.append(
            [record(gateway).is_sent(i) for i in range(3)]
        )
        gateway.producer.script = [ACK, SEND_FAILS, NEVER]
        await post(client, items(3))
        # While the first command was being handed over, every item was already marked.
        assert seen[0] == [True, True, True]
        kept = record(gateway)
        assert [kept.is_sent(i) for i in range(3)] == [True, False, True]
        assert [kept.is_acked(i) for i in range(3)] == [True, False, False]

    async def test_a_retry_after_a_crash_mid_publish_republishes_what_may_be_in_kafka(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        # The first attempt claimed the key (every item marked sent) and died before answering.
        await post(client, items(2))
        kept = record(gateway)
        crashed = kept.model_copy(update={"acked": b""})
        gateway.redis.values[gateway.keys.batch_redis_key(KEY)] = encode_record(crashed)
        before = len(gateway.producer.sent)

        again = await post(client, items(2))

        assert [r["status"] for r in again.json()["results"]] == ["accepted", "accepted"]
        assert all(c.republished for c in gateway.producer.commands()[before:])

    async def test_the_same_key_with_another_request_is_refused(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await post(client, items(2))
        other = await post(client, items(3))
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert len(gateway.producer.sent) == 2

    async def test_a_key_whose_record_is_gone_is_a_new_batch(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        first = await post(client, items(1))
        gateway.redis.values.clear()  # evicted, or past its TTL
        again = await post(client, items(1))
        assert again.json()["results"][0]["version"] > first.json()["results"][0]["version"]
        assert len(gateway.producer.sent) == 2


class TestAfter:
    """Every attempt stamps an item's command with the offset its partition had reached when
    the batch was first made: a retry never claims a later place than its first attempt."""

    async def test_the_first_attempt_stamps_what_its_gateway_had_seen_acknowledged(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers", json=body(customer_id="earlier"))  # offset 0
        await post(client, [*items(2), {"op": "delete", "customer_id": "c9"}])
        assert [c.after for c in gateway.producer.commands()[1:]] == [1, 1, 1]
        assert record(gateway).reached == (1,)

    async def test_nothing_seen_acknowledged_yet_stamps_nothing(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await post(client, items(2))
        assert [c.after for c in gateway.producer.commands()] == [None, None]
        assert record(gateway).reached == ()

    async def test_a_retry_stamps_the_first_attempts_offset_though_its_gateway_saw_more(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers", json=body(customer_id="earlier"))  # offset 0
        gateway.producer.script = [ACK, NEVER, SEND_FAILS]
        await post(client, items(3))  # c0 at offset 1; c1 unknown; c2 never taken
        first_sent = gateway.producer.commands()
        for n in range(3):
            await client.post("/v1/customers", json=body(customer_id=f"other{n}"))
        # The gateway has seen offsets well past 1 acknowledged: a write made now says so.
        assert gateway.producer.commands()[-1].after == len(gateway.producer.sent) - 1 == 5

        await post(client, items(3))

        again_sent = gateway.producer.commands()[len(first_sent) + 3 :]
        assert [c.key for c in again_sent] == ["c1", "c2"]
        assert [c.after for c in again_sent] == [1, 1]
        assert again_sent[0] == republished(first_sent[2])
        assert not again_sent[1].republished

    async def test_a_record_kept_before_the_offsets_were_still_serves_a_retry(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers", json=body(customer_id="earlier"))
        await post(client, items(2))
        first_sent = gateway.producer.commands()[1:]
        # As an earlier release stored it (no offsets), its first attempt gone unanswered.
        old = record(gateway).model_dump(mode="json", exclude={"reached"}) | {"acked": ""}
        gateway.redis.values[gateway.keys.batch_redis_key(KEY)] = json.dumps(old)

        again = await post(client, items(2))

        assert [r["status"] for r in again.json()["results"]] == ["accepted", "accepted"]
        again_sent = gateway.producer.commands()[3:]
        assert [(c.command_id, c.version) for c in again_sent] == [
            (c.command_id, c.version) for c in first_sent
        ]
        assert all(c.republished and c.after is None for c in again_sent)
        assert record(gateway).reached == ()


class TestRefusals:
    async def test_items_may_not_carry_keys_of_their_own(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        batch = [*items(1), {"customer": body(customer_id="k"), "idempotency_key": "own"}]
        response = await post(client, batch)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "items", 1, "idempotency_key"]
        assert gateway.producer.sent == []
        assert gateway.redis.values == {}

    async def test_without_redis_nothing_is_published(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await post(client, items(2))
        assert response.status_code == 503
        assert response.json()["outcome"] == "not_accepted"
        assert gateway.producer.sent == []

    async def test_backpressure_refuses_before_a_record_is_made(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.lag = {"writer": 10**6, "replicator": 0}
        await gateway.backpressure.refresh()
        response = await post(client, items(2))
        assert response.status_code == 429
        assert gateway.redis.values == {}
        assert gateway.producer.sent == []
