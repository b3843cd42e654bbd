"""The failure detector's decisions: hysteresis, flapping, and the operator's word."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from regionstore_recovery.detector import Decision, Detector, Thresholds
from regionstore_shared.status import RegionStatus, SetBy, StatusRecord

AVAILABLE, UNAVAILABLE, DOWN = RegionStatus.AVAILABLE, RegionStatus.UNAVAILABLE, RegionStatus.DOWN
LIMITS = Thresholds(failures=3, window_s=10.0, healthy_probes=5, healthy_for_s=5.0)
REGION = "region_2"
REFUSED = "ServerSelectionTimeoutError: connection refused"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Region:
    """One region as the detection loop drives it: a status in Redis, one round a second."""

    def __init__(self, record: StatusRecord | None = None) -> None:
        self.clock = Clock()
        # The host's wall clock: the status records' dates; NTP or an operator may step it.
        self.wall = Clock()
        self.detector = Detector(LIMITS, clock=self.clock, wall=self.wall)
        self.record = record or StatusRecord(AVAILABLE)
        self.changes: list[tuple[float, Decision]] = []

    def round(self, probe: str | None, *, reports: int = 0, advance_s: float = 1.0) -> None:
        """One round: the status read, the reports since the last one, one probe; then the
        decision, stored as the loop would (the revision bumped)."""
        self.clock.now += advance_s
        self.wall.now += advance_s
        self.detector.observe(REGION, self.record)
        for _ in range(reports):
            self.detector.reported(REGION, "writer")
        self.detector.probed(REGION, probe)
        decision = self.detector.decide(REGION, self.record)
        if decision is None:
            return
        self.changes.append((self.clock.now, decision))
        self.record = StatusRecord(
            decision.status,
            SetBy.DETECTOR,
            since=datetime.fromtimestamp(self.wall.now, UTC),
            reason=decision.reason,
            revision=self.record.revision + 1,
        )
        self.detector.changed(REGION, decision)

    def operator(self, status: RegionStatus) -> None:
        """An operator sets the status between two rounds."""
        self.record = StatusRecord(
            status,
            SetBy.OPERATOR,
            key_id="k1",
            since=datetime.fromtimestamp(self.wall.now, UTC),
            revision=self.record.revision + 1,
        )

    def rounds(
        self, count: int, probe: str | None, *, reports: int = 0, advance_s: float = 1.0
    ) -> None:
        for _ in range(count):
            self.round(probe, reports=reports, advance_s=advance_s)

    @property
    def status(self) -> RegionStatus:
        return self.record.status


class TestDown:
    def test_after_n_failed_probes_within_the_window(self) -> None:
        region = Region()
        region.rounds(2, REFUSED)
        assert region.status is AVAILABLE
        region.round(REFUSED)
        assert region.status is DOWN
        (_, decision), *_ = region.changes
        assert "3 failures within 10 s" in decision.reason
        assert REFUSED in decision.reason

    def test_failures_spread_wider_than_the_window_do_not_count_together(self) -> None:
        region = Region()
        for _ in range(5):
            region.round(REFUSED, advance_s=6.0)
        assert region.status is AVAILABLE

    def test_the_services_reports_count_but_only_a_failing_probe_confirms_them(self) -> None:
        region = Region()
        region.round(None, reports=5)
        assert region.status is AVAILABLE  # the store answers the detector: one process's view
        region.round(REFUSED, reports=1)
        assert region.status is DOWN
        assert "writer 6" in region.changes[0][1].reason

    def test_a_healthy_probe_in_between_does_not_clear_the_failures(self) -> None:
        region = Region()
        region.round(REFUSED)
        region.round(REFUSED)
        region.round(None)
        region.round(REFUSED)
        assert region.status is DOWN


class TestBack:
    def test_after_m_healthy_probes_over_at_least_t_seconds(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        went_down = region.clock.now
        region.rounds(5, None)  # five probes, but only four seconds from the first
        assert region.status is DOWN
        region.round(None)
        assert region.status is AVAILABLE
        assert region.clock.now - went_down >= LIMITS.healthy_for_s
        assert "healthy probes in a row" in region.changes[-1][1].reason

    def test_many_quick_healthy_probes_are_not_enough_before_t(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.rounds(40, None, advance_s=0.1)
        assert region.status is DOWN

    def test_one_failure_starts_the_count_again(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.rounds(5, None)
        region.round(REFUSED)
        region.rounds(5, None)
        assert region.status is DOWN
        region.round(None)
        assert region.status is AVAILABLE


class TestFlapping:
    def test_a_store_up_and_down_every_two_seconds_goes_down_once_and_back_once(self) -> None:
        region = Region()
        for second in range(60):
            region.round(REFUSED if (second // 2) % 2 else None)
        assert [d.status for _, d in region.changes] == [DOWN]
        region.rounds(7, None)
        assert [d.status for _, d in region.changes] == [DOWN, AVAILABLE]

    @pytest.mark.parametrize("period", [1, 2, 3, 5, 8, 13])
    def test_changes_are_at_least_the_hysteresis_window_apart(self, period: int) -> None:
        region = Region()
        for second in range(120):
            region.round(REFUSED if (second // period) % 2 else None, reports=second % 2)
        times = [at for at, _ in region.changes]
        assert all(b - a >= LIMITS.healthy_for_s for a, b in itertools.pairwise(times))

    def test_a_store_that_fails_again_just_after_coming_back_is_held_available_t(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.rounds(6, None)
        back = region.clock.now
        assert region.status is AVAILABLE
        region.rounds(3, REFUSED)
        assert region.status is AVAILABLE  # within the window: held
        region.rounds(2, REFUSED)
        assert region.status is DOWN
        assert region.clock.now - back >= LIMITS.healthy_for_s


class TestOperator:
    def test_an_operators_unavailable_is_never_undone(self) -> None:
        region = Region()
        region.operator(UNAVAILABLE)
        region.rounds(30, None)
        region.rounds(30, REFUSED)
        assert region.status is UNAVAILABLE
        assert region.changes == []

    def test_a_detected_down_overridden_stays_available_while_the_store_still_fails(
        self,
    ) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.operator(AVAILABLE)
        region.rounds(60, REFUSED, reports=2)
        assert region.status is AVAILABLE
        assert [d.status for _, d in region.changes] == [DOWN]

    def test_detection_is_armed_again_once_the_overridden_region_was_healthy(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.operator(AVAILABLE)
        region.rounds(6, None)
        region.rounds(3, REFUSED)
        assert region.status is DOWN
        assert [d.status for _, d in region.changes] == [DOWN, DOWN]

    def test_a_detected_down_an_operator_makes_unavailable_is_theirs(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.operator(UNAVAILABLE)
        region.rounds(30, None)
        assert region.status is UNAVAILABLE

    def test_an_operators_available_after_maintenance_is_watched_at_once(self) -> None:
        region = Region()
        region.operator(UNAVAILABLE)
        region.rounds(5, REFUSED)
        region.operator(AVAILABLE)
        region.rounds(3, REFUSED)
        assert region.status is DOWN

    def test_an_operator_reaffirming_available_changes_nothing(self) -> None:
        region = Region()
        region.rounds(10, None)
        region.operator(AVAILABLE)
        region.rounds(3, REFUSED)
        assert region.status is DOWN


class TestLeadership:
    def test_a_new_leader_keeps_the_last_changes_hold(self) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        region.rounds(6, None)
        assert region.status is AVAILABLE
        region.detector.forget()  # the lease moved to a process that knows nothing of it
        region.rounds(3, REFUSED)
        assert region.status is AVAILABLE  # the change it reads is under 5 s old: held
        region.rounds(2, REFUSED)
        assert region.status is DOWN

    def test_a_new_leader_trusts_a_recent_operators_available(self) -> None:
        region = Region()
        region.operator(AVAILABLE)  # maybe over a down this process never saw
        region.rounds(4, REFUSED)
        assert region.status is AVAILABLE
        region.rounds(6, None)
        region.rounds(3, REFUSED)
        assert region.status is DOWN

    def test_a_new_leader_watches_an_old_operators_available(self) -> None:
        region = Region()
        region.operator(AVAILABLE)
        region.clock.now += 60
        region.wall.now += 60
        region.rounds(3, REFUSED)
        assert region.status is DOWN

    def test_a_status_nobody_set_is_watched_from_the_start(self) -> None:
        region = Region(StatusRecord(AVAILABLE, set_by=None))
        region.rounds(3, REFUSED)
        assert region.status is DOWN


class TestWallClockSteps:
    """The wall clock stepped under the detector (NTP, an operator, a clock fault) moves no
    window: they run on the monotonic clock."""

    @pytest.mark.parametrize("step_s", [-86_400.0, 86_400.0])
    def test_a_down_region_comes_back_after_the_hysteresis_whatever_the_step(
        self, step_s: float
    ) -> None:
        region = Region()
        region.rounds(3, REFUSED)
        assert region.status is DOWN
        went_down = region.clock.now
        region.wall.now += step_s
        region.rounds(6, None)
        assert region.status is AVAILABLE
        assert region.clock.now - went_down == pytest.approx(6.0)

    def test_a_new_leader_whose_wall_clock_is_a_day_behind_holds_the_change_only_as_long(
        self,
    ) -> None:
        region = Region()
        region.rounds(3, REFUSED)  # down, dated by the leader before
        region.detector.forget()
        region.wall.now -= 86_400  # the new leader's wall clock: the record is a day ahead of it
        region.rounds(5, None)
        assert region.status is DOWN  # the change's hold, then five healthy probes over 5 s
        region.rounds(1, None)
        assert region.status is AVAILABLE
