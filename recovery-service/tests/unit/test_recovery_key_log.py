"""The keys' Redis files are rewritten on request: a log rewrite, then a snapshot."""

from __future__ import annotations

from typing import Any, cast

from redis.exceptions import ResponseError

from regionstore_recovery.key_log import KeyLogRewrites


class FakeRedis:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self._error = error

    async def bgrewriteaof(self) -> bool:
        self.calls.append("bgrewriteaof")
        if self._error is not None:
            raise self._error
        return True

    async def bgsave(self, schedule: bool = True) -> bool:
        self.calls.append(f"bgsave schedule={schedule}")
        return True


class TestRewrite:
    async def test_the_log_is_rewritten_then_a_snapshot_is_scheduled(self) -> None:
        redis = FakeRedis()
        assert await KeyLogRewrites(cast(Any, redis), 60).rewrite()
        assert redis.calls == ["bgrewriteaof", "bgsave schedule=True"]

    async def test_a_rewrite_already_running_is_as_good(self) -> None:
        busy = ResponseError("Background append only file rewriting already in progress")
        assert await KeyLogRewrites(cast(Any, FakeRedis(busy)), 60).rewrite()

    async def test_a_refusal_is_reported(self) -> None:
        refused = ResponseError("NOPERM this user has no permissions")
        assert not await KeyLogRewrites(cast(Any, FakeRedis(refused)), 60).rewrite()
