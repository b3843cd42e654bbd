"""Which regions a write must reach: the new placement, and tombstones where the customer was."""

from __future__ import annotations

from collections.abc import Iterable

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import Action, Role, Target


def upsert_targets(
    regions: RegionMap, zip_prefix: int, previously_in: Iterable[str] = ()
) -> tuple[Target, ...]:
    """Upsert in the new home and its replicas; tombstone every other region it may be in."""
    home, *replicas = regions.placement(zip_prefix)
    targets = [Target(region=home, role=Role.HOME, action=Action.UPSERT)]
    targets += [Target(region=r, role=Role.REPLICA, action=Action.UPSERT) for r in replicas]
    placed = {home, *replicas}
    for region in sorted(set(previously_in) - placed):
        targets.append(Target(region=region, role=Role.REPLICA, action=Action.TOMBSTONE))
    return tuple(targets)


def delete_targets(regions: RegionMap, home: str | None) -> tuple[Target, ...]:
    """Tombstone the customer's placement, or every region when its placement is unknown."""
    if home is None or home not in regions:
        names = regions.names
        return tuple(
            Target(region=r, role=Role.HOME if i == 0 else Role.REPLICA, action=Action.TOMBSTONE)
            for i, r in enumerate(names)
        )
    targets = [Target(region=home, role=Role.HOME, action=Action.TOMBSTONE)]
    targets += [
        Target(region=r, role=Role.REPLICA, action=Action.TOMBSTONE)
        for r in regions.replicas_of(home)
    ]
    return tuple(targets)
