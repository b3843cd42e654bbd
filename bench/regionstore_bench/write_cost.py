"""Store writes per customer write, by map size: every region (the design before the placement
table, kept for comparison) against the placement table the consumers route by.

The figures are counted from the router: every target is one store write (an insert or a
guarded replace), so the count is exact for what a command asks of the stores. Each customer is
created, moved to a home in another region, and deleted; the maps have 3, 6 and 12 regions,
each the next one's replica (one replica), or the next two's (two).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from statistics import fmean
from typing import Any

from regionstore_shared.domain import delete_command, upsert_command
from regionstore_shared.placement import PlacementTable
from regionstore_shared.regions import RegionMap, RegionSpec
from regionstore_shared.schemas import Command, Customer

SIZES = (3, 6, 12)
ZIP_LOW, ZIP_HIGH = 1000, 99999


def ring(size: int, replicas: int = 1) -> RegionMap:
    """``size`` regions sharing the zip range evenly, each replicated to the next ones."""
    width = (ZIP_HIGH - ZIP_LOW + 1) // size
    names = [f"r{i}" for i in range(size)]
    specs = [
        RegionSpec(
            name=name,
            zip_min=ZIP_LOW + i * width,
            zip_max=ZIP_HIGH if i == size - 1 else ZIP_LOW + (i + 1) * width - 1,
            replicas=tuple(names[(i + k) % size] for k in range(1, replicas + 1)),
        )
        for i, name in enumerate(names)
    ]
    return RegionMap(specs)


def lives(regions: RegionMap, customers: int, seed: int) -> Iterator[tuple[str, Command]]:
    """Each customer's create, move and delete, as ("create" | "move" | "delete", command)."""
    rng = random.Random(seed)
    example = dict(Customer.model_config["json_schema_extra"]["examples"][0])  # type: ignore[index,arg-type]
    version = 0
    for n in range(customers):
        first = rng.randint(ZIP_LOW, ZIP_HIGH)
        moved = rng.randint(ZIP_LOW, ZIP_HIGH)
        while regions.home_of(moved) == regions.home_of(first):
            moved = rng.randint(ZIP_LOW, ZIP_HIGH)
        customer_id = f"{n:032x}"
        for kind, zip_prefix in (("create", first), ("move", moved)):
            version += 1
            customer = Customer.model_validate(
                example | {"customer_id": customer_id, "customer_zip_code_prefix": zip_prefix}
            )
            yield kind, upsert_command(customer, regions=regions, version=version, issued_at_ms=0)
        version += 1
        yield (
            "delete",
            delete_command(customer_id, regions=regions, version=version, issued_at_ms=0),
        )


def write_cost(
    size: int, *, replicas: int = 1, customers: int = 500, seed: int = 7
) -> dict[str, Any]:
    """Mean store writes per create, move and delete on a ``size``-region map, both ways:
    ``today`` every region (the key older results files use), ``table`` the placement table."""
    regions = ring(size, replicas)
    table = PlacementTable({}, unknown=())
    today: dict[str, list[int]] = {"create": [], "move": [], "delete": []}
    routed: dict[str, list[int]] = {"create": [], "move": [], "delete": []}
    for kind, command in lives(regions, customers, seed):
        today[kind].append(len(command.targets))
        routed[kind].append(len(table.route(command).targets))
        table.settle()
    return {
        "regions": size,
        "replicas": replicas,
        "customers": customers,
        "today": {kind: fmean(counts) for kind, counts in today.items()},
        "table": {kind: fmean(counts) for kind, counts in routed.items()},
    }


def write_costs() -> list[dict[str, Any]]:
    """The figures for every map size, with one and with two replicas."""
    return [write_cost(size, replicas=r) for r in (1, 2) for size in SIZES]
