"""The running stack as the bench sees it: the gateway API, the stores, the services' metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis

from regionstore_shared.api_key import api_key, auth_headers
from regionstore_shared.clients import MongoClient, customers, mongo_clients, redis_client
from regionstore_shared.documents import Collection
from regionstore_shared.ports import local_service_urls, port, service_url
from regionstore_shared.regions import RegionMap
from regionstore_shared.settings import CommonSettings
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_testing.audit import AuditReport, Expected

from .data import ID_PREFIX, Customers, stale_prefix_bound
from .probes import Samples, scrape
from .snapshot import SnapshotCollection, audit_prefix

log = logging.getLogger("regionstore_bench")

DELETE_CHUNK = 25_000


def compose_url() -> str:
    """process-compose's API on the local stack (``PC_PORT``, as ``make`` sets it)."""
    return service_url(port("PC_PORT"))


def port_of(url: str) -> int:
    """The port of a service URL."""
    parsed = httpx.URL(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


class Progress:
    """Logs a line every few seconds while long work runs."""

    def __init__(self, what: str, total: int, every_s: float = 5.0) -> None:
        self._what = what
        self._total = total
        self._every_s = every_s
        self._started = time.monotonic()
        self._last = self._started
        self.done = 0

    def add(self, count: int = 1) -> None:
        """Count finished work; log when it is time."""
        self.done += count
        now = time.monotonic()
        if now - self._last >= self._every_s or self.done >= self._total:
            self._last = now
            elapsed = now - self._started
            log.info(
                "%s: %s/%s (%.0f/s, %.0fs)",
                self._what,
                f"{self.done:,}",
                f"{self._total:,}",
                self.done / elapsed if elapsed else 0.0,
                elapsed,
            )


@dataclass
class BenchEnv:
    """Clients to the gateway, every service's /metrics and every regional store.

    Every request carries the API key (``regionstore_shared.api_key``: the operator key of
    ``make up`` unless REGIONSTORE_API_KEY or REGIONSTORE_API_KEY_FILE say otherwise).
    """

    settings: CommonSettings
    http: httpx.AsyncClient
    urls: dict[str, str]
    collections: dict[str, Collection]
    redis: Redis
    api_key: str = field(repr=False, default="")

    @property
    def regions(self) -> RegionMap:
        """The region map the stack runs with."""
        return self.settings.region_map

    async def metrics(self, service: str) -> Samples:
        """One service's /metrics."""
        return await scrape(self.http, self.urls[service])

    async def set_status(self, region: str, status: str) -> None:
        """Flip a region through the API."""
        response = await self.http.put(f"/v1/regions/{region}/status", json={"status": status})
        response.raise_for_status()

    async def pending(self) -> dict[str, int]:
        """Each region's parked backlog as the API reports it (None counts as 0)."""
        response = await self.http.get("/v1/regions")
        response.raise_for_status()
        return {r["name"]: r["pending"] or 0 for r in response.json()["regions"]}

    async def restore_regions(self) -> None:
        """Every region available again: through the API, or straight in Redis if it fails."""
        board = StatusBoard(self.redis, self.settings.redis, self.regions.names)
        for region in self.regions.names:
            try:
                await self.set_status(region, "available")
            except httpx.HTTPError as error:
                log.warning("API flip failed (%r); setting %s in Redis", error, region)
                await board.set(region, NodeStatus.AVAILABLE)

    async def audit(
        self, expected: Iterable[Expected], prefix: str
    ) -> tuple[AuditReport, dict[str, SnapshotCollection]]:
        """The audit of these customers (all under ``prefix``) across every region."""
        return await audit_prefix(expected, self.collections, self.regions, prefix)

    async def delete_customers(self, customers: Customers) -> int:
        """Remove one scenario's customers from every store.

        By id ranges of at most DELETE_CHUNK customers, each one request: the ``_id`` index
        finds them, and no single request has to delete a whole 100,000-customer scenario
        within the socket timeout.
        """

        async def region(collection: Collection) -> int:
            removed = 0
            for low, high in customers.id_ranges(DELETE_CHUNK):
                result = await collection.delete_many({"_id": {"$gte": low, "$lt": high}})
                removed += result.deleted_count
            return removed

        counts = await asyncio.gather(*(region(c) for c in self.collections.values()))
        return sum(counts)

    async def delete_stale_runs(self) -> int:
        """Remove customers that crashed bench runs left behind (older than a few hours)."""
        query = {"_id": {"$gte": ID_PREFIX, "$lt": stale_prefix_bound()}}
        removed = 0
        for collection in self.collections.values():
            while ids := [
                d["_id"] async for d in collection.find(query, {"_id": 1}).limit(DELETE_CHUNK)
            ]:
                removed += (await collection.delete_many({"_id": {"$in": ids}})).deleted_count
        return removed


@contextlib.asynccontextmanager
async def open_env(timeout_s: float = 120.0) -> AsyncIterator[BenchEnv]:
    """Clients to the stack; every region is made available again on the way out."""
    settings = CommonSettings(service_name="bench")
    urls = local_service_urls()
    # The bench's own reads (audits) and clean-ups touch 100,000s of documents: give them time.
    patient = settings.model_copy(
        update={"store": settings.store.model_copy(update={"socket_timeout_ms": 300_000})}
    )
    clients: dict[str, MongoClient] = mongo_clients(patient, "bench")
    collections: dict[str, Collection] = {
        region: customers(client, settings.store) for region, client in clients.items()
    }
    redis = redis_client(settings.redis, "bench")
    # Below uvicorn's 5 s keep-alive: a connection the server is about to close is never reused
    # (that race shows up as httpx.ReadError on a healthy gateway).
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=2.0)
    key = api_key()
    async with httpx.AsyncClient(
        base_url=urls["gateway"], headers=auth_headers(key), timeout=timeout_s, limits=limits
    ) as http:
        env = BenchEnv(settings, http, urls, collections, redis, key)
        try:
            yield env
        finally:
            try:
                await asyncio.shield(env.restore_regions())
            finally:
                await redis.aclose()
                for client in clients.values():
                    await client.close()


def placements(bodies: Iterable[dict[str, Any]], regions: RegionMap) -> dict[str, int]:
    """How many of these customers each region holds (home or replica)."""
    counts = dict.fromkeys(regions.names, 0)
    for body in bodies:
        for region in regions.placement(body["customer_zip_code_prefix"]):
            counts[region] += 1
    return counts
