"""The customers the bench writes: Olist-shaped, reproducible, with recognisable ids.

Every id is ``bench-<run stamp>-<scenario>-<n>``: the stamp is the run's start in epoch seconds
(fixed width, so ids of older runs sort before newer ones and leftovers of a crashed run can be
found by range), and ``bench-`` tells anyone reading a store whose records these are.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from regionstore_shared.documents import live_document
from regionstore_shared.domain import upsert_command, upsert_targets
from regionstore_shared.placement import PlacementTable
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import Customer, UpsertCustomer, encode_command
from regionstore_tools.dataset.olist import generate

ID_PREFIX = "bench-"
STALE_RUN_S = 6 * 3600
# Zero-padded sequence numbers, so a range of ids is a range of numbers (see id_ranges).
ID_DIGITS = 6


def run_stamp(now: float | None = None) -> str:
    """This run's stamp: epoch seconds, ten digits."""
    return f"{int(time.time() if now is None else now):010d}"


def stale_prefix_bound(now: float | None = None) -> str:
    """Ids below this belong to runs older than STALE_RUN_S (left over after a crash)."""
    return f"{ID_PREFIX}{run_stamp((time.time() if now is None else now) - STALE_RUN_S)}"


@dataclass(frozen=True, slots=True)
class Customers:
    """One scenario's customers, as request bodies."""

    tag: str
    prefix: str
    bodies: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        """Every customer id, in order."""
        return [body["customer_id"] for body in self.bodies]

    def id_ranges(self, per_range: int) -> list[tuple[str, str]]:
        """[low, high) id bounds each covering at most ``per_range`` of these customers."""
        return [
            (
                f"{self.prefix}{start:0{ID_DIGITS}d}",
                f"{self.prefix}{start + per_range:0{ID_DIGITS}d}",
            )
            for start in range(0, max(len(self.bodies), 1), per_range)
        ]

    def chunks(self, size: int) -> list[list[dict[str, Any]]]:
        """The bodies in consecutive chunks of ``size``."""
        return [self.bodies[i : i + size] for i in range(0, len(self.bodies), size)]


def customers(stamp: str, tag: str, count: int, seed: int) -> Customers:
    """``count`` Olist-like customers with ids ``bench-<stamp>-<tag>-<n>`` (n zero-padded)."""
    prefix = f"{ID_PREFIX}{stamp}-{tag}-"
    bodies = []
    for n, customer in enumerate(generate(count, seed=seed)):
        body = customer.model_dump()
        body["customer_id"] = f"{prefix}{n:0{ID_DIGITS}d}"
        bodies.append(body)
    return Customers(tag, prefix, bodies)


def commands(bodies: Iterable[dict[str, Any]], regions: RegionMap) -> list[UpsertCustomer]:
    """The commands the gateway would produce for these customers (fresh ids, no tombstones)."""
    result = []
    now_ms = time.time_ns() // 1_000_000
    for version, body in enumerate(bodies, start=1):
        # The bodies came out of validated Customer models: no need to validate them again.
        customer = Customer.model_construct(**body)
        zip_prefix = customer.customer_zip_code_prefix
        result.append(
            UpsertCustomer.model_construct(
                command_id=uuid.uuid4(),
                version=version,
                issued_at_ms=now_ms,
                targets=upsert_targets(regions, zip_prefix),
                customer=customer,
                home_region=regions.home_of(zip_prefix),
            )
        )
    return result


def target_counts(
    bodies: Iterable[dict[str, Any]], regions: RegionMap
) -> tuple[dict[str, int], dict[str, int]]:
    """How many applications these new customers' upserts cost, per region and per role.

    Routed as the consumers route them, through a placement table
    (`regionstore_shared.placement`), so the bench follows whatever it decides (a new customer
    lived nowhere before: the record in home and replicas, nothing elsewhere).
    """
    by_region = dict.fromkeys(regions.names, 0)
    by_role: dict[str, int] = {}
    table = PlacementTable({}, unknown=())
    for body in bodies:
        customer = Customer.model_validate(body)
        command = upsert_command(customer, regions=regions, version=1, issued_at_ms=0)
        for target in table.route(command).targets:
            by_region[target.region] += 1
            by_role[target.role.value] = by_role.get(target.role.value, 0) + 1
    return by_region, by_role


def encoded(commands_: Iterable[UpsertCustomer]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each command as it travels through Kafka."""
    return [(c.key.encode(), encode_command(c)) for c in commands_]


def documents(commands_: Iterable[UpsertCustomer]) -> list[dict[str, Any]]:
    """The documents the writer leaves in a home region for these commands."""
    return [live_document(c) for c in commands_]
