"""Recovery's drain as progress: each region's parked backlog against the largest one seen."""

from __future__ import annotations

from dataclasses import dataclass, field

from regionstore_tools.gateway import RegionList


@dataclass(frozen=True, slots=True)
class Backlog:
    """One region's backlog at one reading."""

    region: str
    status: str
    pending: int | None
    """None: the gateway could not read it."""
    peak: int
    """The largest backlog seen since the watch began: the bar's total."""

    @property
    def replayed(self) -> int:
        """How much of the peak has been replayed (or, unknown, none)."""
        return self.peak - self.pending if self.pending is not None else 0

    @property
    def drained(self) -> bool:
        return self.pending == 0


@dataclass
class DrainWatch:
    """Successive readings of the region list, turned into backlogs with their peaks."""

    peaks: dict[str, int] = field(default_factory=dict)

    def read(self, answer: RegionList) -> list[Backlog]:
        """The backlogs of this reading; a backlog that grows raises its region's peak."""
        backlogs = []
        for region in answer.regions:
            peak = max(self.peaks.get(region.name, 0), region.pending or 0)
            self.peaks[region.name] = peak
            backlogs.append(Backlog(region.name, region.status, region.pending, peak))
        return backlogs

    @staticmethod
    def done(backlogs: list[Backlog]) -> bool:
        """Every region's backlog is known and empty."""
        return all(backlog.drained for backlog in backlogs)
