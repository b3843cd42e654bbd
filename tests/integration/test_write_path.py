"""The write path on the real stack: commands through Kafka, writer, replicator, hinted handoff."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from regionstore_shared.clients import kafka_connection
from regionstore_shared.schemas import (
    Action,
    Applier,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
    encode_command,
)
from regionstore_shared.settings import CommonSettings
from regionstore_testing.audit import Expected
from tests.regionstore_env import Env, customer, env, new_id

pytestmark = pytest.mark.integration
__all__ = ["env"]


async def test_a_write_reaches_home_and_replica_and_nothing_else(env: Env) -> None:
    body = customer(zip_prefix=1310)  # region_1, replica region_3
    accepted = await env.write("POST", "/v1/customers", json=body)
    assert accepted["region"] == "region_1"
    report = await env.settle()
    assert report.clean, report
    await env.consumed()
    docs = await env.documents(body["customer_id"])
    assert docs["region_1"] is not None
    assert docs["region_3"] is not None
    assert docs["region_1"]["_v"] == accepted["version"] == docs["region_3"]["_v"]
    # A new customer lived nowhere before: no tombstone in the region outside its placement.
    assert docs["region_2"] is None


@pytest.mark.parametrize(
    ("down", "zip_prefix"),
    [
        pytest.param(["region_2"], 45000, id="home-down"),
        pytest.param(["region_1"], 45000, id="replica-down"),
        pytest.param(["region_2", "region_1"], 45000, id="both-down"),
    ],
)
async def test_writes_for_a_down_region_are_parked_and_replayed(
    env: Env, down: list[str], zip_prefix: int
) -> None:
    for region in down:
        await env.set_status(region, "unavailable")
    before = await env.pending()
    bodies = [customer(zip_prefix=zip_prefix, state="BA", city="salvador") for _ in range(20)]
    for body in bodies:
        await env.write("POST", "/v1/customers", json=body)
    for region in down:
        parked = await env.wait_pending(region, (before[region] or 0) + 20)
        assert parked >= (before[region] or 0) + 20
        for body in bodies:
            assert (await env.documents(body["customer_id"]))[region] is None, "written while down"
    for region in down:
        await env.set_status(region, "available")
    report = await env.settle()
    assert report.clean, report


async def test_update_keeps_the_newest_version_everywhere(env: Env) -> None:
    body = customer(zip_prefix=80000, state="PR", city="curitiba")
    await env.write("POST", "/v1/customers?wait=applied", json=body)  # PATCH reads it first
    for city in ("londrina", "maringa", "cascavel"):
        await env.write(
            "PATCH",
            f"/v1/customers/{body['customer_id']}?wait=applied",
            json={"customer_city": city},
        )
    assert (await env.settle()).clean
    got = await env.http.get(f"/v1/customers/{body['customer_id']}")
    assert got.json()["customer_city"] == "cascavel"


async def test_delete_leaves_tombstones_where_the_customer_lived_and_a_404(env: Env) -> None:
    body = customer(zip_prefix=20000, state="RJ", city="rio de janeiro")
    await env.write("POST", "/v1/customers?wait=applied", json=body)
    deleted = await env.write("DELETE", f"/v1/customers/{body['customer_id']}?wait=applied")
    assert deleted["applied"] is True
    report = await env.settle()
    assert report.clean, report
    await env.consumed()
    docs = await env.documents(body["customer_id"])
    assert docs["region_1"] is not None
    assert docs["region_1"]["_deleted"] is True
    assert docs["region_3"] is not None
    assert docs["region_3"]["_deleted"] is True
    assert docs["region_2"] is None
    assert (await env.http.get(f"/v1/customers/{body['customer_id']}")).status_code == 404


async def test_a_zip_change_moves_the_customer_between_regions(env: Env) -> None:
    body = customer(zip_prefix=1310)  # region_1 + region_3
    await env.write("POST", "/v1/customers?wait=applied", json=body)
    assert (await env.settle()).clean
    moved = await env.write(
        "PATCH",
        f"/v1/customers/{body['customer_id']}?wait=applied",
        json={"customer_zip_code_prefix": 45000, "customer_state": "BA", "customer_city": "ilheus"},
    )
    assert moved["region"] == "region_2"
    report = await env.settle()  # region_2 + region_1 live, region_3 tombstoned
    assert report.clean, report
    docs = await env.documents(body["customer_id"])
    assert docs["region_3"] is not None
    assert docs["region_3"]["_deleted"] is True
    assert docs["region_1"] is not None
    assert docs["region_1"]["_home"] == "region_2"


async def test_stale_commands_replayed_after_newer_ones_change_nothing(env: Env) -> None:
    # Published again (republished: a retry, a redrive, a repair), an old command keeps its
    # version; a fresh one would be a new write, applied above the newest (test_clock_skew).
    settings = CommonSettings()
    body = customer(zip_prefix=1310)
    first = await env.write("POST", "/v1/customers?wait=applied", json=body)
    deleted = await env.write("DELETE", f"/v1/customers/{body['customer_id']}?wait=applied")
    targets = (
        Target(region="region_1", role=Applier.WRITER, action=Action.UPSERT),
        Target(region="region_3", role=Applier.REPLICATOR, action=Action.UPSERT),
    )
    old_upsert = UpsertCustomer(
        command_id=uuid.uuid4(),
        version=first["version"],
        issued_at_ms=0,
        targets=targets,
        customer=Customer.model_validate({**body, "customer_city": "resurrected"}),
        home_region="region_1",
        republished=True,
    )
    other = customer(zip_prefix=1310)
    newer = await env.write("POST", "/v1/customers?wait=applied", json=other)
    old_delete = DeleteCustomer(
        command_id=uuid.uuid4(),
        version=newer["version"] - 1,
        issued_at_ms=0,
        targets=tuple(t.model_copy(update={"action": Action.TOMBSTONE}) for t in targets),
        customer_id=other["customer_id"],
        republished=True,
    )
    producer = AIOKafkaProducer(**kafka_connection(settings.kafka), acks="all")
    await producer.start()
    try:
        for command in (old_upsert, old_delete, old_upsert):
            await producer.send_and_wait(
                settings.kafka.command_topic, encode_command(command), key=command.key.encode()
            )
    finally:
        await producer.stop()
    marker = await env.write("POST", "/v1/customers?wait=applied", json=customer(zip_prefix=1310))
    assert marker["applied"]
    report = await env.settle()
    assert report.clean, report
    assert deleted["version"] > first["version"]
    assert (await env.http.get(f"/v1/customers/{body['customer_id']}")).status_code == 404
    assert (await env.http.get(f"/v1/customers/{other['customer_id']}")).status_code == 200


async def test_poison_messages_are_dead_lettered_and_do_not_block(env: Env) -> None:
    settings = CommonSettings()
    marker = f"poison-{new_id()}".encode()
    consumer = AIOKafkaConsumer(
        settings.kafka.deadletter_topic,
        **kafka_connection(settings.kafka),
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    producer = AIOKafkaProducer(**kafka_connection(settings.kafka), acks="all")
    await producer.start()
    try:
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        await producer.send_and_wait(settings.kafka.command_topic, b"{not json", key=marker)
        accepted = await env.write("POST", "/v1/customers?wait=applied", json=customer())
        assert accepted["applied"]
        seen: list[dict[str, bytes]] = []
        async with asyncio.timeout(60):
            while len([h for h in seen if h.get("key") == marker]) < 2:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        seen.append({"key": record.key or b"", **dict(record.headers)})
    finally:
        await producer.stop()
        await consumer.stop()
    ours = [h for h in seen if h.get("key") == marker]
    assert len(ours) == 2  # one from the writer's group, one from the replicator's
    assert all(b"invalid command" in h["regionstore-error"] for h in ours)


async def test_wait_applied_gives_read_your_writes(env: Env) -> None:
    body = customer(zip_prefix=70000, state="DF", city="brasilia")
    accepted = await env.write("POST", "/v1/customers?wait=applied", json=body)
    assert accepted["applied"] is True
    got = await env.http.get(f"/v1/customers/{body['customer_id']}")
    assert got.status_code == 200
    assert got.json()["version"] == accepted["version"]
    assert got.json()["served_by"] == "region_3"


async def test_create_only_answers_409_for_an_existing_customer(env: Env) -> None:
    body = customer()
    await env.write("POST", "/v1/customers?wait=applied", json=body)
    again = await env.http.post("/v1/customers", json=body, headers={"If-None-Match": "*"})
    assert again.status_code == 409
    assert body["customer_id"] in again.json()["detail"]


async def test_batch_answers_each_item(env: Env) -> None:
    good = [customer(zip_prefix=z) for z in (1000, 40000, 99999)]
    bad_zip = customer(zip_prefix=500)
    items = [{"customer": c} for c in good] + [
        {"customer": bad_zip},
        {"customer": {**customer(), "customer_state": "XX"}},
        {"op": "delete", "customer_id": good[0]["customer_id"]},
    ]
    response = await env.http.post("/v1/customers:batch", json={"items": items})
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"], result["failed"]) == (4, 2, 0)
    statuses = [r["status"] for r in result["results"]]
    assert statuses == ["accepted"] * 3 + ["rejected", "rejected", "accepted"]
    assert result["results"][3]["errors"][0]["loc"][-1] == "customer_zip_code_prefix"
    assert "outside every region" in result["results"][3]["errors"][0]["msg"]
    assert result["results"][4]["errors"][0]["loc"][-1] == "customer_state"
    finals = {r["customer_id"]: r for r in result["results"] if r["status"] == "accepted"}
    expected = [
        Expected(cid, r["version"], deleted=r["region"] is None, home=r["region"])
        for cid, r in finals.items()
    ]
    report = await env.settle(expected)
    assert report.clean, report


async def test_batch_limits_are_enforced(env: Env) -> None:
    too_many = {"items": [{"customer": customer()} for _ in range(1001)]}
    response = await env.http.post("/v1/customers:batch", json=too_many)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "items"]
    huge = {"items": [{"customer": {**customer(), "customer_city": "x" * 100}}] * 20000}
    response = await env.http.post("/v1/customers:batch", json=huge)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("customer_zip_code_prefix", 500, "outside every region"),
        ("customer_zip_code_prefix", "01310", "valid integer"),
        ("customer_state", "XX", "27 Brazilian UF codes"),
        ("customer_unique_id", "not-hex", "should match pattern"),
        ("customer_city", "", "at least 1 character"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    env: Env, field: str, value: object, fragment: str
) -> None:
    response = await env.http.post("/v1/customers", json={**customer(), field: value})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == field
    assert fragment in detail["msg"]


async def test_region_status_api(env: Env) -> None:
    response = await env.http.put("/v1/regions/region_2/status", json={"status": "UnAvailable"})
    assert response.status_code == 200
    assert response.json()["status"] == "unavailable"
    legacy = await env.http.get("/node-statuses")
    assert legacy.json()["region_2"] == "unavailable"
    assert (
        await env.http.put("/v1/regions/region_9/status", json={"status": "available"})
    ).status_code == 404
    bad = await env.http.put("/v1/regions/region_2/status", json={"status": "maybe"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-1] == "status"
    restored = await env.http.post(
        "/node-status", json={"node_id": "region_2", "status": "AVAILABLE"}
    )
    assert restored.json() == {"node_id": "region_2", "status": "available"}


async def test_original_create_route_still_works(env: Env) -> None:
    body = customer(zip_prefix=88000, state="SC", city="florianopolis")
    response = await env.http.post("/create-customer", json=body)
    assert response.status_code == 202
    accepted = response.json()
    env.remember({**accepted, "region": "region_3"})
    assert (await env.settle()).clean


async def test_a_flip_back_to_unavailable_mid_drain_loses_nothing(env: Env) -> None:
    await env.set_status("region_3", "unavailable")
    bodies = [customer(zip_prefix=70000 + i, state="DF", city="brasilia") for i in range(1500)]
    for start in range(0, len(bodies), 500):
        chunk = bodies[start : start + 500]
        response = await env.http.post(
            "/v1/customers:batch", json={"items": [{"customer": b} for b in chunk]}
        )
        assert response.json()["accepted"] == len(chunk)
        for result in response.json()["results"]:
            env.remember(result)
    assert await env.wait_pending("region_3", at_least=1500) >= 1500
    await env.set_status("region_3", "available")
    await env.set_status("region_3", "unavailable")
    mid_drain = (await env.pending())["region_3"]
    await env.set_status("region_3", "available")
    report = await env.settle()
    assert report.checked == 1500
    assert report.clean, report
    assert mid_drain is not None
    assert (await env.pending())["region_3"] == 0
