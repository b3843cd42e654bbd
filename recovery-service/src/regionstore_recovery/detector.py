"""The failure detector's decisions: when a region goes down, and when it comes back.

Pure bookkeeping over what it is told (statuses read, probes, the services' reports) and two
clocks: a monotonic one for its own windows, so a wall clock stepped a day back cannot hold a
region down for a day, and the wall clock only to age what the status records date;
:mod:`regionstore_recovery.detection` does the I/O.

- **Down.** A region that is ``available`` goes ``down`` once ``failures`` failures (probes
  that failed, and the services' reports of writes, drains and reads that failed) fall within
  ``window_s`` **and** the latest probe failed: the detector's own look confirms what the
  services say, so one process with a broken connection cannot take a healthy region out.
- **Back.** A region that is ``down`` goes back to ``available`` after ``healthy_probes``
  healthy probes in a row spanning at least ``healthy_for_s``; any failure starts the count
  again. Recovery then drains what was parked.
- **Hysteresis.** After a change, the detector leaves the region alone for ``healthy_for_s``
  at least: a flapping store changes status at most once per that window (down, then back only
  once it stayed healthy that long).
- **The operator's word.** ``unavailable`` is an operator's and is never touched. An operator's
  ``available`` over a detected ``down`` (an override) is taken on trust: the detector does not
  mark that region down again until it has seen it healthy (the same count as coming back), so
  the failures the operator chose to override do not overrule them at once. An operator's
  ``available`` after maintenance is watched at once: a store still broken is flagged.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from regionstore_shared.status import RegionStatus, SetBy, StatusRecord


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a region goes down and when it comes back."""

    failures: int
    window_s: float
    healthy_probes: int
    healthy_for_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """A status the detector sets, and why (for the audit trail and the region list)."""

    status: RegionStatus
    reason: str


@dataclass(slots=True)
class _Watch:
    """What the detector knows of one region since its status last changed."""

    revision: int | None = None
    status: RegionStatus | None = None
    armed: bool = True
    """False after an operator's ``available`` over a detected ``down``, until the region was
    seen healthy."""
    changed_at: float = float("-inf")
    failures: deque[tuple[float, str]] = field(default_factory=deque)
    last_probe_error: str | None = None
    probed: bool = False
    healthy: int = 0
    healthy_since: float | None = None

    def fresh_start(self) -> None:
        self.failures.clear()
        self.healthy, self.healthy_since = 0, None

    def failed(self, at: float, source: str) -> None:
        self.failures.append((at, source))
        self.healthy, self.healthy_since = 0, None


class Detector:
    """Turns probes and reports into status decisions, one region at a time."""

    def __init__(
        self,
        thresholds: Thresholds,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._thresholds = thresholds
        self._clock = clock
        self._wall = wall
        self._watches: dict[str, _Watch] = {}

    def forget(self) -> None:
        """Forget everything, as a detector that just started (after losing its lease)."""
        self._watches.clear()

    def observe(self, region: str, record: StatusRecord) -> None:
        """Take the status just read; a change made by someone else starts afresh."""
        watch = self._watches.setdefault(region, _Watch())
        if watch.revision == record.revision:
            return
        watch.revision = record.revision
        watch.fresh_start()
        watch.armed = not self._overrides(watch.status, record)
        watch.status = record.status
        if record.set_by is SetBy.DETECTOR and record.since is not None:
            # Another detector's change (before this one held the lease) holds as its own.
            watch.changed_at = self._clock() - self._age_s(record.since.timestamp())
        else:
            watch.changed_at = float("-inf")

    def _overrides(self, previous: RegionStatus | None, record: StatusRecord) -> bool:
        """Whether ``record`` is an operator's ``available`` over a detected ``down``.

        A detector that did not see what came before (it just took the lease) takes a recent
        operator's ``available`` as one.
        """
        if record.set_by is not SetBy.OPERATOR or record.status is not RegionStatus.AVAILABLE:
            return False
        if previous is not None:
            return previous is RegionStatus.DOWN
        since = record.since.timestamp() if record.since is not None else float("-inf")
        return self._age_s(since) < self._thresholds.healthy_for_s

    def _age_s(self, since: float) -> float:
        """How long ago a status record's wall-clock ``since`` was, never less than nothing
        (a record dated ahead of this clock is taken as just made)."""
        return max(0.0, self._wall() - since)

    def probed(self, region: str, error: str | None) -> None:
        """The detector's probe of the region: ``error`` None when it answered in time."""
        watch = self._watches.setdefault(region, _Watch())
        watch.probed = True
        watch.last_probe_error = error
        now = self._clock()
        if error is not None:
            watch.failed(now, "probe")
            return
        watch.healthy += 1
        if watch.healthy_since is None:
            watch.healthy_since = now

    def reported(self, region: str, source: str) -> None:
        """A service saw the region fail (a write, a drain, a read)."""
        self._watches.setdefault(region, _Watch()).failed(self._clock(), source)

    def decide(self, region: str, record: StatusRecord) -> Decision | None:
        """The status to set now, if any."""
        watch = self._watches.setdefault(region, _Watch())
        now = self._clock()
        limits = self._thresholds
        while watch.failures and watch.failures[0][0] <= now - limits.window_s:
            watch.failures.popleft()
        if record.status is RegionStatus.UNAVAILABLE:
            return None
        if now - watch.changed_at < limits.healthy_for_s:
            return None
        healthy_for_s = now - watch.healthy_since if watch.healthy_since is not None else 0.0
        healthy = watch.healthy >= limits.healthy_probes and healthy_for_s >= limits.healthy_for_s
        if record.status is RegionStatus.DOWN:
            if not healthy:
                return None
            return Decision(
                RegionStatus.AVAILABLE,
                f"{watch.healthy} healthy probes in a row over {healthy_for_s:.0f} s",
            )
        if not watch.armed:
            watch.armed = healthy
            return None
        failing_now = watch.probed and watch.last_probe_error is not None
        if not failing_now or len(watch.failures) < limits.failures:
            return None
        return Decision(RegionStatus.DOWN, self._why_down(watch))

    def changed(self, region: str, decision: Decision) -> None:
        """The decision was stored (its revision is the one read plus one)."""
        watch = self._watches.setdefault(region, _Watch())
        watch.revision = (watch.revision or 0) + 1
        watch.status = decision.status
        watch.changed_at = self._clock()
        watch.armed = True
        watch.fresh_start()

    def _why_down(self, watch: _Watch) -> str:
        sources = Counter(source for _, source in watch.failures)
        seen = ", ".join(f"{source} {count}" for source, count in sorted(sources.items()))
        return (
            f"{len(watch.failures)} failures within {self._thresholds.window_s:.0f} s ({seen}); "
            f"probe: {watch.last_probe_error}"
        )
