"""How full the gateway's Redis instances are, sampled in the background for /metrics.

The control plane (region statuses, API keys, clock leases) and the idempotency records live in
two Redis instances, each with its own ``maxmemory``: the control plane's never evicts, the
records' evicts the oldest record first once full. Both are watched here so an alert can fire
before either fills: records evicted before their TTL shorten how long a retry stays safe, and
a full control plane refuses status changes and new keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CONTROL = "control"
IDEMPOTENCY = "idempotency"


@dataclass(frozen=True, slots=True)
class Usage:
    """One Redis instance's memory, as its INFO said at the last sample."""

    used_bytes: int
    max_bytes: int
    """``maxmemory``; 0 when unlimited."""
    evicted_keys: int
    """Keys evicted since the instance started."""
    keys: int


class _UsageCollector(Collector):
    """Exports the last sample of each instance; an instance that could not be read is absent."""

    def __init__(self) -> None:
        self.samples: dict[str, Usage] = {}

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "regionstore_redis_used_memory_bytes",
            "Memory a Redis instance uses (INFO used_memory), by store: control (statuses, "
            "API keys, leases) or idempotency (the idempotency records).",
            labels=["store"],
        )
        limit = GaugeMetricFamily(
            "regionstore_redis_maxmemory_bytes",
            "A Redis instance's maxmemory, by store; 0 when unlimited.",
            labels=["store"],
        )
        evicted = CounterMetricFamily(
            "regionstore_redis_evicted_keys",
            "Keys a Redis instance evicted to stay within maxmemory since it started, by store. "
            "An evicted idempotency record is forgotten before its TTL.",
            labels=["store"],
        )
        keys = GaugeMetricFamily(
            "regionstore_redis_keys", "Keys a Redis instance holds, by store.", labels=["store"]
        )
        for store, usage in sorted(self.samples.items()):
            used.add_metric([store], usage.used_bytes)
            limit.add_metric([store], usage.max_bytes)
            evicted.add_metric([store], usage.evicted_keys)
            keys.add_metric([store], usage.keys)
        yield from (used, limit, evicted, keys)


USAGE = _UsageCollector()
REGISTRY.register(USAGE)


async def read_usage(redis: Redis) -> Usage:
    """One instance's memory, limit, evictions and keys, in two round trips."""
    info = await redis.info("memory", "stats")
    return Usage(
        used_bytes=int(info["used_memory"]),
        max_bytes=int(info["maxmemory"]),
        evicted_keys=int(info["evicted_keys"]),
        keys=int(await redis.dbsize()),
    )


class RedisBudget:
    """Samples every instance of ``stores`` (by name) every ``every_s`` into the metrics."""

    def __init__(self, stores: Mapping[str, Redis], *, every_s: float = 15.0) -> None:
        self._stores = dict(stores)
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sample in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sample(self) -> None:
        """Read every instance once; one that fails is left out of the metrics until it answers."""
        for store, redis in self._stores.items():
            try:
                USAGE.samples[store] = await read_usage(redis)
            except RedisError as error:
                USAGE.samples.pop(store, None)
                log.debug("redis usage unreadable", extra={"store": store, "error": str(error)})

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self._every_s)
