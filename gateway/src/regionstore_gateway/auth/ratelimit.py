"""Per-key rate limits with a burst, kept in this gateway process.

The generic cell rate algorithm (GCRA), a token bucket kept as one number per key: the time
at which the key's bucket would be full again. A key may send ``burst`` requests at once
and ``rate`` per second after that; a refused request costs nothing.

Written here rather than taken from a library: ``limits`` offers fixed, moving and sliding
windows (no rate with a separate burst), ``aiolimiter`` makes a caller wait instead of
refusing it and does not say how long to wait, and ``pyrate-limiter`` keeps a timestamp per
request (2,000 per key at the default burst) where this keeps one float.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """Admits or refuses each request of a key against that key's rate and burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Per key id: the theoretical arrival time of the next request (GCRA's TAT).
        self._tat: dict[str, float] = {}

    def admit(self, key_id: str, rate: float, burst: int) -> float:
        """0 if the request is admitted, else the seconds until one would be."""
        now = self._clock()
        interval = 1.0 / rate
        tat = max(self._tat.get(key_id, now), now) + interval
        wait = tat - now - burst * interval
        # Sums of 1/rate drift by a few ulps; a nanosecond is not worth a refusal.
        if wait > 1e-9:
            return wait
        self._tat[key_id] = tat
        return 0.0


def retry_after(wait_s: float) -> int:
    """A Retry-After value for a wait: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
