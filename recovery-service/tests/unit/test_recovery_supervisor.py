"""The drain supervisor: one drainer per available region, none for the others."""

from __future__ import annotations

import asyncio
import logging

import pytest

from regionstore_recovery.supervisor import DrainSupervisor
from regionstore_shared.status import NodeStatus

AVAILABLE, UNAVAILABLE = NodeStatus.AVAILABLE, NodeStatus.UNAVAILABLE
# A readiness bound only: every wait ends as soon as the drains have done what is awaited.
BOUND_S = 5


def statuses(**by_region: NodeStatus) -> dict[str, NodeStatus]:
    return {"region_1": AVAILABLE, "region_2": AVAILABLE, "region_3": AVAILABLE} | by_region


class Drain:
    """One drain run: started, asked to stop, and let go by the test when it holds on."""

    def __init__(self, region: str, stop: asyncio.Event) -> None:
        self.region = region
        self.stop = stop
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.release = asyncio.Event()


class Drains:
    """The drain factory: records every run; a run ends when stopped (and released, if held)."""

    def __init__(self) -> None:
        self.runs: list[Drain] = []
        self.hold = False
        self.fail_next: Exception | None = None
        self.running: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}

    async def __call__(self, region: str, stop: asyncio.Event) -> None:
        run = Drain(region, stop)
        self.runs.append(run)
        self.running[region] = self.running.get(region, 0) + 1
        self.most_at_once[region] = max(self.most_at_once.get(region, 0), self.running[region])
        run.started.set()
        try:
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            await stop.wait()
            if self.hold:
                await run.release.wait()
        finally:
            self.running[region] -= 1
            run.finished.set()

    def of(self, region: str) -> list[Drain]:
        return [run for run in self.runs if run.region == region]


@pytest.fixture
def drains() -> Drains:
    return Drains()


@pytest.fixture
async def supervisor(drains: Drains) -> DrainSupervisor:
    return DrainSupervisor(drains)


async def started(*runs: Drain) -> None:
    for run in runs:
        await asyncio.wait_for(run.started.wait(), BOUND_S)


async def finished(*runs: Drain) -> None:
    for run in runs:
        await asyncio.wait_for(run.finished.wait(), BOUND_S)


async def settle() -> None:
    """Let every task that can run do so (a drain that would start, starts)."""
    for _ in range(5):
        await asyncio.sleep(0)


