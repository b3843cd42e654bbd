"""Where each customer is placed, as a consumer learns it from the command stream.

A command names the regions of its own placement: the home region and its replicas. The regions
it must also tombstone, those an earlier placement used and the new one does not, follow from the
customer's newest command seen so far. One customer's commands share a Kafka partition, so every
consumer of the partition sees them in one order, and this table, kept per partition and per
consumer group, tells each command where to go:

- a command older than the newest one seen is superseded: it goes nowhere, since the newest
  command already wrote the record or a tombstone in every region any earlier one could reach;
- the newest command seen goes to its placement, and tombstones the placement before it;
- the same command again (a replay, a producer retry) goes where it went the first time.

So a write costs its placement plus the regions the customer actually left, however many regions
there are, and two moves in flight cannot leave a stale copy: whichever is newer tombstones the
placement of whichever was seen before it, and the older one, seen after, is dropped.

A customer the table has never seen may live nowhere yet (the table has the partition's whole
history) or anywhere (it started on a partition with older commands): ``unknown`` says which.

The writer applies a command's home-region upsert and the replicator every other target, the
tombstones included. That split needs nothing from the table but the command itself, so the two
groups, each with a table of its own, can never both leave a target to the other.

The table is safe only if it is never behind the offsets it is committed with, and a consumer
that lost its partitions (a zombie) cannot overwrite it: :mod:`regionstore_shared.placement_log`
commits it in one Kafka transaction with the offsets, by a producer fenced per partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import TypeAdapter

from regionstore_shared.schemas import Action, Applier, Command, Target, UpsertCustomer


@dataclass(frozen=True, slots=True)
class Placed:
    """What the newest command of a customer did: its version, placement and tombstones."""

    version: int
    regions: tuple[str, ...]
    """The regions that hold the record at ``version``; empty after a delete."""
    left: tuple[str, ...]
    """The regions tombstoned at ``version``: the earlier placement, outside this one."""


def placed_by(command: Command, before: tuple[str, ...]) -> Placed:
    """The placement ``command`` makes when the customer may be live in ``before``."""
    if isinstance(command, UpsertCustomer):
        regions = tuple(t.region for t in command.targets if t.action is Action.UPSERT)
    else:
        regions = ()
    return Placed(command.version, regions, tuple(r for r in before if r not in regions))


def targets_of(command: Command, placed: Placed) -> tuple[Target, ...]:
    """The targets that bring every region in line with ``placed``, made by ``command``.

    An upsert's own upserts keep their appliers (the writer's home, the replicator's replicas);
    every tombstone, a delete's included, is the replicator's.
    """
    upserts: tuple[Target, ...] = ()
    if isinstance(command, UpsertCustomer):
        upserts = tuple(t for t in command.targets if t.action is Action.UPSERT)
    return upserts + tuple(
        Target(region=r, role=Applier.REPLICATOR, action=Action.TOMBSTONE) for r in placed.left
    )


class PlacementTable:
    """One partition's placements, and the changes of the batch not committed yet.

    :meth:`route` reads and extends the changes; :meth:`settle` keeps them once the batch and
    they are committed, :meth:`discard` forgets them when the batch is replayed instead.
    """

    def __init__(self, known: Mapping[str, Placed], *, unknown: Iterable[str]) -> None:
        self._known = dict(known)
        self._unknown = tuple(unknown)
        self._changes: dict[str, Placed] = {}

    @property
    def unknown(self) -> tuple[str, ...]:
        """Where a customer the table has never seen may be live."""
        return self._unknown

    def __len__(self) -> int:
        """How many customers the table holds, the batch's changes not counted."""
        return len(self._known)

    @property
    def placements(self) -> dict[str, Placed]:
        """Every settled placement, by customer id (the batch's changes not included)."""
        return dict(self._known)

    def get(self, customer_id: str) -> Placed | None:
        """The newest placement seen for a customer, changes of this batch included."""
        return self._changes.get(customer_id) or self._known.get(customer_id)

    def route(self, command: Command) -> tuple[Target, ...]:
        """Where ``command`` goes, in the order the partition delivers commands.

        Empty for a command older than the newest one seen, and for a delete of a customer
        live nowhere.
        """
        held = self.get(command.key)
        if held is not None and command.version < held.version:
            return ()
        if held is None or command.version > held.version:
            held = placed_by(command, self._unknown if held is None else held.regions)
            self._changes[command.key] = held
        return targets_of(command, held)

    @property
    def changes(self) -> dict[str, Placed]:
        """The placements this batch changed, to commit with its offsets."""
        return dict(self._changes)

    def absorb(self, placements: Mapping[str, Placed]) -> None:
        """Take placements committed since this table was kept, by the partition's other
        owners: each newer than the one held (a table holds no changes then)."""
        self._known.update(placements)

    def settle(self) -> None:
        """Keep the batch's changes: they and its offsets are committed."""
        self._known.update(self._changes)
        self._changes.clear()

    def discard(self) -> None:
        """Forget the batch's changes: it was not committed and will be routed again."""
        self._changes.clear()


PLACED_ADAPTER: TypeAdapter[Placed] = TypeAdapter(Placed)
"""How a table entry is written to Kafka and read back (JSON)."""
UNKNOWN_ADAPTER: TypeAdapter[tuple[str, ...]] = TypeAdapter(tuple[str, ...])
"""How a table's ``unknown`` regions are written to Kafka and read back (JSON)."""
