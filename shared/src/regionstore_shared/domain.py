"""Placement and the commands built from it: which regions a write reaches, and who applies each.

Every write reaches every region, so each holds the customer's latest version. The home and
replica regions get the record; every other region gets a tombstone at the same version. A
region a customer moved away from is therefore always cleared, without reading where the
customer lived before and without a race between two moves in flight. Deletes tombstone every
region for the same reason. The price is one small tombstone per customer in each region
outside its placement.

The writer applies the home region's target (and a delete's first); the replicator applies
the rest, tombstones outside the placement included.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import (
    Action,
    Applier,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
)


def upsert_targets(regions: RegionMap, zip_prefix: int) -> tuple[Target, ...]:
    """Upsert in the zip's home and its replicas; tombstone in every other region.

    Raises ZipOutOfRangeError for a zip no region takes.
    """
    home, *replicas = regions.placement(zip_prefix)
    targets = [Target(region=home, role=Applier.WRITER, action=Action.UPSERT)]
    targets += [Target(region=r, role=Applier.REPLICATOR, action=Action.UPSERT) for r in replicas]
    placed = {home, *replicas}
    targets += [
        Target(region=r, role=Applier.REPLICATOR, action=Action.TOMBSTONE)
        for r in regions.names
        if r not in placed
    ]
    return tuple(targets)


def delete_targets(regions: RegionMap) -> tuple[Target, ...]:
    """Tombstone every region; the first is written by the writer, the rest by the replicator."""
    return tombstones(regions.names)


def tombstones(regions: Iterable[str]) -> tuple[Target, ...]:
    """Tombstones in ``regions``: the writer writes the first, the replicator the rest."""
    return tuple(
        Target(
            region=r,
            role=Applier.WRITER if i == 0 else Applier.REPLICATOR,
            action=Action.TOMBSTONE,
        )
        for i, r in enumerate(regions)
    )


def upsert_command(
    customer: Customer, *, regions: RegionMap, version: int, issued_at_ms: int
) -> UpsertCustomer:
    """A new upsert making ``customer`` current at ``version``; raises ZipOutOfRangeError."""
    return UpsertCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=issued_at_ms,
        targets=upsert_targets(regions, customer.customer_zip_code_prefix),
        customer=customer,
        home_region=regions.home_of(customer.customer_zip_code_prefix),
    )


def delete_command(
    customer_id: str, *, regions: RegionMap, version: int, issued_at_ms: int
) -> DeleteCustomer:
    """A new delete: a tombstone at ``version`` in every region."""
    return DeleteCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=issued_at_ms,
        targets=delete_targets(regions),
        customer_id=customer_id,
    )
