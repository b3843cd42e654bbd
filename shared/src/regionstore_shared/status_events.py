"""Status changes heard from Redis keyspace events, fanned out to everyone waiting on them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared.status import StatusBoard

log = logging.getLogger(__name__)


class StatusChanges:
    """Wakes waiters whenever a region's status key changes."""

    def __init__(self, redis: Redis, board: StatusBoard) -> None:
        self._redis = redis
        self._board = board
        self._changed = asyncio.Condition()
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def generation(self) -> int:
        """Bumped on every change; a waiter compares it to what it last saw."""
        return self._generation

    def start(self) -> None:
        """Listen in the background."""
        self._task = asyncio.create_task(self._listen(), name="status-changes")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, seen: int, within_s: float) -> int:
        """Return the generation once it moves past ``seen``, or after ``within_s`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(lambda: self._generation != seen)
        return self._generation

    async def _bump(self) -> None:
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    async def _listen(self) -> None:
        patterns = [f"__keyspace@*__:{self._board.key(r)}" for r in self._board.regions]
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.psubscribe(*patterns)
                    await self._bump()  # anything may have changed while we were not listening
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            await self._bump()
            except RedisError as error:
                log.warning("status listener reconnecting", extra={"error": str(error)})
                await asyncio.sleep(1)
