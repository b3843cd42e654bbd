"""The one way a batch of commands reaches the regional stores.

Writer, replicator and recovery all call :class:`BatchApplier`; they differ only in which targets
they select and in what happens when a region cannot be written: the consumers park the commands
in the region's pending topic and move on, recovery stops and tries again later.

Every write is version-guarded: a document is inserted when the region has never seen the
customer, otherwise replaced under the filter ``{_id, _v: {$lt: version}}``, which the store
checks and applies atomically. Applying a command twice, or an old one after a new one, therefore
changes nothing; deletes are tombstones with a version, so a late replay cannot resurrect a
record. Insert first, because most commands reach a region that has never seen the customer (a
new customer, or the tombstone of one that lives elsewhere): those cost one write and no read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo import InsertOne, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

from regionstore_shared import metrics
from regionstore_shared.documents import VERSION, live_document, tombstone_document
from regionstore_shared.schemas import Action, DeleteCustomer, Target, UpsertCustomer
from regionstore_shared.status import NodeStatus

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000

Collection = AsyncCollection[dict[str, Any]]
Command = UpsertCustomer | DeleteCustomer
TargetSelector = Callable[[Command], Iterable[Target]]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded command and the bytes it arrived as; parking forwards the bytes unchanged."""

    command: Command
    raw: bytes


class RegionUnavailableError(Exception):
    """A region could not be written; part of the batch may have reached it, harmlessly."""

    def __init__(self, region: str, reason: str) -> None:
        super().__init__(f"region {region} unavailable: {reason}")
        self.region = region
        self.reason = reason


class StatusSource(Protocol):
    """Where the applier learns which regions are marked unavailable."""

    async def all(self) -> dict[str, NodeStatus]: ...


class Parker(Protocol):
    """Keeps commands for a region that cannot take them now (its pending topic)."""

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None: ...


