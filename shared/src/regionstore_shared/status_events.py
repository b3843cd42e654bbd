"""Status changes heard from Redis keyspace events, fanned out to everyone waiting on them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared.status import NodeStatus, StatusBoard

log = logging.getLogger(__name__)


class StatusChanges:
    """Wakes waiters whenever a region's status key changes, and after every (re)connect.

    Each wake-up follows a fresh read of the board, so a waiter that then asks the board gets
    the statuses Redis holds now, including changes made while this process was cut off.
    """

    def __init__(self, redis: Redis, board: StatusBoard, *, retry_s: float = 1.0) -> None:
        self._redis = redis
        self._board = board
        self._retry_s = retry_s
        self._changed = asyncio.Condition()
        self._generation = 0
        self._current = False
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> bool:
        """Whether the board holds what Redis holds, as far as the events tell: subscribed,
        read since, and no event heard since the last read."""
        return self._current

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
                    # Anything may have changed while we were not listening. Reading here also
                    # refreshes the board's last known statuses, which it may still be
                    # answering from after an outage, before any waiter looks at them.
                    await self._board.read()
                    self._current = True
                    await self._bump()
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            self._current = False
                            await self._board.read()
                            self._current = True
                            await self._bump()
            except (RedisError, OSError) as error:
                self._current = False
                log.warning("status listener reconnecting", extra={"error": str(error)})
                await asyncio.sleep(self._retry_s)
            finally:
                self._current = False


class WatchedStatuses:
    """The statuses an applier acts on, read from Redis only when the events may have missed
    a change: the consumers' status source.

    Reading every status once per batch was a Redis round trip per write for the writer and
    the replicator at low rates, where each write is a batch of its own. While ``changes``
    listens, every change to a status key is heard and read within milliseconds, as a batch
    that read Redis just before the change would have acted on the old status too; the
    statuses are also read again whenever the last read is ``max_age_s`` old, so a missed
    event (a Redis without keyspace notifications) costs at most that long. While the
    listener is not subscribed, every call reads Redis, as the board does (the last statuses
    read while Redis cannot be).
    """

    def __init__(
        self,
        board: StatusBoard,
        changes: StatusChanges,
        *,
        max_age_s: float = 1.0,
    ) -> None:
        self._board = board
        self._changes = changes
        self._max_age_s = max_age_s

    async def all(self) -> dict[str, NodeStatus]:
        """Every region's status (the applier's ``StatusSource``)."""
        if self._changes.current and self._board.read_within(self._max_age_s):
            return self._board.last_known
        return await self._board.all()
