"""The audit trail: event shape, the event before the action, a refusal when it cannot be
written, follow-ups of failed actions, and the recent changes the tail keeps per region.

The real routes and the real Writes and StatusBoard, over a fake producer and a fake Redis that
write into one shared log, so a test can read the order things happened in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from asgi_lifespan import LifespanManager
from backpressure_fakes import idle_backpressure
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_trace_id
from redis.exceptions import OutOfMemoryError
from starlette.types import ASGIApp, Receive, Scope, Send

from regionstore_gateway.adapters.audit_trail import (
    AuditAction,
    AuditEvent,
    AuditTrail,
    new_event,
    request_id,
)
from regionstore_gateway.adapters.status_history import RecentChanges, StatusHistory
from regionstore_gateway.api import batch, customers, errors, legacy, regions
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.auth.authentication import PRINCIPAL_SCOPE_KEY
from regionstore_gateway.services.regions import next_change
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import Clients, State, serving
from regionstore_shared.applied_totals import AppliedTotals
from regionstore_shared.audit_trail import DETECTOR
from regionstore_shared.clock import HybridClock
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import FakeRedis

AUDIT = "audit.events"
COMMANDS = "customers.commands"
OPERATOR = Principal(key_id="0123456789ab", role=Role.OPERATOR)
CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"


class FakeProducer:
    """Acknowledges each send on the next loop turn, logging the send and the ack.

    ``refuse`` holds topics whose sends fail before buffering (Kafka never saw them);
    ``silent`` topics whose sends are never acknowledged.
    """

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.refuse: set[str] = set()
        self.silent: set[str] = set()

    async def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        if topic in self.refuse:
            raise KafkaConnectionError(f"no broker for {topic}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self.messages.append((topic, key, value))
        self.log.append(f"send {topic}")
        if topic not in self.silent:

            def ack() -> None:
                future.set_result("metadata")
                self.log.append(f"ack {topic}")

            loop.call_soon(ack)
        return future

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(value) for topic, _, value in self.messages if topic == AUDIT]

    def commands(self) -> list[dict[str, Any]]:
        return [json.loads(value) for topic, _, value in self.messages if topic == COMMANDS]


class LoggingRedis(FakeRedis):
    """The shared fake Redis, logging each status it sets."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def set(self, key: str, value: str) -> bool:
        stored = await super().set(key, value)
        self.log.append(f"redis set {value}")
        return stored


class FakeBacklog:
    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]:
        return dict.fromkeys(regions, 0)

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]:
        return dict.fromkeys(groups, 0)


class NoKeys:
    """An idempotency store for requests without keys: asked only with empty lists."""

    async def find(self, keys: list[str]) -> list[None]:
        assert keys == []
        return []

    async def claim(self, claims: list[Any]) -> list[Any]:
        assert claims == []
        return []

    async def acknowledge(self, acks: list[Any]) -> None:
        assert acks == []


class AsPrincipal:
    """Stands in for the authentication middleware: every request runs as ``principal``."""

    def __init__(self, app: ASGIApp, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PRINCIPAL_SCOPE_KEY] = self.principal
        await self.app(scope, receive, send)


