"""Idempotency keys and honest outcomes, through the real app over fake Kafka, Redis and stores."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError
from app_fakes import (
    ACK,
    CUSTOMER,
    NEVER,
    PREFIX,
    SEND_FAILS,
    TTL_S,
    Document,
    Gateway,
    body,
)
from pymongo.errors import AutoReconnect

from regionstore_gateway.adapters.idempotency import (
    BatchRecord,
    Record,
    RecordState,
    decode_record,
    encode_record,
    request_hash,
)
from regionstore_gateway.api import customers as customers_api
from regionstore_gateway.api import legacy as legacy_api
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.services.publishing import WriteRequest, pending
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_shared.domain import republished
from regionstore_shared.schemas import Command, Customer, UpsertCustomer
from regionstore_shared.settings import KafkaSettings
from regionstore_shared.topics import partition_of
from regionstore_testing.keys import customer_of


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    # The shortest acknowledgement timeout the settings allow: the timeout test waits it out.
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


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def ids(response: httpx.Response) -> tuple[str, int]:
    data = response.json()
    return data["command_id"], data["version"]


WRITES = [
    ("POST", "/v1/customers", body()),
    ("PUT", f"/v1/customers/{CUSTOMER}", body()),
    ("PATCH", f"/v1/customers/{CUSTOMER}", {"customer_city": "sao paulo"}),
    ("DELETE", f"/v1/customers/{CUSTOMER}", None),
    ("POST", "/create-customer", body()),
]


class TestRequestHash:
    @pytest.mark.parametrize(("method", "path", "payload"), WRITES)
    async def test_only_a_keyed_write_hashes_its_request(
        self,
        gateway: Gateway,
        client: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch,
        method: str,
        path: str,
        payload: Document | None,
    ) -> None:
        hashed: list[str] = []

        def counted(route: str, **parts: object) -> str:
            hashed.append(route)
            return request_hash(route, **parts)

        for module in (customers_api, legacy_api):
            monkeypatch.setattr(module, "request_hash", counted)
        gateway.live("region_1", 5)  # a PATCH merges into it
        unkeyed = await client.request(method, path, json=payload)
        assert (unkeyed.status_code, hashed) == (202, [])
        with_key = await client.request(method, path, json=payload, headers=keyed("k-1"))
        assert (with_key.status_code, len(hashed)) == (202, 1)


class TestRetryAfterAck:
    async def test_returns_the_first_answer_and_produces_nothing(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        first = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        again = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert len(gateway.producer.sent) == 1

    async def test_the_normalised_body_is_what_counts(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        first = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        spaced = {**body(), "customer_state": " sp ", "customer_city": " franca "}
        again = await client.post("/v1/customers", json=spaced, headers=keyed("k-1"))
        assert ids(again) == ids(first)
        assert len(gateway.producer.sent) == 1

    async def test_a_create_only_retry_is_not_a_conflict(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        headers = {**keyed("k-1"), "If-None-Match": "*"}
        first = await client.post("/v1/customers", json=body(), headers=headers)
        (command,) = gateway.producer.commands()
        gateway.live("region_1", command.version)  # it was applied: the id exists now
        again = await client.post("/v1/customers", json=body(), headers=headers)
        assert again.status_code == 202, again.text
        assert ids(again) == ids(first)

    @pytest.mark.parametrize(
        ("method", "path", "payload"),
        [
            ("PUT", f"/v1/customers/{CUSTOMER}", body()),
            ("DELETE", f"/v1/customers/{CUSTOMER}", None),
            ("PATCH", f"/v1/customers/{CUSTOMER}", {"customer_city": "sao paulo"}),
        ],
    )
    async def test_every_write_route_honours_the_key(
        self,
        gateway: Gateway,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        payload: Document | None,
    ) -> None:
        gateway.live("region_1", 5)
        first = await client.request(method, path, json=payload, headers=keyed("k-1"))
        again = await client.request(method, path, json=payload, headers=keyed("k-1"))
        assert (first.status_code, again.status_code) == (202, 202), first.text
        assert ids(again) == ids(first)
        assert len(gateway.producer.sent) == 1

    async def test_the_legacy_create_route_honours_the_key(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        first = await client.post("/create-customer", json=body(), headers=keyed("k-1"))
        again = await client.post("/create-customer", json=body(), headers=keyed("k-1"))
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json() == first.json()
        assert first.json()["message"] == "customer accepted"
        assert len(gateway.producer.sent) == 1

    async def test_different_keys_are_different_writes(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        first = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        other = await client.post("/v1/customers", json=body(), headers=keyed("k-2"))
        assert ids(other)[1] > ids(first)[1]
        assert len(gateway.producer.sent) == 2

    async def test_the_record_is_kept_under_a_hash_of_the_key_for_the_ttl(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/customers", json=body(), headers=keyed("secret-key"))
        ((name, raw),) = gateway.redis.values.items()
        assert name.startswith(PREFIX)
        assert "secret-key" not in name
        assert gateway.redis.ttls[name] == TTL_S
        record = decode_record(Record, raw)
        assert record.state is RecordState.ACKED
        assert record.answer == response.json()
        assert record.command == gateway.producer.commands()[0]


class TestRetryAfterUnknownOutcome:
    async def test_republishes_the_identical_command(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [RequestTimedOutError()]
        first = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert first.status_code == 504
        again = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert again.status_code == 202
        assert ids(again) == ids(first)
        one, two = gateway.producer.commands()
        assert two == republished(one)
        (record,) = gateway.redis.records()
        assert record.state is RecordState.ACKED

    async def test_a_patch_retry_reproduces_the_first_merge_without_reading(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.live("region_1", 5, city="franca")
        gateway.producer.script = [NEVER]
        path = f"/v1/customers/{CUSTOMER}"
        change = {"customer_zip_code_prefix": 14410}
        first = await client.patch(path, json=change, headers=keyed("k-1"))
        assert first.status_code == 504
        reads = gateway.reads()
        gateway.live("region_1", 9, city="ribeirao preto")  # another write landed meanwhile
        again = await client.patch(path, json=change, headers=keyed("k-1"))
        assert again.status_code == 202
        assert ids(again) == ids(first)
        assert gateway.reads() == reads
        one, two = gateway.producer.commands()
        assert two == republished(one)
        assert isinstance(two, UpsertCustomer)
        assert (await customer_of(two, gateway.keyring)).customer_city == "franca"

    async def test_a_request_racing_ours_publishes_its_command_not_ours(
        self, gateway: Gateway, settings: GatewaySettings
    ) -> None:
        rival = gateway.writes.delete_command(CUSTOMER)

        def claim_first() -> None:
            gateway.redis.store(
                gateway.keys.redis_key("k-1"), pending("same", rival).model_dump_json(), nx=True
            )

        gateway.redis.after_mget = claim_first

        answer = await gateway.state["customers"].delete(
            CUSTOMER, Principal("alice", Role.WRITER), WriteRequest(key="k-1", request="same")
        )
        assert answer.body["command_id"] == str(rival.command_id)
        assert gateway.producer.commands() == [republished(rival)]


class TestConflictsAndInvalidKeys:
    async def test_same_key_different_body_is_a_422(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        other = await client.post("/v1/customers", json=body(city="campinas"), headers=keyed("k-1"))
        assert other.status_code == 422
        (error,) = other.json()["detail"]
        assert error["loc"] == ["header", "Idempotency-Key"]
        assert "different request" in error["msg"]
        assert len(gateway.producer.sent) == 1

    async def test_same_key_on_another_route_is_a_422(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        other = await client.delete(f"/v1/customers/{CUSTOMER}", headers=keyed("k-1"))
        assert other.status_code == 422
        assert len(gateway.producer.sent) == 1

    @pytest.mark.parametrize(
        ("key", "reason"),
        [
            ("", "at least 1 character"),
            ("k" * 201, "at most 200 characters"),
            ("caf\u00e9", "printable ASCII"),
            ("a\tb", "printable ASCII"),
        ],
    )
    async def test_an_invalid_key_is_a_422_naming_the_header(
        self, gateway: Gateway, client: httpx.AsyncClient, key: str, reason: str
    ) -> None:
        response = await client.post(
            "/v1/customers", json=body(), headers={b"Idempotency-Key": key.encode("latin-1")}
        )
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["header", "Idempotency-Key"]
        assert reason in error["msg"]
        assert gateway.producer.sent == []
        assert gateway.redis.values == {}

    @pytest.mark.parametrize("key", ["k", "~" * 200, "order 42/attempt:1"])
    async def test_a_valid_key_is_accepted(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post("/v1/customers", json=body(), headers=keyed(key))
        assert response.status_code == 202, response.text


class TestOutcomes:
    async def test_an_ack_timeout_is_a_504_with_the_command(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [NEVER]
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 504
        assert response.headers["Retry-After"] == "7"
        data = response.json()
        (command,) = gateway.producer.commands()
        assert data["outcome"] == "unknown"
        assert (data["command_id"], data["version"]) == (str(command.command_id), command.version)
        assert "may or may not be applied" in data["detail"]
        assert "same Idempotency-Key" in data["detail"]

    async def test_a_retriable_delivery_error_is_a_504(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [KafkaConnectionError()]
        response = await client.delete(f"/v1/customers/{CUSTOMER}", headers=keyed("k-1"))
        assert response.status_code == 504
        assert response.json()["outcome"] == "unknown"
        (record,) = gateway.redis.records()
        assert record.state is RecordState.PENDING

    async def test_certainly_not_sent_is_a_503(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [SEND_FAILS]
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        data = response.json()
        assert data["outcome"] == "not_accepted"
        assert "not accepted" in data["detail"]
        assert "command_id" not in data

    async def test_a_keyed_retry_after_a_503_is_a_new_write(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        # Kafka never took the first command: the retry must stand after any write acknowledged
        # meanwhile, so it is published anew, not as a republished (never lifted) copy.
        gateway.producer.script = [SEND_FAILS]
        refused = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert refused.status_code == 503
        assert gateway.redis.records() == []  # released
        again = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert again.status_code == 202
        (sent,) = gateway.producer.commands()
        assert not sent.republished
        assert ids(again) == (str(sent.command_id), sent.version)

    async def test_a_batch_item_kafka_never_took_is_released(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [SEND_FAILS]
        items = [batch_item("a", customer_id="c1")]
        first = await client.post("/v1/customers:batch", json={"items": items})
        assert first.json()["results"][0]["status"] == "failed"
        assert gateway.redis.records() == []
        again = await client.post("/v1/customers:batch", json={"items": items})
        assert again.json()["results"][0]["status"] == "accepted"
        (sent,) = gateway.producer.commands()
        assert not sent.republished


class TestCreateOnly:
    async def test_a_region_that_cannot_be_read_is_a_503_and_produces_nothing(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.stores["region_2"].fail_with = AutoReconnect("connection refused")
        headers = {**keyed("k-1"), "If-None-Match": "*"}
        response = await client.post("/v1/customers", json=body(), headers=headers)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "7"
        data = response.json()
        assert data["outcome"] == "not_accepted"
        assert "regions ['region_2'] cannot be read now" in data["detail"]
        assert "nothing was written" in data["detail"]
        assert gateway.producer.sent == []
        assert gateway.redis.values == {}  # the key was not claimed: a retry starts afresh

    async def test_a_customer_found_elsewhere_is_still_a_409(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.live("region_1", 5)
        gateway.stores["region_2"].fail_with = AutoReconnect("connection refused")
        response = await client.post("/v1/customers", json=body(), headers={"If-None-Match": "*"})
        assert response.status_code == 409
        assert gateway.producer.sent == []


class TestRedisDown:
    async def test_a_keyed_write_is_a_503_and_produces_nothing(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["outcome"] == "not_accepted"
        assert "Redis cannot be reached" in response.json()["detail"]
        assert gateway.producer.sent == []

    async def test_a_write_without_a_key_does_not_need_redis(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 202
        assert len(gateway.producer.sent) == 1

    async def test_redis_lost_after_kafka_took_the_command_still_answers_202(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        def go_down(_: Command) -> None:
            gateway.redis.down = True

        gateway.producer.on_send = go_down
        first = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert first.status_code == 202
        (record,) = gateway.redis.records()
        assert record.state is RecordState.PENDING  # not marked: a retry publishes it again
        gateway.redis.down = False
        gateway.producer.on_send = None
        again = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert ids(again) == ids(first)
        one, two = gateway.producer.commands()
        assert two == republished(one)


class TestStore:
    async def test_a_key_that_expires_between_set_and_get_is_claimed_again(
        self, gateway: Gateway
    ) -> None:
        name = gateway.keys.redis_key("k-1")
        rival = pending("same", gateway.writes.delete_command(CUSTOMER))
        gateway.redis.store(name, rival.model_dump_json())

        def expire() -> None:
            del gateway.redis.values[name]

        gateway.redis.after_execute = expire  # our SET NX lost, then the rival's record expired
        ours = pending("same", gateway.writes.delete_command(CUSTOMER))
        assert await gateway.keys.claim([("k-1", ours)]) == [ours]
        assert gateway.redis.records() == [ours]

    async def test_an_unreadable_record_refuses_the_write(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.store(gateway.keys.redis_key("k-1"), '{"not": "a record"}')
        response = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert response.status_code == 503
        assert "unreadable idempotency record" in response.json()["detail"]
        assert gateway.producer.sent == []


def batch_item(key: str | None = None, **customer: Any) -> Document:
    item: Document = {"customer": body(**customer)}
    if key is not None:
        item["idempotency_key"] = key
    return item


class TestBatch:
    async def test_keyed_items_are_replayed_and_unkeyed_ones_published_again(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        items = [
            batch_item("a", customer_id="c1"),
            batch_item(None, customer_id="c2"),
            {"op": "delete", "customer_id": "c3", "idempotency_key": "b"},
        ]
        first = await client.post("/v1/customers:batch", json={"items": items})
        again = await client.post("/v1/customers:batch", json={"items": items})
        assert (first.status_code, again.status_code) == (202, 202)
        one, two = first.json()["results"], again.json()["results"]
        assert [r["status"] for r in two] == ["accepted"] * 3
        assert two[0] == one[0]
        assert two[2] == one[2]
        assert two[1]["version"] > one[1]["version"]
        assert len(gateway.producer.sent) == 4

    async def test_an_item_whose_outcome_is_unknown_is_republished_identically(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        items = [batch_item("a", customer_id="c1"), batch_item("b", customer_id="c2")]
        gateway.producer.script = [ACK, RequestTimedOutError()]
        first = await client.post("/v1/customers:batch", json={"items": items})
        assert first.status_code == 202
        data = first.json()
        assert (data["accepted"], data["unknown"], data["failed"]) == (1, 1, 0)
        unknown = data["results"][1]
        assert unknown["status"] == "unknown"
        assert unknown["errors"][0]["type"] == "outcome_unknown"
        again = await client.post("/v1/customers:batch", json={"items": items})
        assert [r["status"] for r in again.json()["results"]] == ["accepted", "accepted"]
        assert again.json()["results"][1]["command_id"] == unknown["command_id"]
        assert again.json()["results"][1]["version"] == unknown["version"]
        sent = gateway.producer.commands()
        assert len(sent) == 3
        assert sent[2] == republished(sent[1])
        assert not sent[1].republished

    async def test_nothing_accepted_and_some_unknown_is_a_504(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [NEVER, SEND_FAILS]
        items = [batch_item(customer_id="c1"), batch_item(customer_id="c2")]
        response = await client.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 504
        assert response.headers["Retry-After"] == "7"
        assert [r["status"] for r in response.json()["results"]] == ["unknown", "failed"]

    async def test_nothing_taken_is_a_503_with_each_item(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [SEND_FAILS]
        items = [batch_item(customer_id="c1"), batch_item(customer_id="c2", zip_prefix=5)]
        response = await client.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 503
        assert [r["status"] for r in response.json()["results"]] == ["failed", "rejected"]

    async def test_a_reused_key_and_an_invalid_key_are_rejected_items(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers:batch", json={"items": [batch_item("a")]})
        items = [batch_item("a", city="campinas"), batch_item("x" * 201, customer_id="c2")]
        response = await client.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 422
        reused, invalid = response.json()["results"]
        assert reused["status"] == invalid["status"] == "rejected"
        assert reused["errors"][0]["loc"] == ["body", "items", 0, "idempotency_key"]
        assert "different request" in reused["errors"][0]["msg"]
        assert invalid["errors"][0]["loc"] == ["body", "items", 1, "upsert", "idempotency_key"]
        assert len(gateway.producer.sent) == 1

    async def test_redis_down_fails_keyed_items_only(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        items = [batch_item("a", customer_id="c1"), batch_item(None, customer_id="c2")]
        response = await client.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 202
        failed, accepted = response.json()["results"]
        assert (failed["status"], accepted["status"]) == ("failed", "accepted")
        assert failed["errors"][0]["type"] == "idempotency_unavailable"
        assert [c.key for c in gateway.producer.commands()] == ["c2"]

    async def test_new_commands_are_versioned_in_item_order(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        items = [
            batch_item("a", customer_id="c1"),
            {"op": "delete", "customer_id": "c1"},
        ]
        response = await client.post("/v1/customers:batch", json={"items": items})
        upsert, delete = response.json()["results"]
        assert delete["version"] > upsert["version"]
        assert [c.kind for c in gateway.producer.commands()] == ["upsert", "delete"]


class TestOpenApi:
    @pytest.mark.parametrize(
        ("path", "method"),
        [
            ("/v1/customers", "post"),
            ("/v1/customers/{customer_id}", "put"),
            ("/v1/customers/{customer_id}", "patch"),
            ("/v1/customers/{customer_id}", "delete"),
            ("/create-customer", "post"),
        ],
    )
    async def test_write_routes_document_the_key_and_the_outcomes(
        self, client: httpx.AsyncClient, path: str, method: str
    ) -> None:
        spec = json.loads((await client.get("/openapi.json")).text)
        operation = spec["paths"][path][method]
        (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header"
        assert "retry" in header["description"]
        assert {"202", "422", "503", "504"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["504"]["headers"]


# A record of format 1 as a gateway stored it: whatever changes, it must still read back (a
# changed dictionary would make a day of stored records unreadable).
STORED_V1 = bytes.fromhex(
    "01d5d3316e44310804d0137d093060cf71c0863245fabd7b56a9a2ac1245da342b710166e63dccb9473a729e"
    "e81376bf1007c1629e22d15d6c7e6a7b2c1d70cae5589d22ce30980c3cc701889ab0710dd979e91e72e11ef4"
    "55616dc5e145f9359069c38640cca0ec4462f8ae8827dc5c142aae2f4beaef5cc8730128e90c0eeedc6bf194"
    "4d94b172cf9f382de7ead6c91ca6529a18f78eb79f33bb32e9576eac4a7834d7eff1f6f9d513e0fe7b1fb7db07"
)


class TestStoredFormat:
    def test_a_record_stored_a_day_ago_still_reads(self) -> None:
        record = decode_record(Record, STORED_V1)
        assert record.request_hash == (
            "f3b69b7dafda5da5a269095a7de024ce156dec6a843960b8698fb22619595239"
        )
        assert record.state is RecordState.ACKED
        assert isinstance(record.command, UpsertCustomer)
        assert str(record.command.command_id) == "99ae7953-32cb-4c32-9acc-ea5f5e1a6e0b"
        assert record.command.version == 7535329255941600259
        assert record.command.customer.customer_city == "franca"
        assert record.answer == {
            "command_id": "99ae7953-32cb-4c32-9acc-ea5f5e1a6e0b",
            "version": 7535329255941600259,
        }

    @pytest.mark.parametrize("acked", [False, True])
    def test_every_record_round_trips_at_a_fraction_of_its_json(
        self, gateway: Gateway, acked: bool
    ) -> None:
        command = gateway.writes.upsert_command(Customer.model_validate(body()))
        record = pending(request_hash("POST /v1/customers", customer=body()), command)
        if acked:
            record = record.acked({"command_id": str(command.command_id), "status": "accepted"})
        stored = encode_record(record)
        assert decode_record(Record, stored) == record
        assert len(stored) < len(record.model_dump_json()) / 3

    def test_a_record_stored_as_plain_json_still_reads(self, gateway: Gateway) -> None:
        record = pending("h", gateway.writes.delete_command(CUSTOMER))
        assert decode_record(Record, record.model_dump_json()) == record

    def test_a_batch_record_round_trips(self) -> None:
        record = BatchRecord(
            request_hash="a" * 64, seed=uuid.uuid4(), first_version=99, issued_at_ms=5
        ).marked(sent=[0, 3, 999, 1000], acked=[0, 3, 999], unsent=[1000])
        assert decode_record(BatchRecord, encode_record(record)) == record
        assert [record.is_sent(i) for i in (0, 1, 999, 1000)] == [True, False, True, False]
        assert [record.is_acked(i) for i in (0, 3, 4, 1000)] == [True, True, False, False]

    def test_a_batch_records_offsets_give_each_customer_its_partitions(self) -> None:
        keys = [f"{n:032x}" for n in range(16)]
        record = BatchRecord(
            request_hash="a" * 64,
            seed=uuid.uuid4(),
            first_version=99,
            issued_at_ms=5,
            reached=(7, 0, 120_000),
        )
        assert decode_record(BatchRecord, encode_record(record)) == record
        by_partition = {0: 7, 1: None, 2: 120_000}  # 0: nothing seen there yet
        assert {partition_of(k, 3) for k in keys} == {0, 1, 2}
        assert [record.after(k) for k in keys] == [by_partition[partition_of(k, 3)] for k in keys]
        assert record.model_copy(update={"reached": ()}).after(keys[0]) is None

    def test_a_batch_record_without_offsets_reads_as_not_known(self) -> None:
        written = {"request_hash": "a" * 64, "seed": str(uuid.uuid4()), "first_version": 99}
        record = decode_record(BatchRecord, json.dumps(written | {"issued_at_ms": 5}))
        assert record.reached == ()
        assert record.after("c1") is None

    async def test_a_damaged_record_refuses_the_write(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.store(gateway.keys.redis_key("k-1"), STORED_V1[:40])
        response = await client.post("/v1/customers", json=body(), headers=keyed("k-1"))
        assert response.status_code == 503
        assert "unreadable idempotency record" in response.json()["detail"]
        assert gateway.producer.sent == []
