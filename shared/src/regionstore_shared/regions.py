"""The region map: which region is a customer's home, and which regions hold its replicas."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

RegionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class RegionSpec(BaseModel):
    """One region: the zip-prefix range it is home for and the regions that hold its replicas."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: RegionName
    zip_min: Annotated[int, Field(ge=0, description="Lowest zip prefix homed here (inclusive).")]
    zip_max: Annotated[int, Field(ge=0, description="Highest zip prefix homed here (inclusive).")]
    replicas: tuple[RegionName, ...] = Field(description="Regions holding a copy, in order.")

    @model_validator(mode="after")
    def _range_is_ordered(self) -> RegionSpec:
        if self.zip_min > self.zip_max:
            raise ValueError(f"region {self.name}: zip_min {self.zip_min} > zip_max {self.zip_max}")
        if self.name in self.replicas:
            raise ValueError(f"region {self.name} cannot be its own replica")
        if len(set(self.replicas)) != len(self.replicas):
            raise ValueError(f"region {self.name} lists a replica twice: {list(self.replicas)}")
        return self


DEFAULT_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec(name="region_1", zip_min=1000, zip_max=39999, replicas=("region_3",)),
    RegionSpec(name="region_2", zip_min=40000, zip_max=69999, replicas=("region_1",)),
    RegionSpec(name="region_3", zip_min=70000, zip_max=99999, replicas=("region_2",)),
)


class ZipOutOfRangeError(ValueError):
    """A zip prefix that no region is home for."""


class RegionMap:
    """Validated, immutable view over the configured regions."""

    def __init__(self, specs: Iterable[RegionSpec]) -> None:
        ordered = sorted(specs, key=lambda spec: spec.zip_min)
        if not ordered:
            raise ValueError("at least one region is required")
        names = [spec.name for spec in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate region names in {names}")
        for low, high in itertools.pairwise(ordered):
            if high.zip_min <= low.zip_max:
                raise ValueError(f"regions {low.name} and {high.name} overlap")
        for spec in ordered:
            unknown = [r for r in spec.replicas if r not in names]
            if unknown:
                raise ValueError(f"region {spec.name} replicates to unknown regions {unknown}")
        self._specs = {spec.name: spec for spec in ordered}
        self._ordered = tuple(ordered)

    @property
    def names(self) -> tuple[str, ...]:
        """Region names, ordered by zip range."""
        return tuple(self._specs)

    @property
    def specs(self) -> tuple[RegionSpec, ...]:
        """Region specs, ordered by zip range."""
        return self._ordered

    @property
    def zip_min(self) -> int:
        """Lowest zip prefix any region accepts."""
        return self._ordered[0].zip_min

    @property
    def zip_max(self) -> int:
        """Highest zip prefix any region accepts."""
        return self._ordered[-1].zip_max

    def __contains__(self, region: object) -> bool:
        return region in self._specs

    def spec(self, region: str) -> RegionSpec:
        """The spec of a region; KeyError when unknown."""
        return self._specs[region]

    def home_of(self, zip_prefix: int) -> str:
        """The home region of a zip prefix."""
        for spec in self._ordered:
            if spec.zip_min <= zip_prefix <= spec.zip_max:
                return spec.name
        raise ZipOutOfRangeError(
            f"zip prefix {zip_prefix} is outside every region "
            f"({', '.join(f'{s.name}: {s.zip_min}-{s.zip_max}' for s in self._ordered)})"
        )

    def replicas_of(self, region: str) -> tuple[str, ...]:
        """The replica regions of a home region."""
        return self._specs[region].replicas

    def placement(self, zip_prefix: int) -> tuple[str, ...]:
        """Home region first, then its replicas."""
        return self.placement_of_home(self.home_of(zip_prefix))

    def placement_of_home(self, home: str) -> tuple[str, ...]:
        """A home region and its replicas."""
        return (home, *self.replicas_of(home))

    def fallbacks_for(self, region: str) -> tuple[str, ...]:
        """Where a region's home records can be read when the region itself is down."""
        return self.replicas_of(region)

    def regions_for_zip_range(self, zip_min: int | None, zip_max: int | None) -> Sequence[str]:
        """Regions whose home range intersects [zip_min, zip_max]."""
        low = self.zip_min if zip_min is None else zip_min
        high = self.zip_max if zip_max is None else zip_max
        return [s.name for s in self._ordered if s.zip_min <= high and low <= s.zip_max]