class Rig:
    """The customer, batch and region routes over fakes."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.log: list[str] = []
        self.producer = FakeProducer(self.log)
        self.redis = LoggingRedis(self.log)
        self.board = StatusBoard(cast(Any, self.redis), settings.redis, settings.region_map.names)
        self.audit = AuditTrail(cast(Any, self.producer), AUDIT, timeout_s=0.05)
        self.recent = RecentChanges(keep=5)

    def state(self) -> State:
        return serving(
            Clients(
                settings=self.settings,
                producer=cast(Any, self.producer),
                board=self.board,
                repository=cast(Any, None),
                clock=HybridClock(1),
                idempotency=cast(Any, NoKeys()),
                changes=cast(Any, None),
                backlog=cast(Any, FakeBacklog()),
                applied=AppliedTotals(cast(Any, self.redis), self.settings.redis.applied_key),
                audit=self.audit,
                recent=self.recent,
                backpressure=idle_backpressure(self.settings),
                keyring=MemoryKeyring(),
                auth=cast(Any, None),
            )
        )

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[State]:
            yield self.state()
            await self.audit.close()

        app = FastAPI(lifespan=lifespan)
        for router in (customers.router, batch.router, regions.router, legacy.router):
            app.include_router(router)
        errors.install(app, retry_after_s=self.settings.api.retry_after_s)
        app.add_middleware(AsPrincipal, principal=OPERATOR)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield client

    async def follow_ups(self) -> list[dict[str, Any]]:
        """The follow-up events, once every follow-up in flight has been published."""
        await self.audit.close()
        return [e for e in self.producer.events() if "follows" in e]


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return Rig(GatewaySettings())


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    async with rig.client() as client:
        yield client


def _event(
    target: str = "region_2", status: str = "unavailable", key_id: str = OPERATOR.key_id
) -> AuditEvent:
    actor = Principal(key_id=key_id, role=Role.OPERATOR)
    return new_event(actor, AuditAction.REGION_STATUS, target, {"status": status})


class TestEventShape:
    def test_an_event_names_the_key_id_the_role_the_action_and_when(self) -> None:
        event = json.loads(_event().encode())
        assert set(event) == {
            "schema_version",
            "event_id",
            "at",
            "key_id",
            "role",
            "action",
            "target",
            "detail",
        }
        assert event["key_id"] == OPERATOR.key_id
        assert event["role"] == "operator"
        assert event["action"] == "region.status"
        assert event["target"] == "region_2"
        assert event["detail"] == {"status": "unavailable"}
        at = datetime.fromisoformat(event["at"])
        assert at.utcoffset() is not None
        assert at.utcoffset() == UTC.utcoffset(None)

    def test_the_key_name_is_carried_when_the_key_has_one(self) -> None:
        named = Principal(key_id=OPERATOR.key_id, role=Role.OPERATOR, name="on-call laptop")
        event = new_event(named, AuditAction.REGION_STATUS, "region_1", {"status": "available"})
        assert json.loads(event.encode())["key_name"] == "on-call laptop"
        follow_up = json.loads(event.followed_by("failed", "RedisError()").encode())
        assert follow_up["key_name"] == "on-call laptop"

    def test_a_request_id_is_carried_when_there_is_one(self) -> None:
        detail = {"status": "available"}
        event = new_event(OPERATOR, AuditAction.REGION_STATUS, "region_1", detail, request_id="r1")
        assert json.loads(event.encode())["request_id"] == "r1"

    def test_a_traced_request_s_id_is_its_trace_id(self) -> None:
        provider = TracerProvider()
        with provider.get_tracer("test").start_as_current_span("PUT") as span:
            assert request_id() == format_trace_id(span.get_span_context().trace_id)

    def test_a_follow_up_points_at_its_event_and_says_what_became_of_it(self) -> None:
        event = _event()
        follow_up = json.loads(event.followed_by("failed", "RedisError()").encode())
        assert follow_up["follows"] == str(event.event_id)
        assert follow_up["event_id"] != str(event.event_id)
        assert follow_up["outcome"] == "failed"
        assert follow_up["detail"] == {"status": "unavailable", "error": "RedisError()"}
        assert follow_up["key_id"] == OPERATOR.key_id


class TestStatusChange:
    async def test_the_event_is_acknowledged_before_the_status_is_set(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        response = await client.put("/v1/regions/region_2/status", json={"status": "Unavailable"})
        assert response.status_code == 200, response.text
        assert rig.log == [f"send {AUDIT}", f"ack {AUDIT}", "redis set unavailable"]
        (event,) = rig.producer.events()
        assert (event["action"], event["target"]) == ("region.status", "region_2")
        assert event["detail"] == {"status": "unavailable"}
        assert event["key_id"] == OPERATOR.key_id
        (message,) = rig.producer.messages
        assert message[1] == b"region_2"

    async def test_the_event_carries_a_request_id(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        await client.put("/v1/regions/region_2/status", json={"status": "Unavailable"})
        await client.put("/v1/regions/region_2/status", json={"status": "Available"})
        first, second = (event["request_id"] for event in rig.producer.events())
        assert re.fullmatch("[0-9a-f]{32}", first)
        assert first != second

    async def test_a_trail_that_cannot_be_written_refuses_the_change(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(AUDIT)
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(rig.settings.api.retry_after_s)
        assert response.json()["outcome"] == "not_accepted"
        assert "audit trail" in response.json()["detail"]
        assert rig.redis.values == {}

    async def test_an_event_not_acknowledged_in_time_refuses_and_is_followed_up(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.silent.add(AUDIT)
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        assert rig.redis.values == {}
        (follow_up,) = await rig.follow_ups()
        first = rig.producer.events()[0]
        assert follow_up["follows"] == first["event_id"]
        assert follow_up["outcome"] == "failed"

    async def test_a_change_redis_refuses_is_followed_up_as_failed(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.redis.down = True
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        (follow_up,) = await rig.follow_ups()
        (first,) = [e for e in rig.producer.events() if "follows" not in e]
        assert follow_up["follows"] == first["event_id"]
        assert follow_up["outcome"] == "failed"
        assert follow_up["target"] == "region_2"

    async def test_a_change_redis_refuses_for_want_of_memory_is_shown_as_failed(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.redis.down = True
        rig.redis.error = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        assert "was not changed" in response.json()["detail"]
        (follow_up,) = await rig.follow_ups()
        assert follow_up["outcome"] == "failed"
        rig.recent.apply(AuditEvent.model_validate(e) for e in rig.producer.events())
        rig.redis.down = False
        listed = (await client.get("/v1/regions")).json()["regions"]
        (change,) = next(r for r in listed if r["name"] == "region_2")["recent_changes"]
        assert (change["status"], change["outcome"]) == ("unavailable", "failed")
        assert next(r for r in listed if r["name"] == "region_2")["status"] == "available"

    async def test_the_original_route_is_audited_the_same_way(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/node-status", json={"node_id": "region_3", "status": "unavailable"}
        )
        assert response.status_code == 200, response.text
        assert rig.log == [f"send {AUDIT}", f"ack {AUDIT}", "redis set unavailable"]
        (event,) = rig.producer.events()
        assert (event["action"], event["target"], event["detail"]) == (
            "region.status",
            "region_3",
            {"status": "unavailable"},
        )

    async def test_the_original_route_is_refused_without_a_trail(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(AUDIT)
        response = await client.post(
            "/node-status", json={"node_id": "region_3", "status": "unavailable"}
        )
        assert response.status_code == 503
        assert rig.redis.values == {}

    async def test_an_unknown_region_records_nothing(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        response = await client.put("/v1/regions/nowhere/status", json={"status": "unavailable"})
        assert response.status_code == 404
        assert rig.producer.messages == []


class TestDelete:
    async def test_the_event_carries_the_command_and_goes_before_it(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        response = await client.delete(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 202, response.text
        assert rig.log == [f"send {AUDIT}", f"ack {AUDIT}", f"send {COMMANDS}", f"ack {COMMANDS}"]
        (event,) = rig.producer.events()
        accepted = response.json()
        assert (event["action"], event["target"]) == ("customer.delete", CUSTOMER)
        assert event["detail"] == {
            "command_id": accepted["command_id"],
            "version": accepted["version"],
        }
        assert event["key_id"] == OPERATOR.key_id

    async def test_a_trail_that_cannot_be_written_refuses_the_delete(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(AUDIT)
        response = await client.delete(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 503
        assert response.json()["outcome"] == "not_accepted"
        assert response.headers["Retry-After"] == str(rig.settings.api.retry_after_s)
        assert rig.producer.commands() == []

    async def test_a_delete_kafka_refuses_is_followed_up_as_failed(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(COMMANDS)
        response = await client.delete(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 503
        (follow_up,) = await rig.follow_ups()
        assert follow_up["outcome"] == "failed"
        assert follow_up["target"] == CUSTOMER

    async def test_an_upsert_is_not_audited(self, rig: Rig, client: httpx.AsyncClient) -> None:
        body = {
            "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
            "customer_zip_code_prefix": 14409,
            "customer_city": "franca",
            "customer_state": "SP",
        }
        response = await client.put(f"/v1/customers/{CUSTOMER}", json=body)
        assert response.status_code == 202, response.text
        assert rig.producer.events() == []


def _batch(deletes: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"op": "delete", "customer_id": uuid.uuid4().hex} for _ in range(deletes)
    ]
    items.append(
        {
            "customer": {
                "customer_id": CUSTOMER,
                "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
                "customer_zip_code_prefix": 14409,
                "customer_city": "franca",
                "customer_state": "SP",
            }
        }
    )
    return {"items": items}


class TestBatch:
    async def test_one_event_per_delete_all_sent_before_any_is_awaited(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        body = _batch(3)
        response = await client.post("/v1/customers:batch", json=body)
        assert response.status_code == 202, response.text
        assert rig.log[:6] == [f"send {AUDIT}"] * 3 + [f"ack {AUDIT}"] * 3
        assert all(entry.endswith(COMMANDS) for entry in rig.log[6:])
        events = rig.producer.events()
        results = response.json()["results"]
        assert [e["target"] for e in events] == [i["customer_id"] for i in body["items"][:3]]
        for event, result in zip(events, results, strict=False):
            assert event["action"] == "customer.delete"
            assert event["detail"] == {
                "command_id": result["command_id"],
                "version": result["version"],
            }

    async def test_the_deletes_of_one_request_share_its_request_id(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        await client.post("/v1/customers:batch", json=_batch(3))
        await client.post("/v1/customers:batch", json=_batch(2))
        ids = [event["request_id"] for event in rig.producer.events()]
        assert len(ids) == 5
        assert len(set(ids[:3])) == 1
        assert len(set(ids[3:])) == 1
        assert ids[0] != ids[3]

    async def test_deletes_without_a_trail_fail_and_the_rest_goes_on(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(AUDIT)
        response = await client.post("/v1/customers:batch", json=_batch(2))
        assert response.status_code == 202, response.text
        answer = response.json()
        assert (answer["accepted"], answer["failed"]) == (1, 2)
        assert [r["status"] for r in answer["results"]] == ["failed", "failed", "accepted"]
        assert answer["results"][0]["errors"][0]["type"] == "audit_unavailable"
        assert [c["kind"] for c in rig.producer.commands()] == ["upsert"]

    async def test_a_batch_of_deletes_only_without_a_trail_is_a_503(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(AUDIT)
        body = {"items": _batch(2)["items"][:2]}
        response = await client.post("/v1/customers:batch", json=body)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(rig.settings.api.retry_after_s)
        assert rig.producer.commands() == []

    async def test_deletes_kafka_refuses_are_followed_up(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        rig.producer.refuse.add(COMMANDS)
        response = await client.post("/v1/customers:batch", json=_batch(2))
        assert response.status_code == 503
        follow_ups = await rig.follow_ups()
        assert sorted(f["outcome"] for f in follow_ups) == ["failed", "failed"]


class TestRecentChanges:
    def test_keeps_the_last_five_per_region_newest_first(self) -> None:
        recent = RecentChanges(keep=5)
        statuses = ["unavailable", "available"] * 4
        events = [_event("region_1", s, key_id=f"key{i:09d}") for i, s in enumerate(statuses)]
        assert recent.apply([*events, _event("region_2", "unavailable")])
        shown = recent.of("region_1")
        assert [c.key_id for c in shown] == [f"key{i:09d}" for i in (7, 6, 5, 4, 3)]
        assert [c.status for c in shown] == [NodeStatus.AVAILABLE, NodeStatus.UNAVAILABLE] * 2 + [
            NodeStatus.AVAILABLE
        ]
        assert [c.status for c in recent.of("region_2")] == [NodeStatus.UNAVAILABLE]
        assert recent.of("region_3") == []

    def test_a_follow_up_marks_its_change_failed_or_unknown_and_it_stays_listed(self) -> None:
        recent = RecentChanges(keep=5)
        done, failed, unsure = _event(), _event(status="available"), _event()
        recent.apply([done, failed, unsure])
        assert recent.apply([failed.followed_by("failed", "RedisError()")])
        assert recent.apply([unsure.followed_by("unknown", "TimeoutError()")])
        shown = recent.of("region_2")
        assert [(c.event_id, c.outcome) for c in shown] == [
            (str(unsure.event_id), "unknown"),
            (str(failed.event_id), "failed"),
            (str(done.event_id), "done"),
        ]

    def test_a_follow_up_of_a_change_no_longer_kept_changes_nothing(self) -> None:
        recent = RecentChanges(keep=1)
        old, new = _event(), _event(status="available")
        recent.apply([old, new])
        assert not recent.apply([old.followed_by("failed", "RedisError()")])
        assert [c.outcome for c in recent.of("region_2")] == ["done"]

    def test_other_actions_and_bad_statuses_are_ignored(self) -> None:
        recent = RecentChanges(keep=5)
        delete = new_event(OPERATOR, AuditAction.CUSTOMER_DELETE, CUSTOMER, {"version": 1})
        odd = new_event(OPERATOR, AuditAction.REGION_STATUS, "region_1", {"status": "sideways"})
        assert not recent.apply([delete, odd])
        assert recent.of("region_1") == []
        assert recent.of(CUSTOMER) == []

    async def test_the_region_list_shows_them(self, rig: Rig, client: httpx.AsyncClient) -> None:
        event = _event("region_3", "unavailable")
        rig.recent.apply([event])
        response = await client.get("/v1/regions")
        assert response.status_code == 200, response.text
        listed = {r["name"]: r["recent_changes"] for r in response.json()["regions"]}
        assert listed["region_1"] == []
        (change,) = listed["region_3"]
        assert change["key_id"] == OPERATOR.key_id
        assert change["status"] == "unavailable"
        assert change["outcome"] == "done"
        assert datetime.fromisoformat(change["at"]) == event.at

    async def test_the_region_list_names_the_key_and_the_outcome(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        named = Principal(key_id="fedcba987654", role=Role.OPERATOR, name="on-call laptop")
        event = new_event(named, AuditAction.REGION_STATUS, "region_1", {"status": "unavailable"})
        rig.recent.apply([event, event.followed_by("unknown", "TimeoutError()")])
        response = await client.get("/v1/regions")
        region_1 = next(r for r in response.json()["regions"] if r["name"] == "region_1")
        (change,) = region_1["recent_changes"]
        assert (change["key_id"], change["key_name"]) == ("fedcba987654", "on-call laptop")
        assert change["outcome"] == "unknown"

    async def test_the_detector_s_down_is_listed_by_the_detector_with_its_reason(
        self, rig: Rig, client: httpx.AsyncClient
    ) -> None:
        why = {"status": "down", "reason": "3 failures"}
        down = new_event(DETECTOR, AuditAction.REGION_STATUS, "region_2", why)
        named = Principal(key_id="fedcba987654", role=Role.OPERATOR, name="on-call laptop")
        back = new_event(named, AuditAction.REGION_STATUS, "region_2", {"status": "available"})
        rig.recent.apply([down, down.followed_by("failed", "RedisError()"), back])
        response = await client.get("/v1/regions")
        region_2 = next(r for r in response.json()["regions"] if r["name"] == "region_2")
        shown = [
            (c["status"], c["by"], c["key_id"], c["key_name"], c["reason"], c["outcome"])
            for c in region_2["recent_changes"]
        ]
        assert shown == [
            ("available", "operator", "fedcba987654", "on-call laptop", None, "done"),
            ("down", "detector", "detector", None, "3 failures", "failed"),
        ]

    async def test_a_waiter_wakes_on_a_change(self) -> None:
        recent = RecentChanges(keep=5)
        waiter = asyncio.create_task(recent.wait(recent.generation, within_s=30))
        await asyncio.sleep(0)
        await recent.bump()
        assert await waiter == 1


class QuietStatuses:
    """Status changes that never change."""

    generation = 0

    async def wait(self, seen: int, within_s: float) -> int:
        await asyncio.sleep(within_s)
        return self.generation


class TestEventStream:
    async def test_a_recorded_change_wakes_the_stream_without_a_status_change(self) -> None:
        recent = RecentChanges(keep=5)
        seen = (QuietStatuses.generation, recent.generation)
        woken = asyncio.create_task(
            next_change(cast(Any, QuietStatuses()), recent, seen, within_s=60)
        )
        await asyncio.sleep(0)
        recent.apply([_event()])
        await recent.bump()
        async with asyncio.timeout(5):
            assert await woken == (0, 1)


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset = offset
        self.value = value


class Opened(list["FakeConsumer"]):
    """The consumers a tail opened, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()

    def add(self, consumer: FakeConsumer) -> None:
        self.append(consumer)
        self.grew.set()

    async def at_least(self, count: int) -> None:
        while len(self) < count:
            self.grew.clear()
            await self.grew.wait()


