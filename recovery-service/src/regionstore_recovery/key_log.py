"""Destroyed customer keys leave the keys' Redis files within the erasure bound.

A key deleted from Redis is gone from memory at once, but its ``SET`` stays in the append-only
file until the file is rewritten, which Redis does on its own only when the file has grown (by
size, not by time), and in the last RDB snapshot until the next one. Recovery asks for both, a
rewrite and a snapshot, every quarter of the bound, so a destroyed key is in no Redis file after
the bound, whatever the ``save`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class KeyLogRewrites:
    """Asks the keys' Redis to rewrite its append-only file and its snapshot every ``every_s``
    seconds."""

    def __init__(self, redis: Redis, every_s: float) -> None:
        self._redis = redis
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._run(), name="key-log-rewrites")

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def rewrite(self) -> bool:
        """One rewrite and one snapshot asked for; False when Redis refused (one already
        running is as good). The snapshot waits for the rewrite (``SCHEDULE``)."""
        try:
            await self._redis.bgrewriteaof()
            await self._redis.bgsave(schedule=True)
        except RedisError as error:
            if "already in progress" in str(error):
                return True
            log.warning("keys' Redis files not rewritten", extra={"error": str(error)})
            return False
        log.info("keys' Redis files rewrite asked for", extra={"every_s": self._every_s})
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.rewrite()
