"""Clock node ids leased from Redis, so gateway processes started alike never share one.

With ``REGIONSTORE_NODE_ID=auto`` each gateway process takes a free id of the 64 as a Redis
lock that expires unless renewed. A process that restarts gets a
free id again, never the one a live process holds. A process that cannot renew its lease in
time stops issuing versions (its writes are refused, nothing is published) until it holds an
id again, because after the lease expires another process may take the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from regionstore_shared.clock import MAX_NODE_ID, HybridClock

log = logging.getLogger(__name__)

NODE_ID_HELD = Gauge(
    "regionstore_node_id_held",
    "1 while this gateway holds a clock node id (a configured one always does, a leased one"
    " while its lease is valid), 0 while it holds none and refuses writes.",
)
# A configured node id is held for good; a lease replaces this with its own reading.
NODE_ID_HELD.set(1)
LEASE_LAPSES = Counter(
    "regionstore_node_id_lease_lapses_total",
    "Times this gateway's clock node id lease lapsed (not renewed in time, or found taken):"
    " writes are refused until it holds an id again.",
)


class NoNodeIdError(Exception):
    """No clock node id is held: none was free, or the lease could not be renewed in time."""


class NodeIdLease:
    """Holds one clock node id in Redis and renews it until :meth:`close`."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock: Lock | None = None
        self._node_id: int | None = None
        self._valid_until = 0.0
        self._held = False
        self._task: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> int:
        """The id held now; raises :class:`NoNodeIdError` once the lease may have expired."""
        if self._node_id is None or self._clock() >= self._valid_until:
            self._note_lapse()
            raise NoNodeIdError("this gateway holds no clock node id now (Redis lease)")
        return self._node_id

    def holds(self) -> bool:
        """Whether an id is held now (counts a lapse not noticed yet)."""
        if self._node_id is None or self._clock() >= self._valid_until:
            self._note_lapse()
            return False
        return True

    def _note_lapse(self) -> None:
        """Count a lapse once, when a held lease is first seen lost or expired."""
        if self._held:
            self._held = False
            LEASE_LAPSES.inc()
            log.warning("clock node id lease lapsed", extra={"node_id": self._node_id})

    async def acquire(self) -> int:
        """Take a free id; raises :class:`NoNodeIdError` when all 64 are held."""
        # A random start, so processes starting together do not all race for id 0.
        first = random.randrange(MAX_NODE_ID + 1)
        for step in range(MAX_NODE_ID + 1):
            node_id = (first + step) % (MAX_NODE_ID + 1)
            lock = self._redis.lock(f"{self._prefix}{node_id}", timeout=self._ttl_s, blocking=False)
            started = self._clock()
            if await lock.acquire():
                self._lock, self._node_id = lock, node_id
                self._valid_until = started + self._ttl_s
                self._held = True
                log.info("clock node id leased", extra={"node_id": node_id})
                return node_id
        raise NoNodeIdError(f"all {MAX_NODE_ID + 1} clock node ids are leased")

    def start(self) -> None:
        """Renew the lease in the background, a third of its lifetime apart, and report in
        ``regionstore_node_id_held`` whether it is held."""
        NODE_ID_HELD.set_function(lambda: float(self.holds()))
        self._task = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop renewing and give the id back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lock is not None:
            with contextlib.suppress(LockError, RedisError):
                await self._lock.release()
        self._lock = self._node_id = None
        self._held = False

    async def renew(self) -> None:
        """Extend the lease, or take a new id if it was lost; raises RedisError on outage."""
        if self._lock is not None:
            started = self._clock()
            self.holds()
            try:
                await self._lock.reacquire()
            except LockError:
                log.warning("clock node id lease lost", extra={"node_id": self._node_id})
                self._note_lapse()
                self._lock = self._node_id = None
            else:
                self._valid_until = started + self._ttl_s
                self._held = True
                return
        await self.acquire()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            try:
                await self.renew()
            except (RedisError, NoNodeIdError) as error:
                log.warning("clock node id lease not renewed", extra={"error": str(error)})
                self.holds()


class LeasedClock(HybridClock):
    """A hybrid clock whose node id is the one the lease holds at each call."""

    def __init__(self, lease: NodeIdLease) -> None:
        super().__init__(lease.node_id)
        self._lease = lease

    def reserve(self, count: int) -> int:
        """As :meth:`HybridClock.reserve` (and so ``now``); raises :class:`NoNodeIdError`
        while no id is held."""
        self._node = self._lease.node_id
        return super().reserve(count)