class FakeConsumer:
    """One partition of events; ``fail`` makes the next getmany raise, like a broken client."""

    def __init__(self, log: list[bytes], opened: Opened) -> None:
        self.log = log
        self.position = 0
        self.fail: Exception | None = None
        self.stopped = False
        self.served = asyncio.Event()
        opened.add(self)

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert partitions == [TopicPartition(AUDIT, 0)]

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, len(self.log))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    async def getmany(
        self, tp: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[Record]]:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        records = [Record(o, v) for o, v in enumerate(self.log) if o >= self.position]
        self.position = len(self.log)
        if not records:
            self.served.set()
            await asyncio.sleep(0.01)
        return {tp: records} if records else {}


class TestTail:
    async def _caught_up(self, opened: Opened, index: int) -> None:
        """Once the ``index``-th consumer opened has served everything there is."""
        async with asyncio.timeout(5):
            await opened.at_least(index + 1)
            opened[index].served.clear()
            await opened[index].served.wait()

    async def test_starts_a_bounded_number_before_the_end_then_follows(self, rig: Rig) -> None:
        log = [_event("region_1", "unavailable", key_id=f"old{i:09d}").encode() for i in range(8)]
        opened = Opened()
        recent = RecentChanges(keep=5)
        tail = StatusHistory(
            rig.settings.kafka,
            "gateway",
            recent,
            tail_events=2,
            open_consumer=lambda: cast(Any, FakeConsumer(log, opened)),
        )
        tail.start()
        try:
            await self._caught_up(opened, 0)
            assert [c.key_id for c in recent.of("region_1")] == ["old000000007", "old000000006"]
            log.append(b"not an event")
            log.append(_event("region_1", "available", key_id="new000000000").encode())
            await self._caught_up(opened, 0)
            assert [c.key_id for c in recent.of("region_1")][:1] == ["new000000000"]
            assert len(recent.of("region_1")) == 3
        finally:
            await tail.stop()
        assert opened[0].stopped

    async def test_after_a_failure_it_resumes_where_it_was_without_repeats(self, rig: Rig) -> None:
        log = [_event("region_2", "unavailable", key_id="first0000000").encode()]
        opened = Opened()
        recent = RecentChanges(keep=5)
        tail = StatusHistory(
            rig.settings.kafka,
            "gateway",
            recent,
            tail_events=100,
            retry_s=0.01,
            open_consumer=lambda: cast(Any, FakeConsumer(log, opened)),
        )
        tail.start()
        try:
            await self._caught_up(opened, 0)
            opened[0].fail = KafkaConnectionError("broker gone")
            log.append(_event("region_2", "available", key_id="second000000").encode())
            await self._caught_up(opened, 1)
            assert opened[0].stopped
            assert [c.key_id for c in recent.of("region_2")] == ["second000000", "first0000000"]
        finally:
            await tail.stop()

    async def test_while_kafka_cannot_be_reached_it_keeps_what_it_read_and_retries(
        self, rig: Rig
    ) -> None:
        recent = RecentChanges(keep=5)
        recent.apply([_event("region_1", "unavailable")])
        attempts = Opened()

        def unreachable() -> Any:
            consumer = FakeConsumer([], attempts)
            consumer.start = _refuse  # type: ignore[method-assign]
            return consumer

        tail = StatusHistory(
            rig.settings.kafka,
            "gateway",
            recent,
            tail_events=10,
            retry_s=0.01,
            max_retry_s=0.02,
            open_consumer=unreachable,
        )
        tail.start()
        try:
            async with asyncio.timeout(5):
                await attempts.at_least(3)
        finally:
            await tail.stop()
        assert all(c.stopped for c in attempts)
        assert [c.status for c in recent.of("region_1")] == [NodeStatus.UNAVAILABLE]


async def _refuse() -> None:
    raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
