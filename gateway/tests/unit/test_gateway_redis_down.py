"""Redis down: writes and reads go on with the last statuses read; status changes answer 503.

The real app and the real StatusBoard, over a fake Redis that fails like redis-py does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from audit_fakes import audit_trail, recent_changes
from auth_fakes import HEADERS, authenticator
from backpressure_fakes import idle_backpressure
from fastapi import FastAPI
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from regionstore_gateway.adapters.repository import Found, Lookup
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import Clients, State, serving
from regionstore_shared.applied_totals import AppliedTotals
from regionstore_shared.clock import HybridClock
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import FakeRedis, OnePartition, appended

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
STATUS_STORE_DOWN = "node status store unavailable; the status was not changed"


class FakeProducer(OnePartition):
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        self.sent.append(value)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result(appended(topic, len(self.sent) - 1))
        return future


class FakeRepository:
    """Serves the customer from region_1, or from its replica region_3 when region_1 is down,
    and remembers the statuses each read was given."""

    def __init__(self) -> None:
        self.given: list[Mapping[str, NodeStatus]] = []
        self.checked: list[str] = []

    async def lookup(self, customer_id: str, statuses: Mapping[str, NodeStatus]) -> Lookup:
        self.given.append(dict(statuses))
        served_by = "region_3" if statuses["region_1"] is NodeStatus.UNAVAILABLE else "region_1"
        document = {
            "_id": customer_id,
            "_v": 7,
            "_deleted": False,
            "_home": "region_1",
            "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
            "customer_zip_code_prefix": 14409,
            "customer_city": "franca",
            "customer_state": "SP",
        }
        return Lookup(newest={customer_id: Found(document, served_by)})

    def covered(self, unreachable: Iterable[str]) -> bool:
        return True

    async def holds(self, region: str, customer_id: str, command_id: str, position: int) -> bool:
        self.checked.append(region)
        return True


class FakeBacklog:
    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]:
        return dict.fromkeys(regions, 0)

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]:
        return dict.fromkeys(groups, 0)


class Gateway:
    def __init__(self, settings: GatewaySettings, clock: HybridClock | None = None) -> None:
        self.settings = settings
        self.redis = FakeRedis()
        self.board = StatusBoard(cast(Any, self.redis), settings.redis, settings.region_map.names)
        self.producer = FakeProducer()
        self.repository = FakeRepository()
        self.state = serving(
            Clients(
                settings=settings,
                producer=cast(Any, self.producer),
                board=self.board,
                repository=cast(Any, self.repository),
                clock=HybridClock(1) if clock is None else clock,
                idempotency=cast(Any, None),
                changes=cast(Any, None),
                backlog=cast(Any, FakeBacklog()),
                applied=AppliedTotals(cast(Any, self.redis), settings.redis.applied_key),
                auth=authenticator(),
                audit=audit_trail(settings),
                recent=recent_changes(),
                backpressure=idle_backpressure(settings),
                keyring=MemoryKeyring(),
            )
        )

    def mark(self, region: str, status: NodeStatus) -> None:
        self.redis.values[self.settings.redis.status_key(region)] = status.value

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        @contextlib.asynccontextmanager
        async def open_state(_: FastAPI) -> AsyncIterator[State]:
            yield self.state

        app = create_app(self.settings, open_state=open_state)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", headers=HEADERS
            ) as client:
                yield client


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return Gateway(GatewaySettings())


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


def _body() -> dict[str, Any]:
    return {
        "customer_id": CUSTOMER,
        "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
        "customer_zip_code_prefix": 14409,
        "customer_city": "franca",
        "customer_state": "SP",
    }


class TestStatusChanges:
    async def test_put_status_answers_503_and_changes_nothing(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        assert response.json()["detail"].startswith(STATUS_STORE_DOWN)
        assert response.headers["Retry-After"] == str(gateway.settings.api.retry_after_s)
        assert gateway.redis.values == {}

    async def test_legacy_node_status_answers_503(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.post(
            "/node-status", json={"node_id": "region_2", "status": "unavailable"}
        )
        assert response.status_code == 503
        assert response.json()["detail"].startswith(STATUS_STORE_DOWN)

    async def test_a_timeout_says_the_change_may_have_happened(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        gateway.redis.error = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        assert "may or may not have changed" in response.json()["detail"]

    async def test_a_full_redis_refused_it_and_nothing_changed(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        gateway.redis.error = OutOfMemoryError(
            "command not allowed when used memory > 'maxmemory'."
        )
        response = await client.put("/v1/regions/region_2/status", json={"status": "unavailable"})
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert detail.startswith(
            "node status store refused the change; the status was not changed"
        ), detail
        assert "maxmemory" in detail
        assert "may or may not" not in detail
        assert gateway.redis.values == {}

    async def test_a_status_stored_is_what_reads_use_once_redis_is_gone(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        response = await client.put("/v1/regions/region_2/status", json={"status": "Unavailable"})
        assert response.status_code == 200, response.text
        key = gateway.settings.redis.status_key("region_2")
        assert gateway.redis.values == {key: "unavailable"}
        gateway.redis.down = True
        listed = await client.get("/v1/regions")
        assert listed.status_code == 200, listed.text
        assert [r["status"] for r in listed.json()["regions"]] == [
            "available",
            "unavailable",
            "available",
        ]


class TestReads:
    async def test_a_read_uses_the_last_statuses_read(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.mark("region_1", NodeStatus.UNAVAILABLE)
        assert (await client.get(f"/v1/customers/{CUSTOMER}")).status_code == 200
        gateway.redis.down = True
        response = await client.get(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 200, response.text
        assert (response.json()["served_by"], response.json()["fallback"]) == ("region_3", True)
        assert gateway.repository.given[-1]["region_1"] is NodeStatus.UNAVAILABLE

    async def test_with_no_status_ever_read_every_region_is_available(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.get(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 200, response.text
        assert set(gateway.repository.given[-1].values()) == {NodeStatus.AVAILABLE}

    async def test_the_region_list_shows_the_last_statuses_read(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.mark("region_2", NodeStatus.UNAVAILABLE)
        await client.get("/v1/regions")
        gateway.redis.down = True
        response = await client.get("/v1/regions")
        assert response.status_code == 200, response.text
        statuses = {r["name"]: r["status"] for r in response.json()["regions"]}
        assert statuses == {
            "region_1": "available",
            "region_2": "unavailable",
            "region_3": "available",
        }

    async def test_legacy_node_statuses_answer_from_memory(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.redis.down = True
        response = await client.get("/node-statuses")
        assert response.status_code == 200
        assert set(response.json().values()) == {"available"}


class TestWrites:
    async def test_waiting_for_the_write_reads_where_the_last_statuses_say(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.mark("region_1", NodeStatus.UNAVAILABLE)
        await client.get("/v1/regions")
        gateway.redis.down = True
        response = await client.post("/v1/customers?wait=applied", json=_body())
        assert response.status_code == 202, response.text
        assert response.json()["applied"] is True
        assert gateway.repository.checked == ["region_3"]  # home region_1 is marked down


class TestReadiness:
    async def test_the_gateway_stays_ready_and_says_redis_is_unreachable(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        assert (await client.get("/readyz")).json() == {"ready": True, "redis": "ok"}
        gateway.redis.down = True
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["redis"].startswith("unreachable")
