"""The hybrid logical clock: versions never repeat and never go backwards."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from regionstore_shared.clock import (
    COUNTER_BITS,
    MAX_NODE_ID,
    NODE_BITS,
    VERSION_STEP,
    HybridClock,
    version_millis,
)

WALL_MS = 1_700_000_000_000


def frozen(ms: int = WALL_MS) -> Callable[[], int]:
    return lambda: ms


def scripted(*readings: int) -> Callable[[], int]:
    values = iter(readings)
    return lambda: next(values)


def strictly_increasing(versions: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(versions))


class TestNow:
    def test_follows_the_wall_clock(self) -> None:
        clock = HybridClock(3, wall_ms=frozen())
        assert version_millis(clock.now()) == WALL_MS

    def test_strictly_increasing_under_a_frozen_wall_clock(self) -> None:
        clock = HybridClock(0, wall_ms=frozen())
        versions = [clock.now() for _ in range(1000)]
        assert strictly_increasing(versions)
        assert {version_millis(v) for v in versions} == {WALL_MS}

    def test_strictly_increasing_across_counter_overflow(self) -> None:
        clock = HybridClock(0, wall_ms=frozen())
        versions = [clock.now() for _ in range((1 << COUNTER_BITS) + 2)]
        assert strictly_increasing(versions)
        # 65536 versions fit in one millisecond; the next borrows the following one.
        assert version_millis(versions[(1 << COUNTER_BITS) - 1]) == WALL_MS
        assert version_millis(versions[1 << COUNTER_BITS]) == WALL_MS + 1

    def test_strictly_increasing_when_the_wall_clock_goes_backwards(self) -> None:
        clock = HybridClock(0, wall_ms=scripted(WALL_MS, WALL_MS - 5000, WALL_MS - 1, WALL_MS))
        versions = [clock.now() for _ in range(4)]
        assert strictly_increasing(versions)
        assert {version_millis(v) for v in versions} == {WALL_MS}

    def test_a_later_wall_clock_resets_the_counter(self) -> None:
        clock = HybridClock(0, wall_ms=scripted(WALL_MS, WALL_MS, WALL_MS + 1))
        clock.now()
        clock.now()
        version = clock.now()
        assert version == (WALL_MS + 1) << (COUNTER_BITS + NODE_BITS)

    def test_node_id_is_in_the_low_bits(self) -> None:
        clock = HybridClock(MAX_NODE_ID, wall_ms=frozen())
        assert all(clock.now() & MAX_NODE_ID == MAX_NODE_ID for _ in range(10))

    def test_two_nodes_with_the_same_wall_time_never_collide(self) -> None:
        first = HybridClock(1, wall_ms=frozen())
        second = HybridClock(2, wall_ms=frozen())
        ours = {first.now() for _ in range(500)}
        theirs = {second.now() for _ in range(500)}
        assert len(ours) == len(theirs) == 500
        assert ours.isdisjoint(theirs)

    def test_the_real_wall_clock_is_the_default(self) -> None:
        import time

        before = time.time_ns() // 1_000_000
        version = HybridClock(0).now()
        after = time.time_ns() // 1_000_000
        assert before <= version_millis(version) <= after

    def test_versions_fit_a_signed_64_bit_integer(self) -> None:
        assert HybridClock(MAX_NODE_ID, wall_ms=frozen()).now() < 2**63


class TestReserve:
    def test_a_reserved_run_is_what_now_would_have_issued_one_by_one(self) -> None:
        reserving = HybridClock(5, wall_ms=frozen())
        one_by_one = HybridClock(5, wall_ms=frozen())
        reserving.now()
        one_by_one.now()
        first = reserving.reserve(1000)
        assert [first + i * VERSION_STEP for i in range(1000)] == [
            one_by_one.now() for _ in range(1000)
        ]
        assert reserving.now() == one_by_one.now()

    def test_a_run_across_a_counter_overflow_carries_into_the_next_millisecond(self) -> None:
        clock = HybridClock(7, wall_ms=frozen())
        first = clock.reserve((1 << COUNTER_BITS) + 10)
        run = [first + i * VERSION_STEP for i in range((1 << COUNTER_BITS) + 10)]
        assert strictly_increasing(run)
        assert {v & MAX_NODE_ID for v in run} == {7}
        assert version_millis(run[-1]) == WALL_MS + 1
        assert clock.now() > run[-1]

    def test_every_later_version_is_above_the_whole_run(self) -> None:
        clock = HybridClock(0, wall_ms=scripted(WALL_MS, WALL_MS - 10, WALL_MS + 1))
        first = clock.reserve(500)
        last = first + 499 * VERSION_STEP
        assert clock.now() > last
        assert clock.now() > last

    def test_an_observed_version_stays_below_the_next_run(self) -> None:
        clock = HybridClock(1, wall_ms=frozen())
        seen = HybridClock(9, wall_ms=frozen(WALL_MS + 60_000)).now()
        clock.observe(seen)
        assert clock.reserve(3) > seen


class TestObserve:
    def test_the_next_version_is_higher_than_an_observed_future_one(self) -> None:
        clock = HybridClock(1, wall_ms=frozen())
        other = HybridClock(9, wall_ms=frozen(WALL_MS + 60_000))
        seen = other.now()
        clock.observe(seen)
        assert clock.now() > seen

    def test_a_version_from_a_clock_a_day_ahead_is_not_followed(self) -> None:
        clock = HybridClock(1, wall_ms=frozen())
        wrong = HybridClock(9, wall_ms=frozen(WALL_MS + 86_400_000)).now()
        clock.observe(wrong)
        assert version_millis(clock.now()) == WALL_MS

    def test_observing_the_same_millisecond_and_counter_from_a_higher_node(self) -> None:
        clock = HybridClock(1, wall_ms=frozen())
        other = HybridClock(MAX_NODE_ID, wall_ms=frozen())
        clock.now()
        seen = other.now()  # same ms and counter, higher node id
        clock.observe(seen)
        assert clock.now() > seen

    def test_observing_at_a_full_counter_moves_to_the_next_millisecond(self) -> None:
        clock = HybridClock(0, wall_ms=frozen())
        full = (
            (WALL_MS << (COUNTER_BITS + NODE_BITS)) | (((1 << COUNTER_BITS) - 1) << NODE_BITS) | 5
        )
        clock.observe(full)
        version = clock.now()
        assert version > full
        assert version_millis(version) == WALL_MS + 1

    def test_observing_an_older_version_changes_nothing(self) -> None:
        ahead = HybridClock(0, wall_ms=frozen())
        control = HybridClock(0, wall_ms=frozen())
        ahead.now()
        control.now()
        ahead.observe(1 << (COUNTER_BITS + NODE_BITS))
        assert ahead.now() == control.now()


class TestVersionMillis:
    def test_recovers_the_millisecond(self) -> None:
        version = (WALL_MS << (COUNTER_BITS + NODE_BITS)) | (123 << NODE_BITS) | 7
        assert version_millis(version) == WALL_MS

    def test_counter_and_node_do_not_leak_into_the_millisecond(self) -> None:
        assert version_millis((1 << (COUNTER_BITS + NODE_BITS)) - 1) == 0


class TestNodeId:
    @pytest.mark.parametrize("node_id", [-1, MAX_NODE_ID + 1, 1000])
    def test_out_of_range_node_ids_are_rejected(self, node_id: int) -> None:
        with pytest.raises(ValueError, match=f"node_id must be 0..63, got {node_id}"):
            HybridClock(node_id)

    @pytest.mark.parametrize("node_id", [0, MAX_NODE_ID])
    def test_edge_node_ids_are_accepted(self, node_id: int) -> None:
        assert HybridClock(node_id, wall_ms=frozen()).now() & MAX_NODE_ID == node_id
