"""Store writes per customer write, measured in the stores on maps of 3, 6 and 12 regions.

The router's count (:mod:`.write_cost`) is exact for what a command asks of the stores; this
scenario counts where the writes land. For each map it runs a writer and a replicator of its
own (the services' code, as processes) on a command topic, groups and parking topics of its own,
with the map's regions spread over the local stack's stores, one database a region. It publishes
every customer's create, then every customer's move to another home, then every delete, straight
to the command topic (the commands the gateway would make, from the same placement), waits after
each phase until both groups committed all of it, and divides the store writes the two services
counted (``regionstore_commands_applied_total`` plus ``_stale_total``) by the customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from regionstore_shared.clients import kafka_admin, kafka_producer, mongo_client
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import encode_command
from regionstore_shared.settings import CommonSettings
from regionstore_testing.consumed import wait_consumed
from regionstore_testing.ports import free_port
from regionstore_testing.processes import stop, wait_serving

from .write_cost import SIZES, lives, ring

log = logging.getLogger("regionstore_bench")

SERVICES = ("writer", "replicator")
READY_WITHIN_S = 120.0
CONSUMED_WITHIN_S = 300.0
WRITE_METRICS = ("regionstore_commands_applied", "regionstore_commands_stale")


def with_database(uri: str, database: str) -> str:
    """``uri`` naming ``database``; logins still authenticate against ``admin``."""
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    query.setdefault("authSource", "admin")
    return urlunsplit(parts._replace(path=f"/{database}", query=urlencode(query)))


def store_writes(metrics: str) -> float:
    """The store writes a service counted: documents written plus stale replaces."""
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        if family.name in WRITE_METRICS:
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@dataclass(frozen=True)
class MapRun:
    """One map's topics, groups, databases and services."""

    size: int
    prefix: str
    regions: RegionMap
    stores: dict[str, str]

    @classmethod
    def of(cls, size: int, settings: CommonSettings) -> MapRun:
        prefix = f"bench.map{size}.{uuid.uuid4().hex[:6]}"
        regions = ring(size)
        bases = [settings.stores[name] for name in settings.region_map.names]
        stores = {
            name: with_database(bases[i % len(bases)], f"{prefix.replace('.', '_')}_{name}")
            for i, name in enumerate(regions.names)
        }
        return cls(size, prefix, regions, stores)

    @property
    def command_topic(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def groups(self) -> tuple[str, str]:
        return f"{self.prefix}.writer", f"{self.prefix}.replicator"

    def environment(self, service: str, port: int) -> dict[str, str]:
        writer, replicator = self.groups
        specs = [spec.model_dump(mode="json") for spec in self.regions.specs]
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "REGIONSTORE_SERVICE_NAME": f"{self.prefix}.{service}",
            "REGIONSTORE_HTTP__PORT": str(port),
            "REGIONSTORE_REGIONS": json.dumps(specs),
            **{f"REGIONSTORE_STORES__{name.upper()}": uri for name, uri in self.stores.items()},
            "REGIONSTORE_KAFKA__COMMAND_TOPIC": self.command_topic,
            "REGIONSTORE_KAFKA__PENDING_TOPIC_PREFIX": f"{self.prefix}.pending.",
            "REGIONSTORE_KAFKA__WRITER_GROUP": writer,
            "REGIONSTORE_KAFKA__REPLICATOR_GROUP": replicator,
            "REGIONSTORE_REDIS__APPLIED_KEY": f"{self.prefix}:applied",
        }


@contextlib.asynccontextmanager
async def services(run: MapRun, logs: Path) -> AsyncIterator[list[str]]:
    """Run the map's writer and replicator; yield their base URLs once both are ready."""
    processes: list[asyncio.subprocess.Process] = []
    urls: list[str] = []
    try:
        for service in SERVICES:
            port = free_port()
            with (logs / f"{run.prefix}.{service}.log").open("wb") as out:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        f"regionstore_{service}",
                        env=run.environment(service, port),
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            await wait_serving(url, process, within_s=READY_WITHIN_S)
        yield urls
    finally:
        await stop(processes)


async def _writes(urls: Iterable[str]) -> float:
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as http:
        pages = [(await http.get(f"{url}/metrics")).text for url in urls]
    return sum(store_writes(page) for page in pages)


async def measure(
    settings: CommonSettings, size: int, customers: int, logs: Path
) -> dict[str, Any]:
    """Store writes per create, move and delete on a ``size``-region map, counted live."""
    run = MapRun.of(size, settings)
    by_kind: dict[str, list[Any]] = {"create": [], "move": [], "delete": []}
    for kind, command in lives(run.regions, customers, seed=11):
        by_kind[kind].append(command)
    producer = kafka_producer(settings.kafka, f"{run.prefix}.bench")
    await producer.start()
    measured: dict[str, float] = {}
    try:
        async with services(run, logs) as urls:
            for kind, commands in by_kind.items():
                before = await _writes(urls)
                sent = [
                    await producer.send(run.command_topic, encode_command(c), key=c.key.encode())
                    for c in commands
                ]
                await asyncio.gather(*sent)
                await wait_consumed(
                    settings.kafka, run.command_topic, run.groups, within_s=CONSUMED_WITHIN_S
                )
                measured[kind] = (await _writes(urls) - before) / customers
                log.info(
                    "map of %d regions: %s costs %.2f store writes", size, kind, measured[kind]
                )
    finally:
        await producer.stop()
        await _clean(settings, run)
    return {"regions": size, "customers": customers, "measured": measured}


async def _clean(settings: CommonSettings, run: MapRun) -> None:
    """Drop the map's databases and topics."""
    for uri in run.stores.values():
        client = mongo_client(uri, settings.store, "bench-maps")
        try:
            await client.drop_database(urlsplit(uri).path.lstrip("/"))
        finally:
            await client.close()
    admin = kafka_admin(settings.kafka, "bench-maps")
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(run.prefix)]
        topics += [settings.kafka.placement_topic(group) for group in run.groups]
        await admin.delete_topics(sorted(set(topics) & set(await admin.list_topics())))
    finally:
        await admin.close()


async def measure_all(
    customers: int, logs: Path, sizes: tuple[int, ...] = SIZES
) -> list[dict[str, Any]]:
    """The live figures for each map size (one replica); the services log into ``logs``."""
    settings = CommonSettings()
    return [await measure(settings, size, customers, logs) for size in sizes]
