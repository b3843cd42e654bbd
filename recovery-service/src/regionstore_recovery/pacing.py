"""How fast a drain replays a region's backlog: AIMD on its rate, driven by the region's latency.

A drain that replays as fast as the store takes it fills the store's queue, and the live
writes to the same region wait behind it. The drain measures its own store round trips: a
request slower than the target means the store is busy (with the live writes, the drain, or
both), so the rate is halved; a request within it adds a fixed step per second. Like TCP's
congestion window, the rate then saws just under what the store absorbs while keeping its
requests, and the live writes queued with them, near the target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field, model_validator


class PacingSettings(BaseModel):
    """The drain's pace (see regionstore_recovery.pacing); ``enabled=False`` drains flat out."""

    enabled: bool = True
    # A drain request (``store.write_chunk`` commands) slower than this halves the rate.
    # docs/parked-and-dead-letters.md has the measurement behind the default.
    target_latency_s: Annotated[float, Field(gt=0)] = 0.25
    # Commands per second: where a drain starts, and the bounds it moves within. The floor
    # keeps a backlog going down even while the store is slow for other reasons.
    initial_rate: Annotated[float, Field(gt=0)] = 1000.0
    min_rate: Annotated[float, Field(gt=0)] = 100.0
    max_rate: Annotated[float, Field(gt=0)] = 20_000.0
    # Added to the rate per second of requests within the target.
    increase_per_s: Annotated[float, Field(ge=0)] = 500.0
    decrease_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # Commands polled per batch while paced: one store request per batch, so the store never
    # holds a long run of drain requests that a live write queues behind.
    batch_records: Annotated[int, Field(ge=1, le=100_000)] = 250

    @model_validator(mode="after")
    def _bounds_in_order(self) -> PacingSettings:
        if not self.min_rate <= self.initial_rate <= self.max_rate:
            raise ValueError("pacing needs min_rate <= initial_rate <= max_rate")
        return self


class DrainPacer:
    """One drain's rate: told each batch's store time, it says how long to wait before the next.

    The rate is in commands per second. A batch of ``n`` commands is given ``n / rate``
    seconds from its start; the next batch starts after that, or at once if the batch itself
    took longer (no credit is saved up by a slow batch, so the pace never bursts).
    """

    def __init__(
        self,
        settings: PacingSettings,
        *,
        chunk: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._chunk = chunk
        self._clock = clock
        self._rate = settings.initial_rate
        self._started: float | None = None
        self._last_observed: float | None = None
        self._next_at: float | None = None

    @property
    def rate(self) -> float:
        """Commands per second the drain may replay now."""
        return self._rate

    def started(self) -> None:
        """A batch goes to the store now."""
        self._started = self._clock()

    def applied(self, count: int) -> float:
        """The batch started last, of ``count`` commands, is in the store; the wait before the
        next batch, in seconds."""
        now = self._clock()
        started = self._started if self._started is not None else now
        self._started = None
        requests = max(1, math.ceil(count / self._chunk))
        self._observe((now - started) / requests, now)
        begin = started if self._next_at is None else max(self._next_at, started)
        self._next_at = begin + count / self._rate
        return max(0.0, self._next_at - now)

    def _observe(self, request_s: float, now: float) -> None:
        settings = self._settings
        since = 0.0 if self._last_observed is None else now - self._last_observed
        self._last_observed = now
        if request_s > settings.target_latency_s:
            self._rate = max(settings.min_rate, self._rate * settings.decrease_factor)
            return
        # Per second, not per batch, so the climb does not speed up as batches come faster;
        # capped at a second so a drain back from a long idle does not leap.
        step = settings.increase_per_s * min(since, 1.0)
        self._rate = min(settings.max_rate, self._rate + step)
