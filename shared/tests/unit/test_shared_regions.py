"""The region map: defaults, boundaries, configurable maps and the maps that must be refused."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec, ZipOutOfRangeError
from regionstore_shared.settings import CommonSettings

DEFAULT_OUT_OF_RANGE = (
    "is outside every region (region_1: 1000-39999, region_2: 40000-69999, region_3: 70000-99999)"
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read REGIONSTORE_* variables; none from the outer shell may leak in."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def default_map() -> RegionMap:
    return RegionMap(DEFAULT_REGIONS)


def four_regions() -> list[dict[str, Any]]:
    return [
        {"name": "north", "zip_min": 0, "zip_max": 24999, "replicas": ["east", "south"]},
        {"name": "east", "zip_min": 25000, "zip_max": 49999, "replicas": ["south", "west"]},
        {"name": "south", "zip_min": 50000, "zip_max": 74999, "replicas": ["west", "north"]},
        {"name": "west", "zip_min": 75000, "zip_max": 99999, "replicas": ["north", "east"]},
    ]


def four_stores() -> dict[str, str]:
    return {
        name: f"mongodb://127.0.0.1:2800{i}"
        for i, name in enumerate(("north", "east", "south", "west"))
    }


def spec(name: str, zip_min: int, zip_max: int, *replicas: str) -> RegionSpec:
    return RegionSpec(name=name, zip_min=zip_min, zip_max=zip_max, replicas=replicas)


class TestDefaultMap:
    def test_names_are_ordered_by_zip_range(self, default_map: RegionMap) -> None:
        assert default_map.names == ("region_1", "region_2", "region_3")

    def test_ranges_are_the_original_systems(self, default_map: RegionMap) -> None:
        ranges = {s.name: (s.zip_min, s.zip_max) for s in default_map.specs}
        assert ranges == {
            "region_1": (1000, 39999),
            "region_2": (40000, 69999),
            "region_3": (70000, 99999),
        }

    def test_replica_ring(self, default_map: RegionMap) -> None:
        assert default_map.replicas_of("region_1") == ("region_3",)
        assert default_map.replicas_of("region_2") == ("region_1",)
        assert default_map.replicas_of("region_3") == ("region_2",)

    def test_placement_is_home_then_replica(self, default_map: RegionMap) -> None:
        assert default_map.placement(14409) == ("region_1", "region_3")
        assert default_map.placement(50000) == ("region_2", "region_1")
        assert default_map.placement(80000) == ("region_3", "region_2")

    def test_fallbacks_are_the_replicas(self, default_map: RegionMap) -> None:
        assert default_map.fallbacks_for("region_2") == ("region_1",)

    def test_overall_range(self, default_map: RegionMap) -> None:
        assert (default_map.zip_min, default_map.zip_max) == (1000, 99999)

    def test_membership(self, default_map: RegionMap) -> None:
        assert "region_2" in default_map
        assert "region_4" not in default_map

    def test_unknown_region_spec_is_a_key_error(self, default_map: RegionMap) -> None:
        with pytest.raises(KeyError):
            default_map.spec("region_9")

    def test_settings_default_to_the_same_map(self) -> None:
        settings = CommonSettings()
        assert settings.region_map.specs == DEFAULT_REGIONS
        assert set(settings.stores) == {"region_1", "region_2", "region_3"}


class TestHomeOf:
    @pytest.mark.parametrize(
        ("zip_prefix", "home"),
        [
            (1000, "region_1"),
            (39999, "region_1"),
            (40000, "region_2"),
            (69999, "region_2"),
            (70000, "region_3"),
            (99999, "region_3"),
        ],
    )
    def test_boundaries_are_inclusive(
        self, default_map: RegionMap, zip_prefix: int, home: str
    ) -> None:
        assert default_map.home_of(zip_prefix) == home

    @pytest.mark.parametrize("zip_prefix", [0, 999, 100000])
    def test_outside_every_region_is_rejected(
        self, default_map: RegionMap, zip_prefix: int
    ) -> None:
        with pytest.raises(ZipOutOfRangeError) as caught:
            default_map.home_of(zip_prefix)
        assert str(caught.value) == f"zip prefix {zip_prefix} {DEFAULT_OUT_OF_RANGE}"

    def test_out_of_range_is_a_value_error(self) -> None:
        assert issubclass(ZipOutOfRangeError, ValueError)

    def test_placement_of_an_out_of_range_zip_is_rejected(self, default_map: RegionMap) -> None:
        with pytest.raises(ZipOutOfRangeError):
            default_map.placement(999)

    def test_a_gap_between_regions_is_outside_every_region(self) -> None:
        gapped = RegionMap([spec("a", 0, 10), spec("b", 20, 30)])
        with pytest.raises(ZipOutOfRangeError, match=re.escape("(a: 0-10, b: 20-30)")):
            gapped.home_of(15)


class TestConfigurableMap:
    def test_four_regions_with_two_replicas_each_from_arguments(self) -> None:
        settings = CommonSettings(
            regions=[RegionSpec.model_validate(r) for r in four_regions()], stores=four_stores()
        )
        region_map = settings.region_map
        assert region_map.names == ("north", "east", "south", "west")
        assert region_map.home_of(24999) == "north"
        assert region_map.home_of(25000) == "east"
        assert region_map.home_of(0) == "north"
        assert region_map.placement(60000) == ("south", "west", "north")
        assert region_map.placement(99999) == ("west", "north", "east")

    def test_four_regions_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_REGIONS", json.dumps(four_regions()))
        monkeypatch.setenv("REGIONSTORE_STORES", json.dumps(four_stores()))
        region_map = CommonSettings().region_map
        assert region_map.names == ("north", "east", "south", "west")
        assert region_map.placement(30000) == ("east", "south", "west")

    def test_store_uris_from_nested_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_REGIONS", json.dumps(four_regions()))
        for name, uri in four_stores().items():
            monkeypatch.setenv(f"REGIONSTORE_STORES__{name.upper()}", uri)
        # Defaults of the stock regions stay beside the configured ones; unused, they are inert.
        assert four_stores().items() <= CommonSettings().stores.items()

    def test_regions_given_out_of_order_are_sorted(self) -> None:
        region_map = RegionMap([spec("b", 11, 20, "a"), spec("a", 0, 10, "b")])
        assert region_map.names == ("a", "b")
        assert (region_map.zip_min, region_map.zip_max) == (0, 20)

    def test_a_region_may_have_no_replica(self) -> None:
        assert RegionMap([spec("solo", 0, 99999)]).placement(5) == ("solo",)

    def test_one_store_override_keeps_the_other_defaults(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The settings docstring names REGIONSTORE_STORES__REGION_2 as the way to point one
        # region elsewhere, as REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS does for one Kafka field.
        monkeypatch.setenv("REGIONSTORE_STORES__REGION_2", "mongodb://elsewhere:27017")
        stores = CommonSettings().stores
        assert stores["region_2"] == "mongodb://elsewhere:27017"
        assert stores["region_1"] == "mongodb://127.0.0.1:27017/?directConnection=true"


class TestInvalidMap:
    def test_overlap(self) -> None:
        with pytest.raises(ValueError, match=r"^regions a and b overlap$"):
            RegionMap([spec("a", 0, 10), spec("b", 10, 20)])

    def test_unknown_replica(self) -> None:
        with pytest.raises(
            ValueError, match=re.escape("region a replicates to unknown regions ['zz']")
        ):
            RegionMap([spec("a", 0, 10, "zz"), spec("b", 11, 20)])

    def test_self_replica(self) -> None:
        with pytest.raises(ValidationError, match="region a cannot be its own replica"):
            spec("a", 0, 10, "a")

    def test_duplicate_name(self) -> None:
        with pytest.raises(ValueError, match=re.escape("duplicate region names in ['a', 'a']")):
            RegionMap([spec("a", 0, 10), spec("a", 11, 20)])

    def test_zip_min_above_zip_max(self) -> None:
        with pytest.raises(ValidationError, match="region a: zip_min 20 > zip_max 10"):
            spec("a", 20, 10)

    def test_negative_zip(self) -> None:
        with pytest.raises(ValidationError) as caught:
            spec("a", -1, 10)
        assert caught.value.errors()[0]["type"] == "greater_than_equal"

    def test_bad_region_name(self) -> None:
        with pytest.raises(ValidationError) as caught:
            spec("Region 1", 0, 10)
        assert caught.value.errors()[0]["type"] == "string_pattern_mismatch"

    def test_no_regions(self) -> None:
        with pytest.raises(ValueError, match="at least one region is required"):
            RegionMap([])

    def test_a_replica_listed_twice(self) -> None:
        # A doubled replica would double the region in every placement (and in the targets).
        with pytest.raises(ValueError, match="region_2"):
            RegionMap([spec("region_1", 0, 10, "region_2", "region_2"), spec("region_2", 11, 20)])

    def test_settings_reject_an_overlapping_map(self) -> None:
        with pytest.raises(ValidationError, match="regions a and b overlap"):
            CommonSettings(
                regions=[spec("a", 0, 10), spec("b", 5, 20)], stores={"a": "x", "b": "y"}
            )

    def test_settings_reject_a_self_replica_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        regions = [{"name": "a", "zip_min": 0, "zip_max": 10, "replicas": ["a"]}]
        monkeypatch.setenv("REGIONSTORE_REGIONS", json.dumps(regions))
        monkeypatch.setenv("REGIONSTORE_STORES", json.dumps({"a": "x"}))
        with pytest.raises(ValidationError, match="region a cannot be its own replica"):
            CommonSettings()

    def test_settings_reject_a_region_without_a_store(self) -> None:
        with pytest.raises(ValidationError) as caught:
            CommonSettings(regions=[spec("a", 0, 10), spec("b", 11, 20)], stores={"a": "x"})
        assert caught.value.errors()[0]["msg"] == (
            "Value error, no store URI for regions ['b']: set REGIONSTORE_STORES__<REGION>"
        )

    def test_settings_reject_an_unknown_replica_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        regions = [{"name": "a", "zip_min": 0, "zip_max": 10, "replicas": ["b"]}]
        monkeypatch.setenv("REGIONSTORE_REGIONS", json.dumps(regions))
        monkeypatch.setenv("REGIONSTORE_STORES", json.dumps({"a": "x"}))
        with pytest.raises(ValidationError, match="replicates to unknown regions"):
            CommonSettings()


class TestRegionsForZipRange:
    @pytest.mark.parametrize(
        ("zip_min", "zip_max", "expected"),
        [
            (None, None, ["region_1", "region_2", "region_3"]),
            (1000, 39999, ["region_1"]),
            (39999, 40000, ["region_1", "region_2"]),
            (40000, None, ["region_2", "region_3"]),
            (None, 1000, ["region_1"]),
            (None, 999, []),
            (69999, 70000, ["region_2", "region_3"]),
            (100000, None, []),
            (0, 99999, ["region_1", "region_2", "region_3"]),
        ],
    )
    def test_regions_whose_home_range_intersects(
        self,
        default_map: RegionMap,
        zip_min: int | None,
        zip_max: int | None,
        expected: list[str],
    ) -> None:
        assert list(default_map.regions_for_zip_range(zip_min, zip_max)) == expected
