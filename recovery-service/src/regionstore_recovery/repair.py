"""Anti-entropy repair: compare the regions bucket by bucket and repair through the command path.

**How a region is read.** Each region's store is read as a stream of ``(_id, _v, _deleted,
_home, _cmd, _applied_at)`` in ``_id`` order, a page at a time (``_id > last`` sorted by
``_id``: the ``_id`` index walked, never the customers' fields), paced to a number of copies per
second over all regions. The streams are merged bucket by bucket (:mod:`.digests`); a bucket
whose digests agree is dropped at once, and only the customers of a bucket that differs are
compared copy by copy (:mod:`.divergence`). The stores are not asked to compute the digests:
DocumentDB has no hash in its aggregation language, and a sum of versions overflows and can
cancel out; a projection streamed in ``_id`` order reads what a hash needs and no more.

**How a customer is repaired.** Through the normal path:

- a copy ``missing`` or ``older`` in its placement: the newest version known anywhere is read
  in full and published again to the command topic as the command that wrote it (same command
  id, same version, ``republished``), so the consumers route it through their placement tables
  and the version guard decides (:func:`regionstore_shared.domain.republished`);
- a live copy whose newest version is a delete: the delete is published again the same way;
- a live copy ``outside`` the placement, or live after a delete: a tombstone at the newest
  version is written in that region by the one version-guarded apply
  (:class:`~regionstore_shared.apply.BatchApplier`). A placement table only tombstones the
  regions it saw a customer leave, and a region restored from a backup can hold a copy from
  before any move the table remembers; a guarded tombstone at the newest version changes
  nothing where a newer write landed since.

A customer written within ``grace_s`` is left for the next pass: its writes may still be on
their way to some region. A pass records what it repairs in the audit trail before it acts
(one event per batch of repairs), like every other action, and counts it in the metrics.

What it cannot repair: a customer whose every copy was lost, or whose newest write (a move) is
left only as tombstones; ``lost`` counts the latter, the former cannot be seen at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from regionstore_recovery.digests import Copy, bucket_differs, bucket_of, merged, share_of
from regionstore_recovery.divergence import Finding, Kind, findings
from regionstore_shared.apply import Collection
from regionstore_shared.audit_trail import (
    REPAIR,
    AuditAction,
    AuditEvent,
    AuditUnavailableError,
    SystemActor,
    new_event,
)
from regionstore_shared.documents import (
    APPLIED_AT,
    COMMAND_ID,
    DELETED,
    HOME,
    VERSION,
    customer_from_document,
)
from regionstore_shared.domain import delete_command, republished, upsert_command
from regionstore_shared.regions import RegionMap, ZipOutOfRangeError
from regionstore_shared.schemas import Command

log = logging.getLogger(__name__)

REPAIRS = Counter(
    "regionstore_repairs_total",
    "Customer copies the anti-entropy repair found diverging, by region and kind (missing, "
    "older, outside, deleted, lost), and whether it acted (repaired) or not (dry run, lost).",
    ["region", "kind", "repaired"],
)
COPIES_READ = Counter(
    "regionstore_repair_copies_read_total",
    "Customer copies (id, version, flags) the repair read from a region's store.",
    ["region"],
)
BUCKETS = Counter(
    "regionstore_repair_buckets_total",
    "Buckets of customer ids the repair compared, and whether their digests differed.",
    ["differed"],
)
LAST_PASS = Gauge(
    "regionstore_repair_last_pass_timestamp_seconds",
    "When the last complete repair pass ended (Unix time).",
)

PROJECTION = {VERSION: 1, DELETED: 1, HOME: 1, COMMAND_ID: 1, APPLIED_AT: 1}


@dataclass(frozen=True, slots=True)
class Options:
    """How a pass reads and acts."""

    prefix: int = 3
    """Characters of the customer id that name its bucket."""
    page: int = 1000
    """Copies read from a store per request."""
    copies_per_s: float | None = None
    """Copies read per second over every region; None reads as fast as the stores answer."""
    grace_s: float = 30.0
    """Customers written this recently are left for the next pass."""
    batch: int = 500
    """Diverging copies gathered before they are repaired (whole buckets: a batch may hold
    more), with one audit event and one publishing round per batch."""


class Publisher(Protocol):
    """Publishes commands to the command topic; raises unless every one was acknowledged."""

    async def publish(self, commands: Sequence[Command]) -> None: ...


class Tombstones(Protocol):
    """Writes a version-guarded tombstone of each command in one region; how many it wrote."""

    async def tombstone(self, items: Sequence[tuple[Command, str]]) -> int: ...


class Trail(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


@dataclass(slots=True)
class Report:
    """What a pass compared, found and did."""

    regions: tuple[str, ...] = ()
    only: str | None = None
    dry_run: bool = False
    buckets: int = 0
    buckets_differing: int = 0
    copies_read: dict[str, int] = field(default_factory=dict)
    found: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per region, per kind."""
    settling: int = 0
    """Customers left for the next pass: written within the grace period."""
    republished: int = 0
    tombstoned: int = 0
    unrepairable: int = 0
    """Customers found diverging whose newest copy could not make a command."""
    failed: int = 0
    """Repairs not made: the trail, Kafka or a store refused; the next pass tries again."""
    complete: bool = True
    """False when the pass stopped early (its lease lost, or a stop)."""
    seconds: float = 0.0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def diverging(self) -> int:
        """Copies found diverging, every kind."""
        return sum(sum(kinds.values()) for kinds in self.found.values())

    def note(self, finding: Finding) -> None:
        kinds = self.found.setdefault(finding.region, {})
        kinds[finding.kind.value] = kinds.get(finding.kind.value, 0) + 1
        sample = self.examples.setdefault(finding.kind.value, [])
        if len(sample) < 5:
            sample.append(f"{finding.customer_id}@{finding.region}")


