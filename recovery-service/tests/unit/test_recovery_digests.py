"""Bucket digests: a bucket is compared copy by copy only when its regions disagree."""

from __future__ import annotations

from regionstore_recovery.digests import (
    Copy,
    Summary,
    bucket_differs,
    bucket_of,
    differing_groups,
    groups_differ,
    merged,
    share_of,
    summarize,
    summary_pipeline,
    summary_rows,
)
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap

REGIONS = RegionMap(DEFAULT_REGIONS)
# region_2's customers live in region_2 and region_1 (its replica).


def live(customer_id: str, version: int, home: str = "region_2") -> Copy:
    return Copy(customer_id, version, deleted=False, home=home)


def tombstone(customer_id: str, version: int, home: str | None = None) -> Copy:
    return Copy(customer_id, version, deleted=True, home=home)


def differs(**copies: list[Copy]) -> bool:
    return bucket_differs({r: share_of(c) for r, c in copies.items()}, REGIONS)


class TestBucketOf:
    def test_is_the_id_prefix(self) -> None:
        assert bucket_of("0abcdef", 3) == "0ab"

    def test_a_short_id_is_its_own_bucket(self) -> None:
        assert bucket_of("ab", 3) == "ab"


class TestBucketDiffers:
    def test_a_home_and_its_replica_holding_the_same_versions_agree(self) -> None:
        copies = [live("a1", 5), live("a2", 7)]
        assert not differs(region_2=copies, region_1=list(copies))

    def test_an_older_replica_differs(self) -> None:
        assert differs(region_2=[live("a1", 5)], region_1=[live("a1", 4)])

    def test_a_region_missing_a_customer_differs(self) -> None:
        assert differs(region_2=[live("a1", 5), live("a2", 6)], region_1=[live("a1", 5)])

    def test_a_wiped_region_differs(self) -> None:
        assert differs(region_1=[live("a1", 5)])

    def test_a_live_copy_outside_the_placement_differs(self) -> None:
        copies = [live("a1", 5)]
        assert differs(region_2=copies, region_1=list(copies), region_3=list(copies))

    def test_a_move_leaves_tombstones_at_the_same_version_and_agrees(self) -> None:
        # Moved from region_2's placement to region_3's (region_3 and region_2): region_1
        # holds the tombstone at the move's version.
        moved = live("a1", 9, home="region_3")
        assert not differs(
            region_3=[moved], region_2=[moved], region_1=[tombstone("a1", 9, "region_3")]
        )

    def test_live_copies_that_agree_but_are_older_than_a_delete_differ(self) -> None:
        # A delete whose tombstones region_2 and region_1 both lost (restored from backups):
        # their digests agree, region_3's tombstone is newer.
        old = [live("a1", 5)]
        assert differs(region_2=old, region_1=list(old), region_3=[tombstone("a1", 8)])

    def test_a_home_the_map_does_not_know_differs(self) -> None:
        copies = [live("a1", 5, home="region_9")]
        assert differs(region_2=copies, region_1=list(copies))

    def test_only_tombstones_agree(self) -> None:
        assert not differs(region_1=[tombstone("a1", 3)], region_3=[])


class TestMerged:
    def test_gathers_each_customers_copies_by_region(self) -> None:
        customers = merged(
            {"region_1": [live("a1", 5)], "region_2": [live("a1", 6), live("a2", 1)]}
        )
        assert set(customers) == {"a1", "a2"}
        assert {r: c.version for r, c in customers["a1"].items()} == {"region_1": 5, "region_2": 6}
        assert set(customers["a2"]) == {"region_2"}


class TestSummaries:
    def summed(self, **copies: list[Copy]) -> dict[str, dict[str | None, Summary]]:
        return {r: summarize(c, 3).get("a00", {}) for r, c in copies.items()}

    def test_a_home_and_its_replica_with_the_same_versions_sum_alike(self) -> None:
        copies = [live("a001", 5), live("a002", 7), tombstone("a003", 9)]
        assert not groups_differ(self.summed(region_2=copies, region_1=list(copies)), REGIONS)

    def test_an_older_copy_sums_differently(self) -> None:
        summed = self.summed(region_2=[live("a001", 5)], region_1=[live("a001", 4)])
        assert groups_differ(summed, REGIONS)

    def test_a_live_copy_outside_the_placement_differs(self) -> None:
        copies = [live("a001", 5)]
        summed = self.summed(region_2=copies, region_1=copies, region_3=copies)
        assert groups_differ(summed, REGIONS)

    def test_only_the_groups_that_differ_are_named(self) -> None:
        own_1 = [live("a001", 5, home="region_1")]
        own_2 = [live("a002", 5)]
        # region_2 wiped: its group differs, region_1's (region_1 and region_3) agrees.
        summed = self.summed(region_1=own_1 + own_2, region_3=own_1)
        assert differing_groups(summed, REGIONS) == frozenset({"region_2"})
        assert differing_groups(self.summed(region_1=own_1, region_3=own_1), REGIONS) == set()

    def test_a_group_no_home_names_makes_every_group_suspect(self) -> None:
        summed = self.summed(region_1=[live("a001", 5, home="region_9")])
        assert differing_groups(summed, REGIONS) is None
        assert groups_differ(summed, REGIONS)

    def test_the_stores_rows_read_as_summaries(self) -> None:
        rows = [
            {"_id": {"b": "a00", "h": "region_2"}, "n": 2, "s1": 12, "s2": 12, "m": 7},
            {"_id": {"b": "a00"}, "n": 1, "s1": 3, "s2": 3, "m": 3.0},
        ]
        assert summary_rows(rows) == {"a00": {"region_2": (2, 12, 12, 7), None: (1, 3, 3, 3)}}

    def test_rows_computed_in_memory_match_the_pipelines_grouping(self) -> None:
        pipeline = summary_pipeline(3, {"_id": {"$gte": "a", "$lt": "b"}})
        assert pipeline[0]["$match"] == {"_id": {"$gte": "a", "$lt": "b"}, "_deleted": False}
        assert summarize([live("a001", 5), live("a002", 7)], 3) == {
            "a00": {"region_2": (2, 12, 12, 7)}
        }
