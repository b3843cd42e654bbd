"""What is wrong with one customer's copies, and what repairs it.

The newest copy any region holds stands for the customer's state (the highest version; on a tie
a live copy beats a tombstone, since a move leaves both at one version, and the home region's
copy beats a replica's), as ``regionstore audit`` takes it. Against it:

- ``missing``: a region of the placement (the newest copy's home and its replicas) holds
  nothing, or a tombstone older than the newest version;
- ``older``: a region of the placement holds an older live copy;
- ``outside``: a region outside the placement holds a live copy;
- ``deleted``: a region holds a live copy while the newest version is a delete;
- ``lost``: the newest version is an upsert's tombstone (the customer moved) and no region
  holds it live: its record is lost everywhere, and nothing can bring it back.

``missing`` and ``older`` are repaired by publishing the newest version again; ``outside`` and
``deleted`` by a tombstone at the newest version in that region (see
:mod:`regionstore_recovery.repair` for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from regionstore_recovery.digests import Copy
from regionstore_shared.regions import RegionMap


class Kind(StrEnum):
    """A kind of divergence (the metric's and the report's label)."""

    MISSING = "missing"
    OLDER = "older"
    OUTSIDE = "outside"
    DELETED = "deleted"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Finding:
    """One region's copy of one customer that is not what the newest copy says."""

    customer_id: str
    region: str
    kind: Kind
    newest: Copy
    newest_region: str


def newest_copy(copies: Mapping[str, Copy]) -> tuple[str, Copy]:
    """The region holding the newest copy, and that copy."""

    def rank(item: tuple[str, Copy]) -> tuple[int, bool, bool]:
        region, copy = item
        return copy.version, not copy.deleted, copy.home == region

    return max(copies.items(), key=rank)


def findings(copies: Mapping[str, Copy], regions: RegionMap) -> list[Finding]:
    """Every region whose copy of one customer diverges from the newest copy (``copies``: by
    region, the regions holding nothing left out)."""
    where, newest = newest_copy(copies)

    def found(region: str, kind: Kind) -> Finding:
        return Finding(newest.customer_id, region, kind, newest, where)

    if newest.deleted:
        live = [r for r, c in copies.items() if not c.deleted]
        if newest.home is not None:
            return [found(where, Kind.LOST)]
        return [found(r, Kind.DELETED) for r in live]
    if newest.home is None or newest.home not in regions:
        return [found(where, Kind.LOST)]
    placement = regions.placement_of_home(newest.home)
    result: list[Finding] = []
    for region in regions.names:
        copy = copies.get(region)
        if region not in placement:
            if copy is not None and not copy.deleted:
                result.append(found(region, Kind.OUTSIDE))
        elif copy is None or (copy.deleted and copy.version < newest.version):
            result.append(found(region, Kind.MISSING))
        elif copy.version < newest.version or copy.deleted:
            result.append(found(region, Kind.OLDER))
    return result