class Pacer:
    """Keeps reads to ``per_s`` copies a second on average (no bound when None)."""

    def __init__(self, per_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_s = per_s
        self._clock = clock
        self._next = clock()

    def delay(self, copies: int) -> float:
        """Seconds to wait after reading ``copies`` more."""
        if self._per_s is None:
            return 0.0
        now = self._clock()
        self._next = max(self._next, now) + copies / self._per_s
        return max(0.0, self._next - now)

    async def took(self, copies: int) -> None:
        if (wait := self.delay(copies)) > 0:
            await asyncio.sleep(wait)  # the pace itself, not a wait for readiness


def copy_of(document: Mapping[str, Any]) -> Copy:
    """A store's document as the repair compares it."""
    applied = document.get(APPLIED_AT)
    return Copy(
        customer_id=str(document["_id"]),
        version=int(document[VERSION]),
        deleted=bool(document.get(DELETED)),
        home=document.get(HOME),
        applied_at_ms=round(applied.timestamp() * 1000) if isinstance(applied, datetime) else None,
        command_id=document.get(COMMAND_ID),
    )


async def region_copies(
    collection: Collection, region: str, *, page: int, pacer: Pacer
) -> AsyncIterator[Copy]:
    """Every copy a region holds, in ``_id`` order, a page per request."""
    after: str | None = None
    while True:
        query = {} if after is None else {"_id": {"$gt": after}}
        documents = await collection.find(query, PROJECTION).sort("_id", 1).limit(page).to_list()
        COPIES_READ.labels(region=region).inc(len(documents))
        for document in documents:
            yield copy_of(document)
        if len(documents) < page:
            return
        after = str(documents[-1]["_id"])
        await pacer.took(len(documents))


async def buckets(
    copies: AsyncIterator[Copy], prefix: int
) -> AsyncIterator[tuple[str, list[Copy]]]:
    """A stream of copies in id order, cut into buckets."""
    key: str | None = None
    held: list[Copy] = []
    async for copy in copies:
        bucket = bucket_of(copy.customer_id, prefix)
        if bucket != key:
            if key is not None:
                yield key, held
            key, held = bucket, []
        held.append(copy)
    if key is not None:
        yield key, held


async def merged_buckets(
    streams: Mapping[str, AsyncIterator[tuple[str, list[Copy]]]],
) -> AsyncIterator[dict[str, list[Copy]]]:
    """Each bucket any region holds, with every region's share of it (regions holding none of
    it left out), in bucket order."""
    heads: dict[str, tuple[str, list[Copy]] | None] = {}
    for region, stream in streams.items():
        heads[region] = await anext(stream, None)
    while True:
        keys = [head[0] for head in heads.values() if head is not None]
        if not keys:
            return
        key = min(keys)
        shares: dict[str, list[Copy]] = {}
        for region, head in heads.items():
            if head is not None and head[0] == key:
                shares[region] = head[1]
                heads[region] = await anext(streams[region], None)
        yield shares


class Repairer:
    """One pass over every region: compare, then repair what differs (or only report it)."""

    def __init__(
        self,
        *,
        collections: Mapping[str, Collection],
        regions: RegionMap,
        publisher: Publisher,
        tombstones: Tombstones,
        trail: Trail,
        actor: SystemActor = REPAIR,
        options: Options | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._collections = collections
        self._regions = regions
        self._publisher = publisher
        self._tombstones = tombstones
        self._trail = trail
        self._actor = actor
        self._options = Options() if options is None else options
        self._clock = clock

    async def run(
        self,
        *,
        only: str | None = None,
        dry_run: bool = False,
        going: Callable[[], Awaitable[bool]] | None = None,
    ) -> Report:
        """A whole pass; with ``only``, the findings of that region alone are repaired.

        ``going`` is asked after every bucket: False stops the pass (a lost lease).
        """
        started = time.monotonic()
        options = self._options
        names = tuple(self._collections)
        report = Report(regions=names, only=only, dry_run=dry_run)
        report.copies_read = dict.fromkeys(names, 0)
        pacer = Pacer(options.copies_per_s)
        streams = {
            region: buckets(
                _counted(
                    region_copies(collection, region, page=options.page, pacer=pacer),
                    report.copies_read,
                    region,
                ),
                options.prefix,
            )
            for region, collection in self._collections.items()
        }
        pending: list[Finding] = []
        async for shares in merged_buckets(streams):
            report.buckets += 1
            differs = bucket_differs(
                {r: share_of(copies) for r, copies in shares.items()}, self._regions
            )
            BUCKETS.labels(differed=str(differs).lower()).inc()
            if differs:
                report.buckets_differing += 1
                pending += self._diverging(shares, report, only)
            if len(pending) >= options.batch:
                await self._act(pending, report, dry_run)
                pending = []
            if going is not None and not await going():
                report.complete = False
                break
        if pending:
            await self._act(pending, report, dry_run)
        report.seconds = time.monotonic() - started
        if report.complete:
            LAST_PASS.set(self._clock())
        return report

    def _diverging(
        self, shares: Mapping[str, list[Copy]], report: Report, only: str | None
    ) -> list[Finding]:
        settled_before_ms = (self._clock() - self._options.grace_s) * 1000
        found: list[Finding] = []
        for copies in merged(shares).values():
            wrong = [f for f in findings(copies, self._regions) if only in (None, f.region)]
            if not wrong:
                continue
            if any((c.applied_at_ms or 0) > settled_before_ms for c in copies.values()):
                report.settling += 1
                continue
            for finding in wrong:
                report.note(finding)
            found += wrong
        return found

    async def _act(self, found: list[Finding], report: Report, dry_run: bool) -> None:
        acting = [f for f in found if f.kind is not Kind.LOST]
        for finding in found:
            REPAIRS.labels(
                region=finding.region,
                kind=finding.kind.value,
                repaired=str(not dry_run and finding.kind is not Kind.LOST).lower(),
            ).inc()
        if dry_run or not acting:
            return
        plan = await self._plan(acting, report)
        if not plan.commands and not plan.tombstones:
            return
        try:
            await self._trail.record(self._event(plan))
        except AuditUnavailableError as error:
            log.warning("repairs not made: the audit trail cannot be written", exc_info=error)
            report.failed += plan.customers
            return
        try:
            await self._publisher.publish(plan.commands)
            report.republished += len(plan.commands)
        except Exception:
            log.warning("repairs not published; the next pass tries again", exc_info=True)
            report.failed += len(plan.commands)
        try:
            report.tombstoned += await self._tombstones.tombstone(plan.tombstones)
        except Exception:
            log.warning("repair tombstones not written; the next pass tries again", exc_info=True)
            report.failed += len(plan.tombstones)

    async def _plan(self, acting: list[Finding], report: Report) -> _Plan:
        """The commands to publish again and the tombstones to write, from the newest copies."""
        by_customer: dict[str, list[Finding]] = {}
        for finding in acting:
            by_customer.setdefault(finding.customer_id, []).append(finding)
        documents = await self._newest_documents(by_customer)
        plan = _Plan(customers=len(by_customer))
        for customer_id, wrong in by_customer.items():
            newest = wrong[0].newest
            command = self._command(newest, documents.get(customer_id))
            if command is None:
                report.unrepairable += 1
                continue
            if any(f.kind in (Kind.MISSING, Kind.OLDER, Kind.DELETED) for f in wrong):
                plan.commands.append(republished(command))
            plan.tombstones += [
                (command, f.region) for f in wrong if f.kind in (Kind.OUTSIDE, Kind.DELETED)
            ]
            plan.regions.update(f.region for f in wrong)
        return plan

    async def _newest_documents(
        self, by_customer: Mapping[str, list[Finding]]
    ) -> dict[str, dict[str, Any]]:
        """The newest live copies in full, read from the regions that hold them."""
        wanted: dict[str, list[str]] = {}
        for customer_id, wrong in by_customer.items():
            if not wrong[0].newest.deleted:
                wanted.setdefault(wrong[0].newest_region, []).append(customer_id)
        documents: dict[str, dict[str, Any]] = {}
        for region, ids in wanted.items():
            cursor = self._collections[region].find({"_id": {"$in": ids}})
            async for document in cursor:
                documents[str(document["_id"])] = document
        return documents

    def _command(self, newest: Copy, document: dict[str, Any] | None) -> Command | None:
        """The command that wrote ``newest``, made again; None when it cannot be."""
        command_id = _uuid(newest.command_id)
        now_ms = round(self._clock() * 1000)
        if newest.deleted:
            return delete_command(
                newest.customer_id,
                regions=self._regions,
                version=newest.version,
                issued_at_ms=now_ms,
                command_id=command_id,
            )
        if document is None or int(document[VERSION]) != newest.version:
            return None  # overwritten since it was compared: the next pass sees the new one
        try:
            customer = customer_from_document(document)
            return upsert_command(
                customer,
                regions=self._regions,
                version=newest.version,
                issued_at_ms=now_ms,
                command_id=command_id,
            )
        except (KeyError, ValidationError, ZipOutOfRangeError):
            return None

    def _event(self, plan: _Plan) -> AuditEvent:
        return new_event(
            self._actor,
            AuditAction.CUSTOMER_REPAIR,
            ",".join(sorted(plan.regions)),
            {
                "customers": plan.customers,
                "republished": len(plan.commands),
                "tombstoned": len(plan.tombstones),
            },
        )


@dataclass(slots=True)
class _Plan:
    customers: int
    commands: list[Command] = field(default_factory=list)
    tombstones: list[tuple[Command, str]] = field(default_factory=list)
    regions: set[str] = field(default_factory=set)


def _uuid(text: str | None) -> uuid.UUID | None:
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def _counted(
    copies: AsyncIterator[Copy], counts: dict[str, int], region: str
) -> AsyncIterator[Copy]:
    async for copy in copies:
        counts[region] += 1
        yield copy