class TestReconcile:
    async def test_every_available_region_gets_a_drain(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        supervisor.reconcile(statuses(region_2=UNAVAILABLE))
        await settle()
        assert sorted(run.region for run in drains.runs) == ["region_1", "region_3"]
        assert supervisor.draining == ["region_1", "region_3"]
        await supervisor.stop_all()

    async def test_a_flip_to_available_starts_a_drain_of_that_region(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        supervisor.reconcile(statuses(region_2=UNAVAILABLE))
        await settle()
        assert drains.of("region_2") == []
        supervisor.reconcile(statuses())
        await settle()
        (run,) = drains.of("region_2")
        await started(run)
        assert not run.stop.is_set()
        assert "region_2" in supervisor.draining
        await supervisor.stop_all()

    async def test_a_flip_to_unavailable_stops_that_drain_only(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        supervisor.reconcile(statuses())
        await settle()
        supervisor.reconcile(statuses(region_1=UNAVAILABLE))
        await settle()
        (stopped,) = drains.of("region_1")
        await finished(stopped)
        assert supervisor.draining == ["region_2", "region_3"]
        assert not any(run.stop.is_set() for run in drains.of("region_2") + drains.of("region_3"))
        await supervisor.stop_all()

    async def test_the_same_statuses_again_start_nothing_more(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        for _ in range(3):
            supervisor.reconcile(statuses(region_3=UNAVAILABLE))
            await settle()
        assert sorted(run.region for run in drains.runs) == ["region_1", "region_2"]
        await supervisor.stop_all()

    async def test_a_region_it_is_not_told_about_is_left_as_it_is(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        supervisor.reconcile({"region_1": AVAILABLE})
        await settle()
        supervisor.reconcile({"region_2": UNAVAILABLE})
        await settle()
        (run,) = drains.runs
        assert not run.stop.is_set()
        await supervisor.stop_all()


class TestOneDrainPerRegion:
    async def test_a_region_back_before_its_drain_finished_waits_for_it(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        drains.hold = True
        supervisor.reconcile(statuses())
        await settle()
        (first,) = drains.of("region_1")
        supervisor.reconcile(statuses(region_1=UNAVAILABLE))
        await settle()
        supervisor.reconcile(statuses())  # back while the first one still finishes its batch
        await settle()
        assert drains.of("region_1") == [first]  # the second waits
        first.release.set()
        await finished(first)
        await settle()
        first_again, second = drains.of("region_1")
        assert first_again is first
        await started(second)
        assert not second.stop.is_set()
        assert drains.most_at_once["region_1"] == 1
        second.release.set()
        for run in drains.of("region_2") + drains.of("region_3"):
            run.release.set()
        await supervisor.stop_all()

    async def test_flapping_never_runs_two_drains_of_a_region_at_once(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        drains.hold = True
        for _ in range(4):
            supervisor.reconcile(statuses())
            await settle()
            supervisor.reconcile(statuses(region_1=UNAVAILABLE))
            await settle()
        supervisor.reconcile(statuses())
        for _ in range(10):
            for run in drains.runs:
                if run.stop.is_set():
                    run.release.set()
            await settle()
        assert drains.most_at_once["region_1"] == 1
        live = [run for run in drains.of("region_1") if not run.finished.is_set()]
        assert len(live) == 1
        assert not live[0].stop.is_set()
        for run in drains.runs:
            run.release.set()
        await supervisor.stop_all()


class TestFailures:
    async def test_a_failed_drain_is_logged_and_started_again_at_the_next_reconcile(
        self, supervisor: DrainSupervisor, drains: Drains, caplog: pytest.LogCaptureFixture
    ) -> None:
        drains.fail_next = RuntimeError("consumer could not join its group")
        supervisor.reconcile({"region_1": AVAILABLE})
        await settle()
        (failed,) = drains.runs
        await finished(failed)
        await settle()
        assert supervisor.draining == []
        with caplog.at_level(logging.ERROR, logger="regionstore_recovery.supervisor"):
            supervisor.reconcile({"region_1": AVAILABLE})
        await settle()
        failed_again, retry = drains.of("region_1")
        assert failed_again is failed
        await started(retry)
        assert supervisor.draining == ["region_1"]
        (line,) = [r for r in caplog.records if r.getMessage() == "drainer failed; restarting"]
        assert line.__dict__["region"] == "region_1"
        assert "consumer could not join its group" in line.__dict__["error"]
        await supervisor.stop_all()

    async def test_a_failed_drain_of_a_region_now_down_is_not_started_again(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        drains.fail_next = RuntimeError("boom")
        supervisor.reconcile({"region_1": AVAILABLE})
        await settle()
        await finished(drains.runs[0])
        await settle()
        supervisor.reconcile({"region_1": UNAVAILABLE})
        await settle()
        assert len(drains.runs) == 1
        assert supervisor.draining == []


class TestStopAll:
    async def test_stops_every_drain_and_waits_for_each(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        drains.hold = True
        supervisor.reconcile(statuses())
        await settle()
        stopping = asyncio.create_task(supervisor.stop_all())
        await settle()
        assert all(run.stop.is_set() for run in drains.runs)
        assert not stopping.done()  # the drains still finish their batches
        for run in drains.runs:
            run.release.set()
        await asyncio.wait_for(stopping, BOUND_S)
        assert all(run.finished.is_set() for run in drains.runs)
        assert supervisor.draining == []

    async def test_a_failed_drain_does_not_fail_the_stop(
        self, supervisor: DrainSupervisor, drains: Drains
    ) -> None:
        drains.fail_next = RuntimeError("boom")
        supervisor.reconcile({"region_1": AVAILABLE})
        await settle()
        await finished(drains.runs[0])
        await supervisor.stop_all()
        assert supervisor.draining == []
