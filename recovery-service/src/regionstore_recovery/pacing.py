"""How fast a drain replays a region's backlog: AIMD on its rate, driven by the region's delay.

A drain that replays as fast as the store takes it competes with the live writes to the same
region for the store (and, on a small machine, for the CPU). The drain is background work, so
it yields, as LEDBAT does for background transfers: while each batch is written, a point read
of the region times the store as a live write meets it then. The least time seen over the last
minute is the store's base; what a read takes above it is delay the region's load adds. As
LEDBAT does, the delay is taken from the least of the last few reads, so one slow read (a
scheduler hiccup on a busy host) is not taken for a queue. Delay above the target halves the
rate; delay within it adds a fixed step per second. The rate then
saws just under what the region absorbs with live writes kept near their usual latency. Until
the first delay over the target, the rate doubles each second instead (TCP's slow start): a
drain with nothing to yield to reaches its maximum within seconds, where a fixed step from the
start took a short backlog's whole drain to climb (docs/parked-and-dead-letters.md).

Measuring delay over a base, not the time itself, keeps the target the same on a fast store
and a slow one: a busy two-core machine answers a point read in tens of milliseconds even
when nothing drains.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field, model_validator


class PacingSettings(BaseModel):
    """The drain's pace (see regionstore_recovery.pacing); ``enabled=False`` drains flat out."""

    enabled: bool = True
    # Store delay (a point read's time above the region's base) that halves the rate.
    # docs/parked-and-dead-letters.md has the measurements behind the defaults.
    target_delay_s: Annotated[float, Field(gt=0)] = 0.1
    # The base is the least point-read time over this long, so it follows a store that
    # became slower for good (a bigger data set, a busier host) within this time.
    base_window_s: Annotated[float, Field(gt=0)] = 60.0
    # The delay is the least of this many latest reads over the base.
    filter_samples: Annotated[int, Field(ge=1, le=100)] = 3
    # A point read with no answer in this long counts as this long.
    probe_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Commands per second: where a drain starts, and the bounds it moves within. The floor
    # keeps a backlog going down even while the region is busy for other reasons.
    initial_rate: Annotated[float, Field(gt=0)] = 1000.0
    min_rate: Annotated[float, Field(gt=0)] = 500.0
    max_rate: Annotated[float, Field(gt=0)] = 20_000.0
    # Until the first delay over the target, the rate doubles per second of batches within it.
    slow_start: bool = True
    # Added to the rate per second of batches within the target, after the first delay over it.
    increase_per_s: Annotated[float, Field(ge=0)] = 500.0
    decrease_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # Commands polled per batch while paced (one store request at the default write_chunk),
    # so the rate is adjusted often and a live write never queues behind a long batch.
    batch_records: Annotated[int, Field(ge=1, le=100_000)] = 250

    @model_validator(mode="after")
    def _bounds_in_order(self) -> PacingSettings:
        if not self.min_rate <= self.initial_rate <= self.max_rate:
            raise ValueError("pacing needs min_rate <= initial_rate <= max_rate")
        return self


class WindowMin:
    """The least value added within the last ``window_s`` seconds (a monotonic queue)."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._queue: deque[tuple[float, float]] = deque()

    def add(self, at: float, value: float) -> float:
        """Add ``value`` seen at ``at``; return the least value of the window ending then."""
        while self._queue and self._queue[-1][1] >= value:
            self._queue.pop()
        self._queue.append((at, value))
        while self._queue[0][0] < at - self._window_s:
            self._queue.popleft()
        return self._queue[0][1]


class DrainPacer:
    """One drain's rate: told each batch's store delay, it says how long to wait before the next.

    The rate is in commands per second. A batch of ``n`` commands is given ``n / rate``
    seconds from its start; the next batch starts after that, or at once if the batch itself
    took longer (no credit is saved up by a slow batch, so the pace never bursts).
    """

    def __init__(self, settings: PacingSettings, *, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._rate = settings.initial_rate
        self._slow_start = settings.slow_start
        self._base = WindowMin(settings.base_window_s)
        self._latest: deque[float] = deque(maxlen=settings.filter_samples)
        self._started: float | None = None
        self._last_observed: float | None = None
        self._next_at: float | None = None
        self.delay_s = 0.0

    @property
    def rate(self) -> float:
        """Commands per second the drain may replay now."""
        return self._rate

    def started(self) -> None:
        """A batch goes to the store now."""
        self._started = self._clock()

    def applied(self, count: int, probe_s: float) -> float:
        """The batch started last, of ``count`` commands, is in the store, and a point read
        made meanwhile took ``probe_s``; the wait before the next batch, in seconds."""
        now = self._clock()
        started = self._started if self._started is not None else now
        self._started = None
        self._observe(probe_s, now)
        begin = started if self._next_at is None else max(self._next_at, started)
        self._next_at = begin + count / self._rate
        return max(0.0, self._next_at - now)

    def _observe(self, probe_s: float, now: float) -> None:
        settings = self._settings
        self._latest.append(probe_s)
        self.delay_s = min(self._latest) - self._base.add(now, probe_s)
        since = 0.0 if self._last_observed is None else now - self._last_observed
        self._last_observed = now
        if self.delay_s > settings.target_delay_s:
            self._slow_start = False
            self._rate = max(settings.min_rate, self._rate * settings.decrease_factor)
            return
        # Per second, not per batch, so the climb does not speed up as batches come faster;
        # capped at a second so a drain back from a long idle does not leap.
        seconds = min(since, 1.0)
        if self._slow_start:
            climbed = self._rate * 2.0**seconds
        else:
            climbed = self._rate + settings.increase_per_s * seconds
        self._rate = min(settings.max_rate, climbed)
