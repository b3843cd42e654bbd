"""Hybrid logical clock: versions that follow wall time, never repeat and never go backwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

NODE_BITS = 6
COUNTER_BITS = 16
MAX_NODE_ID = (1 << NODE_BITS) - 1
_COUNTER_MAX = (1 << COUNTER_BITS) - 1
OBSERVED_AHEAD_MS = 60_000
"""How far ahead of this clock an observed version may be and still be followed."""
VERSION_STEP = 1 << NODE_BITS
"""From one version of a clock to the next it issues in the same millisecond."""


def version_millis(version: int) -> int:
    """The wall-clock milliseconds a version was issued at."""
    return version >> (COUNTER_BITS + NODE_BITS)


class HybridClock:
    """Issues versions ``ms << 22 | counter << 6 | node``.

    The node id in the low bits keeps two gateways from ever issuing the same version, so every
    pair of versions is ordered and the version guard in the stores has no ties to break.
    """

    def __init__(self, node_id: int, wall_ms: Callable[[], int] | None = None) -> None:
        if not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node_id must be 0..{MAX_NODE_ID}, got {node_id}")
        self._node = node_id
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def node_id(self) -> int:
        """The node id in the low bits of the versions issued now."""
        return self._node

    def now(self) -> int:
        """A version strictly greater than every version this clock issued or observed."""
        return self.reserve(1)

    def reserve(self, count: int) -> int:
        """The first of ``count`` versions issued at once, ``first + i * VERSION_STEP``.

        Each is strictly greater than every version this clock issued or observed before, and
        every version it issues later is greater than all of them. So a batch's versions can
        be made again from the first alone (a counter that overflows carries into the
        milliseconds, as :meth:`now` does).
        """
        with self._lock:
            wall = self._wall_ms()
            if wall > self._ms:
                self._ms, self._counter = wall, 0
            elif self._counter < _COUNTER_MAX:
                self._counter += 1
            else:
                self._ms, self._counter = self._ms + 1, 0
            first = (
                (self._ms << (COUNTER_BITS + NODE_BITS)) | (self._counter << NODE_BITS) | self._node
            )
            if count > 1:
                last = first + (count - 1) * VERSION_STEP
                self._ms, self._counter = version_millis(last), (last >> NODE_BITS) & _COUNTER_MAX
            return first

    def observe(self, version: int) -> None:
        """Move past a version seen elsewhere, so the next one issued here is higher.

        A version more than ``OBSERVED_AHEAD_MS`` ahead of this clock's wall time is ignored:
        it comes from a clock that is wrong, and following it would carry that error to every
        gateway that reads its writes. Ordering does not depend on it: the consumers apply
        each write above the customer's newest (:mod:`regionstore_shared.placement`).
        """
        ms = version_millis(version)
        counter = (version >> NODE_BITS) & _COUNTER_MAX
        if ms > self._wall_ms() + OBSERVED_AHEAD_MS:
            return
        with self._lock:
            if (ms, counter) > (self._ms, self._counter):
                self._ms, self._counter = ms, counter
