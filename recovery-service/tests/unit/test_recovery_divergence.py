"""One customer's copies against its newest copy: what diverges, and how."""

from __future__ import annotations

from regionstore_recovery.digests import Copy
from regionstore_recovery.divergence import Kind, findings, newest_copy
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap

REGIONS = RegionMap(DEFAULT_REGIONS)


def live(version: int, home: str = "region_2") -> Copy:
    return Copy("a1", version, deleted=False, home=home)


def tombstone(version: int, home: str | None = None) -> Copy:
    return Copy("a1", version, deleted=True, home=home)


def found(**copies: Copy) -> list[tuple[str, Kind]]:
    return [(f.region, f.kind) for f in findings(copies, REGIONS)]


class TestNewestCopy:
    def test_the_highest_version_wins(self) -> None:
        assert newest_copy({"region_1": live(4), "region_2": live(5)})[0] == "region_2"

    def test_a_live_copy_beats_a_tombstone_of_the_same_version(self) -> None:
        where, copy = newest_copy({"region_1": tombstone(5, "region_2"), "region_2": live(5)})
        assert (where, copy.deleted) == ("region_2", False)

    def test_the_home_copy_beats_a_replicas_of_the_same_version(self) -> None:
        assert newest_copy({"region_1": live(5), "region_2": live(5)})[0] == "region_2"


class TestFindings:
    def test_a_whole_placement_and_nothing_else_is_fine(self) -> None:
        assert found(region_2=live(5), region_1=live(5), region_3=tombstone(5, "region_2")) == []

    def test_a_region_of_the_placement_holding_nothing_is_missing(self) -> None:
        assert found(region_1=live(5)) == [("region_2", Kind.MISSING)]

    def test_an_older_tombstone_in_the_placement_is_missing(self) -> None:
        assert found(region_2=live(5), region_1=tombstone(3)) == [("region_1", Kind.MISSING)]

    def test_an_older_live_copy_in_the_placement_is_older(self) -> None:
        assert found(region_2=live(5), region_1=live(4)) == [("region_1", Kind.OLDER)]

    def test_a_live_copy_outside_the_placement_is_outside(self) -> None:
        assert found(region_2=live(5), region_1=live(5), region_3=live(2, "region_3")) == [
            ("region_3", Kind.OUTSIDE)
        ]

    def test_live_copies_older_than_a_delete_are_deleted(self) -> None:
        assert found(region_2=live(5), region_1=live(5), region_3=tombstone(8)) == [
            ("region_2", Kind.DELETED),
            ("region_1", Kind.DELETED),
        ]

    def test_a_delete_everywhere_is_fine(self) -> None:
        assert found(region_2=tombstone(8), region_1=tombstone(8)) == []

    def test_a_move_left_only_as_tombstones_is_lost(self) -> None:
        # The move's live copies (region_3's placement) are gone; its tombstone is newest.
        assert found(region_1=tombstone(9, "region_3"), region_2=live(5)) == [
            ("region_1", Kind.LOST)
        ]
