"""Placement and the commands built from it: what each region must hold after a write.

A command names every region of the map: the home and replica regions get the record, every
other region a tombstone at the same version, and a delete a tombstone everywhere. The gateway
does not read where the customer lived before, so it cannot tell which of those tombstones
matter; the consumers can. Each routes commands through its placement table
(:mod:`regionstore_shared.placement`) and writes the placement plus the regions the customer
may have left, so a write costs the same however many regions there are. The full list keeps a
command self-describing: a region it is parked for knows what to become.
"""

from __future__ import annotations

import functools
import uuid

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
)


def upsert_targets(regions: RegionMap, zip_prefix: int) -> tuple[Target, ...]:
    """Upsert in the zip's home and its replicas; tombstone in every other region.

    Raises ZipOutOfRangeError for a zip no region takes.
    """
    return _targets_of_home(regions, regions.home_of(zip_prefix))


# Built once per home: a map is immutable, and building the targets was half the cost of
# making a command, on every write.
@functools.lru_cache(maxsize=1024)
def _targets_of_home(regions: RegionMap, home: str) -> tuple[Target, ...]:
    home, *replicas = regions.placement_of_home(home)
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
    """A tombstone in every region, the first marked as the writer's (see ``Applier``)."""
    return tuple(
        Target(
            region=r,
            role=Applier.WRITER if i == 0 else Applier.REPLICATOR,
            action=Action.TOMBSTONE,
        )
        for i, r in enumerate(regions.names)
    )


def upsert_command(
    customer: Customer,
    *,
    regions: RegionMap,
    version: int,
    issued_at_ms: int,
    command_id: uuid.UUID | None = None,
    after: int | None = None,
) -> UpsertCustomer:
    """An upsert making ``customer`` current at ``version``; raises ZipOutOfRangeError.

    A new command id unless ``command_id`` is given (a command made again, the same one).
    ``after``: an offset its partition certainly reached already (see Command.after).
    """
    return UpsertCustomer(
        command_id=uuid.uuid4() if command_id is None else command_id,
        version=version,
        issued_at_ms=issued_at_ms,
        after=after,
        targets=upsert_targets(regions, customer.customer_zip_code_prefix),
        customer=customer,
        home_region=regions.home_of(customer.customer_zip_code_prefix),
    )


def delete_command(
    customer_id: str,
    *,
    regions: RegionMap,
    version: int,
    issued_at_ms: int,
    command_id: uuid.UUID | None = None,
    after: int | None = None,
) -> DeleteCustomer:
    """A delete: a tombstone at ``version`` in every region (a new id unless ``command_id``)."""
    return DeleteCustomer(
        command_id=uuid.uuid4() if command_id is None else command_id,
        version=version,
        issued_at_ms=issued_at_ms,
        after=after,
        targets=delete_targets(regions),
        customer_id=customer_id,
    )


def republished(command: Command) -> Command:
    """The same command, published again: its version stands, it is never lifted above a write
    the partition took after its first publishing (see :mod:`regionstore_shared.placement`)."""
    return command.model_copy(update={"republished": True})
