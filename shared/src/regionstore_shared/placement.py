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

The table also orders the commands by the partition, not by the gateways' clocks. A gateway
answers 202 only once Kafka appended the command, so a write sent after another was acknowledged
stands after it in the partition. Each command is applied at an *effective* version: its own, or,
when the customer's newest command already holds a version at least as high (the gateway's clock
was behind), the next version above that one. Both groups compute it alike from the same
partition, so every region agrees, and the version guard then keeps the partition's order.

A command published again (``republished``: a retried idempotency key, a redriven dead letter, a
repair) keeps its version: it is the same write as its first publishing, which may already stand
in the partition before newer writes, and must not be lifted over those. It is lifted only over
a newest command appended before its ``after``, an offset its partition had certainly reached
when its gateway made it: that command stood in the partition before the write was ever sent,
and the write's first publishing, if it landed at all, landed after it (without this, a retry
whose first attempt died with its gateway lost to an earlier write of a gateway whose clock ran
ahead). The table keeps the offset of each customer's newest command for that. It remembers the
versions of the last few republished commands of each customer, so a first publishing that
lands late (still in a gateway's producer when the retry went through another) is known for
what it is too.

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
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from pydantic import TypeAdapter

from regionstore_shared.clock import MAX_NODE_ID, NODE_BITS
from regionstore_shared.schemas import Action, Applier, Command, Target, UpsertCustomer

REMEMBERED = 4
"""How many republished versions a customer's entry remembers."""


@dataclass(frozen=True, slots=True)
class Placed:
    """What the newest command of a customer did: its version, placement and tombstones."""

    version: int
    regions: tuple[str, ...]
    """The regions that hold the record at ``version``; empty after a delete."""
    left: tuple[str, ...]
    """The regions tombstoned at ``version``: the earlier placement, outside this one."""
    source: int | None = None
    """The version the command was published with, when it was lifted to ``version``."""
    republished: tuple[int, ...] = ()
    """The versions of the customer's last republished commands, oldest first."""
    position: int | None = None
    """The offset of the newest command in the partition, when it was routed with one."""

    @property
    def published(self) -> int:
        """The version the newest command was published with."""
        return self.version if self.source is None else self.source


class Routed(NamedTuple):
    """Where a command goes, and the version it is applied at there."""

    version: int
    targets: tuple[Target, ...]


def _appended_before(held: Placed, command: Command) -> bool:
    """Whether the customer's newest command stood in the partition before ``command`` was
    made, so before any publishing of it: known only when both offsets are."""
    return held.position is not None and command.after is not None and held.position < command.after


def lifted(above: int, version: int) -> int:
    """The version just above ``above``, with ``version``'s node bits (so still unique)."""
    return (((above >> NODE_BITS) + 1) << NODE_BITS) | (version & MAX_NODE_ID)


def placed_by(
    command: Command,
    before: tuple[str, ...],
    *,
    version: int | None = None,
    republished: tuple[int, ...] = (),
    position: int | None = None,
) -> Placed:
    """The placement ``command`` makes at ``version`` (its own by default) when the customer
    may be live in ``before``."""
    if isinstance(command, UpsertCustomer):
        regions = tuple(t.region for t in command.targets if t.action is Action.UPSERT)
    else:
        regions = ()
    effective = command.version if version is None else version
    return Placed(
        effective,
        regions,
        tuple(r for r in before if r not in regions),
        source=None if effective == command.version else command.version,
        republished=republished,
        position=position,
    )


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


class Known(Protocol):
    """A partition's committed placements, which a table reads and extends: a dict the table
    then owns, or a table on disk (:class:`~regionstore_shared.placement_local.LocalTable`)."""

    def get(self, customer_id: str, /) -> Placed | None: ...

    def update(self, placements: Mapping[str, Placed], /) -> None: ...

    def __len__(self) -> int: ...


class PlacementTable:
    """One partition's placements, and the changes of the batch not committed yet.

    :meth:`route` reads and extends the changes; :meth:`settle` keeps them once the batch and
    they are committed, :meth:`discard` forgets them when the batch is replayed instead.
    """

    def __init__(self, known: Known, *, unknown: Iterable[str]) -> None:
        self._known = known
        self._size = len(self._known)
        self._unknown = tuple(unknown)
        self._changes: dict[str, Placed] = {}
        self._added: set[str] = set()

    @property
    def unknown(self) -> tuple[str, ...]:
        """Where a customer the table has never seen may be live."""
        return self._unknown

    def __len__(self) -> int:
        """How many customers the table holds, the batch's changes not counted."""
        return self._size

    def get(self, customer_id: str) -> Placed | None:
        """The newest placement seen for a customer, changes of this batch included."""
        return self._changes.get(customer_id) or self._known.get(customer_id)

    def route(self, command: Command, position: int | None = None) -> Routed:
        """Where ``command``, at offset ``position`` of the partition, goes and at which
        version, in the order the partition delivers.

        No targets for a command superseded by the newest one seen (a republished command
        older than it), and for a delete of a customer live nowhere.
        """
        held = self.get(command.key)
        if held is None:
            self._added.add(command.key)
            first: tuple[int, ...] = (command.version,) if command.republished else ()
            return self._place(command, command.version, self._unknown, first, position)
        if command.version == held.published:
            return Routed(held.version, targets_of(command, held))
        remembered = held.republished
        if command.republished and command.version not in remembered:
            remembered = (*remembered, command.version)[-REMEMBERED:]
        if command.republished or command.version in remembered:
            if command.version > held.version:
                return self._place(command, command.version, held.regions, remembered, position)
            if _appended_before(held, command):
                version = lifted(held.version, command.version)
                return self._place(command, version, held.regions, remembered, position)
            if remembered is not held.republished:
                self._changes[command.key] = replace(held, republished=remembered)
            if command.version == held.version:
                return Routed(held.version, targets_of(command, held))
            return Routed(command.version, ())
        version = (
            command.version
            if command.version > held.version
            else lifted(held.version, command.version)
        )
        return self._place(command, version, held.regions, remembered, position)

    def _place(
        self,
        command: Command,
        version: int,
        before: tuple[str, ...],
        remembered: tuple[int, ...],
        position: int | None,
    ) -> Routed:
        placed = placed_by(
            command, before, version=version, republished=remembered, position=position
        )
        self._changes[command.key] = placed
        return Routed(version, targets_of(command, placed))

    @property
    def changes(self) -> dict[str, Placed]:
        """The placements this batch changed, to commit with its offsets."""
        return dict(self._changes)

    def settle(self) -> None:
        """Keep the batch's changes: they and its offsets are committed."""
        self._known.update(self._changes)
        self._size += len(self._added)
        self._changes.clear()
        self._added.clear()

    def discard(self) -> None:
        """Forget the batch's changes: it was not committed and will be routed again."""
        self._changes.clear()
        self._added.clear()


PLACED_ADAPTER: TypeAdapter[Placed] = TypeAdapter(Placed)
"""How a table entry is written to Kafka and read back (JSON)."""
UNKNOWN_ADAPTER: TypeAdapter[tuple[str, ...]] = TypeAdapter(tuple[str, ...])
"""How a table's ``unknown`` regions are written to Kafka and read back (JSON)."""
