"""Which regions a write reaches: every region, so each holds the customer's latest version.

The home and replica regions get the record; every other region gets a tombstone at the same
version. A region a customer moved away from is therefore always cleared, without reading where
the customer lived before and without a race between two moves in flight. Deletes tombstone
every region for the same reason. The price is one small tombstone per customer in each region
outside its placement.
"""

from __future__ import annotations

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import Action, Role, Target


def upsert_targets(regions: RegionMap, zip_prefix: int) -> tuple[Target, ...]:
    """Upsert in the zip's home and its replicas; tombstone in every other region."""
    home, *replicas = regions.placement(zip_prefix)
    targets = [Target(region=home, role=Role.HOME, action=Action.UPSERT)]
    targets += [Target(region=r, role=Role.REPLICA, action=Action.UPSERT) for r in replicas]
    placed = {home, *replicas}
    targets += [
        Target(region=r, role=Role.REPLICA, action=Action.TOMBSTONE)
        for r in regions.names
        if r not in placed
    ]
    return tuple(targets)


def delete_targets(regions: RegionMap) -> tuple[Target, ...]:
    """Tombstone every region; the first is written by the writer, the rest by the replicator."""
    return tuple(
        Target(region=r, role=Role.HOME if i == 0 else Role.REPLICA, action=Action.TOMBSTONE)
        for i, r in enumerate(regions.names)
    )
