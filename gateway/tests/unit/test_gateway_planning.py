"""Which regions a write reaches: the new placement, plus tombstones where the customer was."""

from __future__ import annotations

import pytest

from regionstore_gateway.planning import delete_targets, upsert_targets
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec, ZipOutOfRangeError
from regionstore_shared.schemas import Action, Role, Target

REGIONS = RegionMap(DEFAULT_REGIONS)


def target(region: str, role: Role, action: Action) -> Target:
    return Target(region=region, role=role, action=action)


def summary(targets: tuple[Target, ...]) -> list[tuple[str, str, str]]:
    return [(t.region, t.role.value, t.action.value) for t in targets]


class TestUpsertTargets:
    @pytest.mark.parametrize(
        ("zip_prefix", "home", "replica"),
        [
            (1000, "region_1", "region_3"),
            (40000, "region_2", "region_1"),
            (99999, "region_3", "region_2"),
        ],
    )
    def test_new_customer_goes_to_home_and_replica(
        self, zip_prefix: int, home: str, replica: str
    ) -> None:
        assert upsert_targets(REGIONS, zip_prefix) == (
            target(home, Role.HOME, Action.UPSERT),
            target(replica, Role.REPLICA, Action.UPSERT),
        )

    def test_staying_in_the_same_region_tombstones_nothing(self) -> None:
        targets = upsert_targets(REGIONS, 14409, REGIONS.placement_of_home("region_1"))
        assert all(t.action is Action.UPSERT for t in targets)
        assert len(targets) == 2

    def test_move_from_region_1_to_region_2_tombstones_region_3_only(self) -> None:
        targets = upsert_targets(REGIONS, 50000, REGIONS.placement_of_home("region_1"))
        assert summary(targets) == [
            ("region_2", "home", "upsert"),
            ("region_1", "replica", "upsert"),  # region_1 is the new replica of region_2
            ("region_3", "replica", "tombstone"),
        ]

    def test_move_from_region_3_to_region_1(self) -> None:
        targets = upsert_targets(REGIONS, 2000, REGIONS.placement_of_home("region_3"))
        assert summary(targets) == [
            ("region_1", "home", "upsert"),
            ("region_3", "replica", "upsert"),
            ("region_2", "replica", "tombstone"),
        ]

    @pytest.mark.parametrize(
        ("zip_prefix", "tombstoned"),
        [(1000, "region_2"), (40000, "region_3"), (70000, "region_1")],
    )
    def test_unknown_previous_placement_tombstones_every_other_region(
        self, zip_prefix: int, tombstoned: str
    ) -> None:
        targets = upsert_targets(REGIONS, zip_prefix, REGIONS.names)
        assert [t.region for t in targets if t.action is Action.TOMBSTONE] == [tombstoned]
        assert {t.region for t in targets} == set(REGIONS.names)

    def test_each_region_is_targeted_once(self) -> None:
        targets = upsert_targets(REGIONS, 50000, ["region_1", "region_3", "region_3"])
        regions = [t.region for t in targets]
        assert len(regions) == len(set(regions))

    def test_four_regions_with_two_replicas(self) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="a", zip_min=0, zip_max=24999, replicas=("b", "c")),
                RegionSpec(name="b", zip_min=25000, zip_max=49999, replicas=("c", "d")),
                RegionSpec(name="c", zip_min=50000, zip_max=74999, replicas=("d", "a")),
                RegionSpec(name="d", zip_min=75000, zip_max=99999, replicas=("a", "b")),
            ]
        )
        targets = upsert_targets(regions, 80000, regions.placement_of_home("a"))
        assert summary(targets) == [
            ("d", "home", "upsert"),
            ("a", "replica", "upsert"),
            ("b", "replica", "upsert"),
            ("c", "replica", "tombstone"),
        ]

    def test_out_of_range_zip_is_rejected(self) -> None:
        with pytest.raises(ZipOutOfRangeError):
            upsert_targets(REGIONS, 999)


class TestDeleteTargets:
    @pytest.mark.parametrize(
        ("home", "replica"),
        [("region_1", "region_3"), ("region_2", "region_1"), ("region_3", "region_2")],
    )
    def test_known_home_tombstones_its_placement(self, home: str, replica: str) -> None:
        assert delete_targets(REGIONS, home) == (
            target(home, Role.HOME, Action.TOMBSTONE),
            target(replica, Role.REPLICA, Action.TOMBSTONE),
        )

    @pytest.mark.parametrize("home", [None, "region_9"])
    def test_unknown_home_tombstones_every_region(self, home: str | None) -> None:
        targets = delete_targets(REGIONS, home)
        assert [t.region for t in targets] == ["region_1", "region_2", "region_3"]
        assert all(t.action is Action.TOMBSTONE for t in targets)
        assert [t.role for t in targets].count(Role.HOME) == 1
