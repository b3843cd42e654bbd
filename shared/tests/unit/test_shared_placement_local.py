"""Placement tables on disk: entries taken in offset order from the mark, kept across restarts,
and one process per directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from regionstore_shared.placement import PLACED_ADAPTER, UNKNOWN_ADAPTER, Placed
from regionstore_shared.placement_local import UNKNOWN_KEY, LocalTables, Mark, StateInUse

AT_1 = Placed(version=1, regions=("region_1",), left=())
AT_2 = Placed(version=2, regions=("region_2",), left=("region_1",))


def entry(placed: Placed) -> bytes:
    return PLACED_ADAPTER.dump_json(placed, exclude_defaults=True)


def test_records_are_taken_in_offset_order_and_the_mark_follows() -> None:
    local = LocalTables(None, group="g")
    local.take(
        0,
        [
            (0, b"c1", entry(AT_1)),
            (1, UNKNOWN_KEY, UNKNOWN_ADAPTER.dump_json(())),
            (2, b"c1", entry(AT_2)),
        ],
    )
    assert local.table(0).get("c1") == AT_2
    assert local.mark(0) == Mark(3, ())
    assert local.table(1).get("c1") is None
    local.close()


def test_records_below_the_mark_are_already_held_and_skipped() -> None:
    local = LocalTables(None, group="g")
    local.take(0, [(0, b"c1", entry(AT_1)), (1, b"c1", entry(AT_2))])
    local.take(0, [(0, b"c1", entry(AT_1))])  # a follower behind the mark
    assert local.table(0).get("c1") == AT_2
    assert local.mark(0).offset == 2
    local.close()


def test_a_commit_moves_the_mark_past_entries_a_follower_then_reads_again() -> None:
    local = LocalTables(None, group="g")
    local.table(0).update({"c1": AT_2})
    local.advance(0, 5, unknown=())
    local.take(0, [(4, b"c1", entry(AT_1))])
    assert local.table(0).get("c1") == AT_2
    assert local.mark(0) == Mark(5, ())
    local.close()


def test_an_unreadable_key_is_refused_and_nothing_of_its_batch_is_kept() -> None:
    local = LocalTables(None, group="g")
    with pytest.raises(RuntimeError, match="unreadable placement entry"):
        local.take(0, [(0, b"c1", entry(AT_1)), (1, b"\xff", entry(AT_1))])
    assert local.table(0).get("c1") is None
    assert local.mark(0) == Mark(0, None)
    local.close()


def test_an_unreadable_entry_is_refused_when_its_customer_is_routed() -> None:
    local = LocalTables(None, group="g")
    local.take(0, [(0, b"c1", b"{not json")])
    with pytest.raises(RuntimeError, match="unreadable placement entry b'c1'"):
        local.table(0).get("c1")
    local.close()


def test_tables_and_marks_outlive_the_process(tmp_path: Path) -> None:
    first = LocalTables(tmp_path, group="g")
    first.take(3, [(0, b"c1", entry(AT_1)), (1, UNKNOWN_KEY, UNKNOWN_ADAPTER.dump_json(()))])
    first.close()
    again = LocalTables(tmp_path, group="g")
    assert again.table(3).get("c1") == AT_1
    assert again.mark(3) == Mark(2, ())
    assert len(again.table(3)) == 1
    again.reset(3)
    assert again.mark(3) == Mark(0, None)
    assert len(again.table(3)) == 0
    again.close()


def test_a_directory_serves_one_process_of_a_group(tmp_path: Path) -> None:
    held = LocalTables(tmp_path, group="g")
    with pytest.raises(StateInUse, match="REGIONSTORE_STATE_DIR"):
        LocalTables(tmp_path, group="g")
    other_group = LocalTables(tmp_path, group="h")
    other_group.close()
    held.close()


def test_a_prefetched_batch_reads_as_one_customer_at_a_time_would() -> None:
    local = LocalTables(None, group="g")
    local.take(0, [(i, f"c{i}".encode(), entry(AT_1)) for i in range(1200)])
    table = local.table(0)
    table.prefetch([f"c{i}" for i in range(0, 1300, 3)] + ["c3"])
    assert table.get("c3") == AT_1
    assert table.get("c1299") is None  # asked, not there
    assert table.get("c4") == AT_1  # not asked: read on its own
    table.update({"c3": AT_2})
    assert table.get("c3") == AT_2  # an update is never hidden by what was prefetched
    local.close()
