"""Placement and the commands built from it: every region targeted, each by its applier."""

from __future__ import annotations

import pytest

from regionstore_shared.domain import delete_command, delete_targets, upsert_command, upsert_targets
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec, ZipOutOfRangeError
from regionstore_shared.schemas import Action, Applier, Customer, Target

REGIONS = RegionMap(DEFAULT_REGIONS)


def target(region: str, role: Applier, action: Action) -> Target:
    return Target(region=region, role=role, action=action)


def summary(targets: tuple[Target, ...]) -> list[tuple[str, str, str]]:
    return [(t.region, t.role.name.lower(), t.action.value) for t in targets]


FOUR = RegionMap(
    [
        RegionSpec(name="a", zip_min=0, zip_max=24999, replicas=("b", "c")),
        RegionSpec(name="b", zip_min=25000, zip_max=49999, replicas=("c", "d")),
        RegionSpec(name="c", zip_min=50000, zip_max=74999, replicas=("d", "a")),
        RegionSpec(name="d", zip_min=75000, zip_max=99999, replicas=("a", "b")),
    ]
)


class TestUpsertTargets:
    @pytest.mark.parametrize(
        ("zip_prefix", "home", "replica", "tombstoned"),
        [
            (1000, "region_1", "region_3", "region_2"),
            (39999, "region_1", "region_3", "region_2"),
            (40000, "region_2", "region_1", "region_3"),
            (69999, "region_2", "region_1", "region_3"),
            (70000, "region_3", "region_2", "region_1"),
            (99999, "region_3", "region_2", "region_1"),
        ],
    )
    def test_home_replica_and_a_tombstone_everywhere_else(
        self, zip_prefix: int, home: str, replica: str, tombstoned: str
    ) -> None:
        assert upsert_targets(REGIONS, zip_prefix) == (
            target(home, Applier.WRITER, Action.UPSERT),
            target(replica, Applier.REPLICATOR, Action.UPSERT),
            target(tombstoned, Applier.REPLICATOR, Action.TOMBSTONE),
        )

    @pytest.mark.parametrize("zip_prefix", [1000, 14409, 50000, 70000, 99999])
    def test_every_region_is_targeted_exactly_once(self, zip_prefix: int) -> None:
        regions = [t.region for t in upsert_targets(REGIONS, zip_prefix)]
        assert sorted(regions) == sorted(REGIONS.names)

    @pytest.mark.parametrize("zip_prefix", [1000, 50000, 99999])
    def test_exactly_one_home_and_it_is_an_upsert(self, zip_prefix: int) -> None:
        targets = upsert_targets(REGIONS, zip_prefix)
        homes = [t for t in targets if t.role is Applier.WRITER]
        assert homes == [target(REGIONS.home_of(zip_prefix), Applier.WRITER, Action.UPSERT)]
        assert targets[0] == homes[0]

    @pytest.mark.parametrize("zip_prefix", [1000, 50000, 99999])
    def test_the_upserted_regions_are_the_placement_in_order(self, zip_prefix: int) -> None:
        targets = upsert_targets(REGIONS, zip_prefix)
        upserted = tuple(t.region for t in targets if t.action is Action.UPSERT)
        assert upserted == REGIONS.placement(zip_prefix)

    def test_a_move_needs_no_knowledge_of_the_old_placement(self) -> None:
        # region_1 -> region_2: region_3 (region_1's old replica) is tombstoned regardless.
        assert summary(upsert_targets(REGIONS, 50000)) == [
            ("region_2", "writer", "upsert"),
            ("region_1", "replicator", "upsert"),
            ("region_3", "replicator", "tombstone"),
        ]

    @pytest.mark.parametrize(
        ("zip_prefix", "expected"),
        [
            (
                80000,
                [
                    ("d", "writer", "upsert"),
                    ("a", "replicator", "upsert"),
                    ("b", "replicator", "upsert"),
                    ("c", "replicator", "tombstone"),
                ],
            ),
            (
                100,
                [
                    ("a", "writer", "upsert"),
                    ("b", "replicator", "upsert"),
                    ("c", "replicator", "upsert"),
                    ("d", "replicator", "tombstone"),
                ],
            ),
        ],
    )
    def test_four_regions_with_two_replicas_tombstone_exactly_one(
        self, zip_prefix: int, expected: list[tuple[str, str, str]]
    ) -> None:
        targets = upsert_targets(FOUR, zip_prefix)
        assert summary(targets) == expected
        assert [t.action for t in targets].count(Action.TOMBSTONE) == 1
        assert sorted(t.region for t in targets) == ["a", "b", "c", "d"]

    def test_a_single_region_map_tombstones_nothing(self) -> None:
        only = RegionMap([RegionSpec(name="solo", zip_min=0, zip_max=99999, replicas=())])
        assert upsert_targets(only, 5) == (target("solo", Applier.WRITER, Action.UPSERT),)

    @pytest.mark.parametrize("zip_prefix", [0, 999])
    def test_out_of_range_zip_is_rejected(self, zip_prefix: int) -> None:
        with pytest.raises(ZipOutOfRangeError):
            upsert_targets(REGIONS, zip_prefix)


class TestDeleteTargets:
    def test_tombstones_every_region_the_first_by_the_writer(self) -> None:
        assert delete_targets(REGIONS) == (
            target("region_1", Applier.WRITER, Action.TOMBSTONE),
            target("region_2", Applier.REPLICATOR, Action.TOMBSTONE),
            target("region_3", Applier.REPLICATOR, Action.TOMBSTONE),
        )

    def test_four_regions(self) -> None:
        targets = delete_targets(FOUR)
        assert summary(targets) == [
            ("a", "writer", "tombstone"),
            ("b", "replicator", "tombstone"),
            ("c", "replicator", "tombstone"),
            ("d", "replicator", "tombstone"),
        ]

    def test_a_single_region(self) -> None:
        only = RegionMap([RegionSpec(name="solo", zip_min=0, zip_max=99999, replicas=())])
        assert delete_targets(only) == (target("solo", Applier.WRITER, Action.TOMBSTONE),)


class TestCommands:
    def test_an_upsert_carries_its_placement_version_and_home(self) -> None:
        customer = Customer(
            customer_id="c1",
            customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
            customer_zip_code_prefix=14409,
            customer_city="franca",
            customer_state="SP",
        )
        command = upsert_command(customer, regions=REGIONS, version=7, issued_at_ms=3)
        assert (command.version, command.issued_at_ms, command.customer) == (7, 3, customer)
        assert command.targets == upsert_targets(REGIONS, 14409)
        assert command.home_region == REGIONS.home_of(14409)

    def test_a_delete_tombstones_every_region(self) -> None:
        command = delete_command("c1", regions=REGIONS, version=9, issued_at_ms=4)
        assert (command.customer_id, command.version, command.issued_at_ms) == ("c1", 9, 4)
        assert command.targets == delete_targets(REGIONS)

    def test_each_command_has_its_own_id(self) -> None:
        first = delete_command("c1", regions=REGIONS, version=9, issued_at_ms=4)
        again = delete_command("c1", regions=REGIONS, version=9, issued_at_ms=4)
        assert first.command_id != again.command_id
