"""The nemesis's schedule and the fault table's arithmetic, without a stack."""

from __future__ import annotations

import pytest

from tests.chaos.measure import measure, recovered_after
from tests.chaos.nemesis import (
    CONSUMERS,
    KAFKA_SESSION_TIMEOUT_S,
    KINDS,
    Fault,
    Happened,
    Nemesis,
    NemesisError,
    _toxics,
    kinds_of,
)

PROCESSES = ["gateway", "writer", "replicator", "recovery", "kafka", "redis"]


def test_fault_kinds_come_from_a_comma_list_or_all() -> None:
    assert kinds_of("all") == KINDS
    assert kinds_of("1") == KINDS
    assert kinds_of("") == ("kill",)
    assert kinds_of("kill,pause") == ("pause", "kill")
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
    assert len(nemesis.steps) == len(PROCESSES) + 20
    assert {f.kind for f in nemesis.steps} - {"kill"} <= {"partition", "pause", "clock"}


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