class Suspicion:
    """Regions that failed recently, kept down locally for a short while.

    Without it every batch would wait a full server-selection timeout on a dead store before
    parking. This never changes the status in Redis: only people and operators flip that.
    """

    def __init__(self, hold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold_s = hold_s
        self._clock = clock
        self._until: dict[str, float] = {}

    def suspect(self, region: str) -> None:
        """Hold a region down for the configured time."""
        self._until[region] = self._clock() + self._hold_s

    def clear(self, region: str) -> None:
        """Forget a region's failure, after it was written successfully."""
        self._until.pop(region, None)

    def is_suspect(self, region: str) -> bool:
        """Whether a region failed within the hold time."""
        return self._clock() < self._until.get(region, 0.0)


@dataclass(slots=True)
class RegionResult:
    """What happened to one region's share of a batch."""

    written: int = 0
    stale: int = 0
    parked: int = 0
    parked_reason: str | None = None


@dataclass(slots=True)
class BatchResult:
    """What happened to a batch, region by region."""

    regions: dict[str, RegionResult] = field(default_factory=dict)

    @property
    def parked(self) -> int:
        """Commands parked in any region."""
        return sum(r.parked for r in self.regions.values())

    @property
    def written(self) -> int:
        """Commands that changed a region (stale ones, which changed nothing, not included)."""
        return sum(r.written for r in self.regions.values())


def _document_for(command: Command, target: Target) -> dict[str, Any]:
    if target.action is Action.TOMBSTONE:
        return tombstone_document(command)
    if not isinstance(command, UpsertCustomer):
        raise ValueError(f"command {command.command_id}: only upserts can upsert a region")
    return live_document(command)


def _newest_per_customer(
    envelopes: Iterable[tuple[Envelope, Target]],
) -> list[tuple[Envelope, Target]]:
    newest: dict[str, tuple[Envelope, Target]] = {}
    for envelope, target in envelopes:
        key = envelope.command.key
        held = newest.get(key)
        if held is None or held[0].command.version < envelope.command.version:
            newest[key] = (envelope, target)
    return list(newest.values())


def _trace(envelope: Envelope, target: Target) -> dict[str, object]:
    command = envelope.command
    return {
        "command_id": str(command.command_id),
        "customer_id": command.key,
        "version": command.version,
        "region": target.region,
        "action": target.action.value,
    }


class BatchApplier:
    """Applies batches of commands to the regional stores, one unordered bulk write per region."""

    def __init__(
        self,
        *,
        collections: Mapping[str, Collection],
        status: StatusSource,
        suspicion: Suspicion,
        parker: Parker | None,
        role: str,
        chunk: int = 250,
    ) -> None:
        """``chunk`` bounds the commands sent to a region per request."""
        self._chunk = chunk
        self._collections = collections
        self._status = status
        self._suspicion = suspicion
        self._parker = parker
        self._role = role

    async def apply(self, envelopes: Sequence[Envelope], select: TargetSelector) -> BatchResult:
        """Apply every selected target of every command, or park it.

        Raises :class:`RegionUnavailableError` when a region fails and there is no parker.
        Returns only when each region's share is written or durably parked, so the caller may
        commit the batch's offsets.
        """
        by_region: dict[str, list[tuple[Envelope, Target]]] = {}
        for envelope in envelopes:
            for target in select(envelope.command):
                by_region.setdefault(target.region, []).append((envelope, target))
        if not by_region:
            return BatchResult()
        statuses = await self._status.all()
        outcomes = await asyncio.gather(
            *(
                self._apply_region(region, _newest_per_customer(items), statuses.get(region))
                for region, items in by_region.items()
            )
        )
        return BatchResult(dict(zip(by_region, outcomes, strict=True)))

    async def _apply_region(
        self, region: str, items: list[tuple[Envelope, Target]], status: NodeStatus | None
    ) -> RegionResult:
        if status is NodeStatus.UNAVAILABLE:
            return await self._park(region, items, "marked_unavailable")
        if self._suspicion.is_suspect(region):
            return await self._park(region, items, "recent_failure")
        collection = self._collections.get(region)
        if collection is None:
            return await self._park(region, items, "unknown_region")
        written = stale = 0
        for start in range(0, len(items), self._chunk):
            chunk = items[start : start + self._chunk]
            try:
                chunk_written, chunk_stale = await self._write(collection, chunk)
            except PyMongoError as error:
                metrics.STORE_ERRORS.labels(region=region, kind=type(error).__name__).inc()
                log.warning(
                    "region write failed",
                    extra={"region": region, "error": str(error)[:300], "commands": len(chunk)},
                )
                self._suspicion.suspect(region)
                self._applied(region, items[:start], written, stale)
                parked = await self._park(region, items[start:], "write_failed")
                return RegionResult(
                    written=written,
                    stale=stale,
                    parked=parked.parked,
                    parked_reason=parked.parked_reason,
                )
            written += chunk_written
            stale += chunk_stale
        self._suspicion.clear(region)
        self._applied(region, items, written, stale)
        return RegionResult(written=written, stale=stale)

    def _applied(
        self, region: str, items: list[tuple[Envelope, Target]], written: int, stale: int
    ) -> None:
        metrics.COMMANDS_APPLIED.labels(region=region, role=self._role).inc(written)
        metrics.COMMANDS_STALE.labels(region=region).inc(stale)
        now_ms = time.time_ns() // 1_000_000
        lag = metrics.APPLY_LAG_SECONDS.labels(role=self._role)
        trace = log.isEnabledFor(logging.DEBUG)
        for envelope, target in items:
            lag.observe(max(0, now_ms - envelope.command.issued_at_ms) / 1000)
            if trace:
                log.debug("command applied", extra=_trace(envelope, target))

    async def _write(
        self, collection: Collection, items: list[tuple[Envelope, Target]]
    ) -> tuple[int, int]:
        """Write the newer commands; return (written, stale).

        Every document is inserted; those that collide on ``_id`` are replaced where the stored
        version is older, and the rest met a newer (or the same) version: they are stale.
        Documents are never removed, only tombstoned, so a collided one is still there.
        """
        inserts = [InsertOne(_document_for(e.command, t)) for e, t in items]
        collided = await self._insert(collection, inserts, items)
        if not collided:
            return len(items), 0
        replaces = [
            ReplaceOne(
                {"_id": e.command.key, VERSION: {"$lt": e.command.version}},
                _document_for(e.command, t),
            )
            for e, t in collided
        ]
        matched = (await collection.bulk_write(replaces, ordered=False)).matched_count
        stale = len(collided) - matched
        return len(items) - stale, stale

    @staticmethod
    async def _insert(
        collection: Collection,
        inserts: list[InsertOne[dict[str, Any]]],
        items: list[tuple[Envelope, Target]],
    ) -> list[tuple[Envelope, Target]]:
        try:
            await collection.bulk_write(inserts, ordered=False)
        except BulkWriteError as error:
            errors: list[dict[str, Any]] = error.details.get("writeErrors", [])
            if error.details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            return [items[e["index"]] for e in errors]
        return []

    async def _park(
        self, region: str, items: list[tuple[Envelope, Target]], reason: str
    ) -> RegionResult:
        if self._parker is None:
            raise RegionUnavailableError(region, reason)
        envelopes = [envelope for envelope, _ in items]
        await self._parker.park(region, envelopes, reason)
        metrics.COMMANDS_PARKED.labels(region=region, reason=reason).inc(len(envelopes))
        log.info(
            "commands parked",
            extra={
                "region": region,
                "reason": reason,
                "command_ids": [str(e.command.command_id) for e in envelopes],
            },
        )
        return RegionResult(parked=len(envelopes), parked_reason=reason)
