"""The detector's loop: only the lease holder acts, every change is audited before it is made,
and a change someone else made meanwhile is not overwritten."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError

from regionstore_recovery.detection import DetectionLoop
from regionstore_recovery.detector import Detector, Thresholds
from regionstore_shared.audit_trail import AuditEvent, AuditUnavailableError
from regionstore_shared.status import RegionStatus, SetBy, StatusRecord, Transition

LIMITS = Thresholds(failures=2, window_s=10.0, healthy_probes=2, healthy_for_s=1.0)
REFUSED = "connection refused"
REGIONS = ("region_1", "region_2", "region_3")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeStatuses:
    def __init__(self) -> None:
        self.records = {r: StatusRecord(RegionStatus.AVAILABLE) for r in REGIONS}
        self.down = False
        self.refuse_with: Transition | None = None
        self.transitions: list[tuple[str, StatusRecord, RegionStatus, str, str]] = []
        self.log: list[str] = []

    async def read_records(self) -> dict[str, StatusRecord]:
        if self.down:
            raise RedisConnectionError("Error 111")
        return dict(self.records)

    async def transition(
        self,
        region: str,
        seen: StatusRecord,
        status: RegionStatus,
        reason: str,
        *,
        lease_key: str,
        lease_token: str,
    ) -> Transition:
        self.log.append(f"transition {region} {status}")
        self.transitions.append((region, seen, status, lease_key, lease_token))
        if self.refuse_with is not None:
            return self.refuse_with
        self.records[region] = StatusRecord(
            status, SetBy.DETECTOR, reason=reason, revision=seen.revision + 1
        )
        return Transition.DONE


class FakeReports:
    def __init__(self) -> None:
        self.pending: list[tuple[str, str]] = []
        self.forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1

    async def read(self) -> list[tuple[str, str]]:
        reports, self.pending = self.pending, []
        return reports


class FakeProbe:
    def __init__(self) -> None:
        self.errors: dict[str, str | None] = {}
        self.asked: list[list[str]] = []

    async def probe(self, regions: Iterable[str]) -> dict[str, str | None]:
        names = list(regions)
        self.asked.append(names)
        return {r: self.errors.get(r) for r in names}


class FakeLease:
    key = "regionstore:detector:lease"
    token = "t0ken"

    def __init__(self) -> None:
        self.held = True

    async def hold(self) -> bool:
        return self.held


class FakeTrail:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.events: list[AuditEvent] = []
        self.follow_ups: list[tuple[AuditEvent, str]] = []
        self.down = False

    async def record(self, event: AuditEvent) -> None:
        if self.down:
            raise AuditUnavailableError(event, RuntimeError("no broker"))
        self.log.append(f"audit {event.target} {event.detail['status']}")
        self.events.append(event)

    def follow_up(
        self, event: AuditEvent, outcome: Literal["failed", "unknown"], error: BaseException
    ) -> None:
        self.follow_ups.append((event, outcome))


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.statuses = FakeStatuses()
        self.reports = FakeReports()
        self.probe = FakeProbe()
        self.lease = FakeLease()
        self.trail = FakeTrail(self.statuses.log)
        self.loop = DetectionLoop(
            Detector(LIMITS, clock=self.clock),
            statuses=self.statuses,
            reports=self.reports,
            probe=self.probe,
            lease=self.lease,
            trail=self.trail,
        )

    async def rounds(self, count: int) -> None:
        for _ in range(count):
            self.clock.now += 1
            await self.loop.round()


async def test_a_failing_store_is_audited_then_marked_down() -> None:
    rig = Rig()
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(2)
    assert rig.statuses.records["region_2"].status is RegionStatus.DOWN
    assert rig.statuses.log == ["audit region_2 down", "transition region_2 down"]
    (event,) = rig.trail.events
    assert (event.key_id, event.role) == ("detector", "detector")
    assert REFUSED in str(event.detail["reason"])
    (region, seen, _, key, token) = rig.statuses.transitions[0]
    assert (region, seen.revision, key, token) == ("region_2", 0, FakeLease.key, FakeLease.token)


async def test_the_services_reports_are_counted_with_the_probes() -> None:
    rig = Rig()
    rig.reports.pending = [("region_3", "writer"), ("region_3", "gateway")]
    rig.probe.errors["region_3"] = REFUSED
    await rig.rounds(1)
    assert rig.statuses.records["region_3"].status is RegionStatus.DOWN
    assert "gateway 1, probe 1, writer 1" in str(rig.trail.events[0].detail["reason"])


async def test_it_comes_back_after_healthy_probes_and_is_audited() -> None:
    rig = Rig()
    rig.probe.errors["region_1"] = REFUSED
    await rig.rounds(2)
    rig.probe.errors["region_1"] = None
    await rig.rounds(3)
    assert rig.statuses.records["region_1"].status is RegionStatus.AVAILABLE
    assert [e.detail["status"] for e in rig.trail.events] == ["down", "available"]


async def test_without_the_lease_nothing_is_read_probed_or_changed() -> None:
    rig = Rig()
    rig.lease.held = False
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(5)
    assert rig.probe.asked == []
    assert rig.statuses.transitions == []
    assert rig.reports.forgotten == 5
    assert not rig.loop.leading


async def test_an_operators_unavailable_region_is_not_even_probed() -> None:
    rig = Rig()
    rig.statuses.records["region_2"] = StatusRecord(RegionStatus.UNAVAILABLE, SetBy.OPERATOR)
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(5)
    assert all("region_2" not in asked for asked in rig.probe.asked)
    assert rig.statuses.transitions == []


async def test_no_trail_no_change() -> None:
    rig = Rig()
    rig.trail.down = True
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(4)
    assert rig.statuses.transitions == []
    assert rig.statuses.records["region_2"].status is RegionStatus.AVAILABLE
    rig.trail.down = False
    await rig.rounds(1)
    assert rig.statuses.records["region_2"].status is RegionStatus.DOWN


async def test_a_change_made_meanwhile_is_not_overwritten_and_the_event_followed_up() -> None:
    rig = Rig()
    rig.statuses.refuse_with = Transition.CHANGED_MEANWHILE
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(2)
    assert rig.statuses.records["region_2"].status is RegionStatus.AVAILABLE
    ((event, outcome),) = rig.trail.follow_ups
    assert (event.target, outcome) == ("region_2", "failed")


async def test_redis_unreadable_skips_the_round() -> None:
    rig = Rig()
    rig.statuses.down = True
    rig.probe.errors["region_2"] = REFUSED
    await rig.rounds(3)
    assert rig.probe.asked == []
    assert rig.statuses.transitions == []
