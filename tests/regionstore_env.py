"""What the write- and read-path tests share: the gateway client, the stores, the audit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio

from regionstore_shared.clients import MongoClient, customers, mongo_client
from regionstore_shared.documents import Collection
from regionstore_shared.regions import RegionMap
from regionstore_shared.settings import CommonSettings
from regionstore_testing.audit import AuditReport, Expected, wait_for_clean
from regionstore_testing.consumed import wait_consumed
from tests.keys import headers

APPLY_WITHIN_S = 90.0


def new_id() -> str:
    """A customer id no other test uses."""
    return uuid.uuid4().hex


def customer(zip_prefix: int = 1310, state: str = "SP", city: str = "sao paulo") -> dict[str, Any]:
    """A valid customer body with fresh ids."""
    return {
        "customer_id": new_id(),
        "customer_unique_id": uuid.uuid4().hex,
        "customer_zip_code_prefix": zip_prefix,
        "customer_city": city,
        "customer_state": state,
    }


@dataclass
class Env:
    """A gateway client plus direct access to every regional store, and the audit of writes."""

    http: httpx.AsyncClient
    settings: CommonSettings
    collections: dict[str, Collection]
    finals: dict[str, Expected] = field(default_factory=dict)

    @property
    def regions(self) -> RegionMap:
        """The region map the stack runs with."""
        return self.settings.region_map

    def remember(self, accepted: dict[str, Any], *, deleted: bool = False) -> None:
        """Record an acknowledged write as the customer's final state; the customer's writes
        acknowledged before it must not be what a region holds."""
        customer_id = accepted["customer_id"]
        held = self.finals.get(customer_id)
        earlier = frozenset() if held is None else held.earlier | {held.command_id or ""}
        self.finals[customer_id] = Expected(
            customer_id=customer_id,
            version=accepted["version"],
            deleted=deleted,
            home=accepted.get("region"),
            command_id=accepted.get("command_id"),
            earlier=earlier - {"", accepted.get("command_id")},
        )

    async def write(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send a write that must be accepted, and remember it."""
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        self.remember(body, deleted=method == "DELETE")
        return body

    async def set_status(self, region: str, status: str) -> None:
        """Flip a region through the API."""
        response = await self.http.put(f"/v1/regions/{region}/status", json={"status": status})
        assert response.status_code == 200, response.text

    async def pending(self) -> dict[str, int | None]:
        """Each region's parked backlog as the API reports it."""
        response = await self.http.get("/v1/regions")
        return {r["name"]: r["pending"] for r in response.json()["regions"]}

    async def wait_pending(self, region: str, at_least: int, within_s: float = 60) -> int:
        """Wait until a region's backlog reaches a count; return it."""
        deadline = time.monotonic() + within_s
        while True:
            count = (await self.pending())[region] or 0
            if count >= at_least or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.2)

    async def settle(
        self, finals: Iterable[Expected] | None = None, within_s: float = APPLY_WITHIN_S
    ) -> AuditReport:
        """Audit the remembered writes until clean or out of time."""
        wanted = list(finals) if finals is not None else list(self.finals.values())
        return await wait_for_clean(wanted, self.collections, self.regions, within_s=within_s)

    async def consumed(self, within_s: float = APPLY_WITHIN_S) -> None:
        """Wait until the writer's and the replicator's groups committed every command sent so
        far: whatever they were to write of them is written (or parked)."""
        kafka = self.settings.kafka
        groups = (kafka.writer_group, kafka.replicator_group)
        await wait_consumed(kafka, kafka.command_topic, groups, within_s=within_s)

    async def documents(self, customer_id: str) -> dict[str, dict[str, Any] | None]:
        """The raw document of a customer in every region."""
        return {
            region: await collection.find_one({"_id": customer_id})
            for region, collection in self.collections.items()
        }


@pytest_asyncio.fixture(loop_scope="session")
async def env(stack: Any) -> AsyncIterator[Env]:
    """A fresh Env on the running stack; every region is put back to available afterwards."""
    settings = CommonSettings()
    # The tests read the stores directly while the machine is loaded by the whole stack:
    # a generous socket timeout keeps a slow answer from passing for a dead store.
    patient = settings.store.model_copy(update={"socket_timeout_ms": 60_000})
    clients: dict[str, MongoClient] = {
        region: mongo_client(settings.stores[region], patient, "tests")
        for region in settings.region_map.names
    }
    collections = {region: customers(client, patient) for region, client in clients.items()}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers(), timeout=60) as http:
        environment = Env(http, settings, collections)
        try:
            yield environment
        finally:
            for region in settings.region_map.names:
                await http.put(f"/v1/regions/{region}/status", json={"status": "available"})
            for client in clients.values():
                await client.close()
