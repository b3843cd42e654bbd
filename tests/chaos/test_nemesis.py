"""The nemesis's schedule and the fault table's arithmetic, without a stack."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.chaos.measure import measure, recovered_after
from tests.chaos.nemesis import (
    CLOCK_GATEWAY,
    CLOCK_REPLICATOR,
    CLOCK_WRITER,
    CONSUMERS,
    HOLD_S,
    KAFKA_SESSION_TIMEOUT_S,
    KINDS,
    REGIONS,
    Fault,
    Happened,
    Links,
    Nemesis,
    NemesisError,
    _toxics,
    kinds_of,
)
from tests.chaos.wipe import Repaired

PROCESSES = ["gateway", "writer", "replicator", "recovery", "kafka", "redis"]


def test_fault_kinds_come_from_a_comma_list_or_all() -> None:
    assert kinds_of("all") == KINDS
    assert kinds_of("1") == KINDS
    assert kinds_of("") == ("kill",)
    assert kinds_of("kill,pause") == ("pause", "kill")
    assert kinds_of("kill,wipe") == ("wipe", "kill")
    with pytest.raises(NemesisError, match="disco"):
        kinds_of("pause,disco")


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    def schedule(seed: int) -> list[Fault]:
        nemesis = Nemesis(seed, KINDS)
        nemesis.plan(PROCESSES, random_faults=12)
        return nemesis.steps

    assert schedule(29) == schedule(29)
    assert schedule(29) != schedule(30)


def test_every_process_is_killed_once_among_the_random_faults() -> None:
    nemesis = Nemesis(7, KINDS)
    nemesis.plan(PROCESSES, random_faults=20)
    kills = [f.target for f in nemesis.steps if f.kind == "kill"]
    assert sorted(kills) == sorted(PROCESSES)
    assert len(nemesis.steps) == len(PROCESSES) + 20 + 2
    kinds = {f.kind for f in nemesis.steps} - {"kill"}
    assert kinds <= {"partition", "pause", "clock", "disk", "wipe"}


def test_without_kill_nothing_is_killed_and_without_others_only_kills() -> None:
    calm = Nemesis(1, ("pause",))
    calm.plan(PROCESSES, random_faults=5)
    assert [f.kind for f in calm.steps] == ["pause"] * 5
    kills = Nemesis(1, ("kill",))
    kills.plan(PROCESSES, random_faults=5)
    assert [f.kind for f in kills.steps] == ["kill"] * len(PROCESSES)


def test_a_consumer_is_paused_past_its_kafka_session() -> None:
    nemesis = Nemesis(3, ("pause",))
    nemesis.plan(PROCESSES, random_faults=200)
    paused = [f for f in nemesis.steps if f.target in CONSUMERS]
    assert paused
    assert all(f.hold_s > KAFKA_SESSION_TIMEOUT_S for f in paused)


def test_a_one_way_cut_drops_the_answers_only_and_a_cut_both_ways() -> None:
    assert [t["stream"] for t in _toxics("cut_one_way")] == ["downstream"]
    assert sorted(t["stream"] for t in _toxics("cut")) == ["downstream", "upstream"]
    with pytest.raises(NemesisError):
        _toxics("flood")


def test_writes_recover_at_the_first_second_of_answers_all_accepted() -> None:
    writes = [(10.0, "unknown"), (10.5, "accepted"), (10.9, "unknown")]
    writes += [(11.2 + i / 10, "accepted") for i in range(20)]
    assert recovered_after(writes, healed=10.0) == 1.2
    assert recovered_after([(10.5, "unknown")], healed=10.0) is None


def test_a_fault_row_counts_the_answers_while_it_was_on() -> None:
    began = 100.0
    fault = Fault("partition", "kafka", "cut", 5.0)
    happened = [Happened(fault, began_s=1.0, healed_s=6.0, ready_s=6.5)]
    writes = [(began + 0.5, "accepted"), (began + 2, "unknown"), (began + 3, "refused")]
    writes += [(began + 7 + i / 10, "accepted") for i in range(15)]
    reads = [(began + 2, "ok"), (began + 3, "degraded"), (began + 4, "failed"), (began + 9, "ok")]
    [row] = measure(happened, writes, reads, began)
    assert (row.accepted, row.refused, row.unknown) == (0, 1, 1)
    assert (row.reads_ok, row.reads_degraded, row.reads_failed) == (1, 1, 1)
    assert row.reads_available == pytest.approx(2 / 3)
    assert row.recover_s == 1.0
    assert row.label == "link kafka: cut"


def test_a_round_wipes_one_region_at_most_and_only_when_asked() -> None:
    regions = set()
    for seed in range(40):
        nemesis = Nemesis(seed, KINDS)
        nemesis.plan(PROCESSES, random_faults=10)
        wipes = [f for f in nemesis.steps if f.kind == "wipe"]
        assert len(wipes) == 1
        regions.add(wipes[0].target)
        without = Nemesis(seed, tuple(k for k in KINDS if k != "wipe"))
        without.plan(PROCESSES, random_faults=10)
        assert all(f.kind != "wipe" for f in without.steps)
    assert regions == set(REGIONS)


def test_the_wipe_comes_anywhere_among_the_other_faults_and_leaves_them_as_they_were() -> None:
    # A seed replayed from before the wipe existed still gives that round's other faults.
    positions = set()
    for seed in range(40):
        wiping = Nemesis(seed, tuple(k for k in KINDS if k != "disk"))
        wiping.plan(PROCESSES, random_faults=6)
        before = Nemesis(seed, tuple(k for k in KINDS if k not in ("disk", "wipe")))
        before.plan(PROCESSES, random_faults=6)
        assert [f for f in wiping.steps if f.kind != "wipe"] == before.steps
        positions.add(next(n for n, f in enumerate(wiping.steps) if f.kind == "wipe"))
    assert min(positions) == 0
    assert max(positions) == len(PROCESSES) + 6


def test_a_round_fills_one_disk_and_leaves_the_other_faults_as_they_were() -> None:
    # A seed replayed from before the disk fault existed still gives that round's other faults.
    regions, positions = set(), set()
    for seed in range(40):
        filling = Nemesis(seed, KINDS)
        filling.plan(PROCESSES, random_faults=6)
        [full] = [f for f in filling.steps if f.kind == "disk"]
        assert full.label == f"disk full {full.target}"
        assert HOLD_S[0] <= full.hold_s <= HOLD_S[1]
        regions.add(full.target)
        positions.add(filling.steps.index(full))
        before = Nemesis(seed, tuple(k for k in KINDS if k != "disk"))
        before.plan(PROCESSES, random_faults=6)
        assert [f for f in filling.steps if f.kind != "disk"] == before.steps
    assert regions == set(REGIONS)
    assert min(positions) == 0
    assert max(positions) == len(PROCESSES) + 6 + 1


def test_wipe_alone_is_one_wipe_whatever_the_random_faults() -> None:
    nemesis = Nemesis(5, ("wipe",))
    nemesis.plan(PROCESSES, random_faults=10)
    [only] = nemesis.steps
    assert only.kind == "wipe"
    assert only.label == f"wipe {only.target}"


def test_clock_steps_reach_the_consumers_as_well_as_the_gateway() -> None:
    nemesis = Nemesis(11, ("clock",))
    nemesis.plan(PROCESSES, random_faults=40)
    targets = {f.target for f in nemesis.steps}
    assert targets == {CLOCK_GATEWAY, CLOCK_WRITER, CLOCK_REPLICATOR}
    # The gateway's rows keep their old label; the writer's say whose clock stepped.
    assert Fault("clock", CLOCK_GATEWAY, "+10").label == "clock step +10"
    assert Fault("clock", CLOCK_WRITER, "+10").label == "clock step +10 (writer-clock)"
    assert Fault("clock", CLOCK_REPLICATOR, "-1d").label == "clock step -1d (replicator-clock)"


async def test_a_clock_step_needs_the_process_to_run_with_a_clock_file() -> None:
    nemesis = Nemesis(1, ("clock",))
    with pytest.raises(NemesisError, match=CLOCK_WRITER):
        await nemesis._step_clock(Fault("clock", CLOCK_WRITER, "+1d", 0.0))


async def test_a_clock_step_goes_back_to_the_true_time_afterwards(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    nemesis = Nemesis(1, ("clock",), clock_files={CLOCK_WRITER: clock})
    note = await nemesis._step_clock(Fault("clock", CLOCK_WRITER, "-1d", 0.0))
    assert clock.read_text() == "+0\n"
    assert note == f"{CLOCK_WRITER} -1d for 0.0s, then back"


def test_a_repair_is_whole_only_when_it_exited_0_and_said_so() -> None:
    report = {"found": {"region_2": {"missing": 12}}, "republished": 12, "whole": True}
    assert Repaired("region_2", 0, report, 1.0).whole
    assert not Repaired("region_2", 1, report, 1.0).whole
    assert not Repaired("region_2", 0, {**report, "whole": False}, 1.0).whole
    note = Repaired("region_2", 0, report, 1.0).note
    assert "found missing 12" in note
    assert "republished 12" in note


def _toxiproxy(seen: list[str]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={})

    return httpx.AsyncClient(base_url="http://toxiproxy", transport=httpx.MockTransport(answer))


async def test_a_round_without_partitions_leaves_toxiproxy_alone() -> None:
    seen: list[str] = []
    async with Links(_toxiproxy(seen)):
        pass
    assert seen == []


async def test_a_round_that_faulted_a_link_heals_every_link_at_its_end() -> None:
    seen: list[str] = []
    async with Links(_toxiproxy(seen)) as links:
        await links.fault("kafka", "down")
    assert seen == ["POST /proxies/kafka", "POST /reset"]
