"""Repository logic that needs no store: coverage of unreachable regions and the filter it sends."""

from __future__ import annotations

import re

import pytest

from regionstore_gateway.repository import CustomerFilter, CustomerRepository, Found
from regionstore_shared.apply import Suspicion
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec


def repository_over(regions: RegionMap) -> CustomerRepository:
    return CustomerRepository({}, regions, Suspicion(3.0))


@pytest.fixture
def repository() -> CustomerRepository:
    return repository_over(RegionMap(DEFAULT_REGIONS))


class TestCovered:
    def test_nothing_unreachable(self, repository: CustomerRepository) -> None:
        assert repository.covered(set())

    @pytest.mark.parametrize("down", ["region_1", "region_2", "region_3"])
    def test_one_region_down_is_covered_by_its_replica(
        self, repository: CustomerRepository, down: str
    ) -> None:
        assert repository.covered({down})

    @pytest.mark.parametrize(
        "down",
        [
            {"region_1", "region_3"},  # region_1's replica is region_3
            {"region_2", "region_1"},  # region_2's replica is region_1
            {"region_3", "region_2"},  # region_3's replica is region_2
            {"region_1", "region_2", "region_3"},
        ],
    )
    def test_a_region_and_its_replica_down_is_not_covered(
        self, repository: CustomerRepository, down: set[str]
    ) -> None:
        assert not repository.covered(down)

    def test_a_region_without_replicas_is_not_covered_when_down(self) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="a", zip_min=0, zip_max=10, replicas=()),
                RegionSpec(name="b", zip_min=11, zip_max=20, replicas=("a",)),
            ]
        )
        repository = repository_over(regions)
        assert not repository.covered({"a"})
        assert repository.covered({"b"})

    def test_two_replicas_cover_a_home_and_one_replica_down(self) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="a", zip_min=0, zip_max=24999, replicas=("b", "c")),
                RegionSpec(name="b", zip_min=25000, zip_max=49999, replicas=("c", "d")),
                RegionSpec(name="c", zip_min=50000, zip_max=74999, replicas=("d", "a")),
                RegionSpec(name="d", zip_min=75000, zip_max=99999, replicas=("a", "b")),
            ]
        )
        repository = repository_over(regions)
        assert repository.covered({"a", "b"})
        assert not repository.covered({"a", "b", "c"})


class TestFound:
    def test_live_document(self) -> None:
        found = Found({"_id": "c", "_v": 7, "_deleted": False, "_home": "region_2"}, "region_1")
        assert (found.version, found.deleted, found.home) == (7, False, "region_2")

    def test_tombstone_has_no_home(self) -> None:
        found = Found({"_id": "c", "_v": 8, "_deleted": True}, "region_1")
        assert (found.deleted, found.home) == (True, None)


class TestFilterQuery:
    def test_every_share_is_one_homes_live_documents(self) -> None:
        assert CustomerFilter().mongo("region_2", None) == {"_home": "region_2", "_deleted": False}

    def test_all_conditions(self) -> None:
        query = CustomerFilter(zip_min=1000, zip_max=2000, city="São", state="SP")
        assert query.mongo("region_1", "c-9") == {
            "_home": "region_1",
            "_deleted": False,
            "_id": {"$gt": "c-9"},
            "customer_zip_code_prefix": {"$gte": 1000, "$lte": 2000},
            "_city_key": {"$regex": "^sao"},
            "customer_state": "SP",
        }

    @pytest.mark.parametrize("city", [".*", "a+b", "(x|y)", "[a-z]", "^$", "\\d"])
    def test_city_text_is_an_escaped_prefix_never_a_pattern(self, city: str) -> None:
        pattern = CustomerFilter(city=city).mongo("region_1", None)["_city_key"]["$regex"]
        assert re.fullmatch(pattern + ".*", city, flags=re.DOTALL)
        assert not re.match(pattern, "zzz")
