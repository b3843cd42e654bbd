"""Anti-entropy repair: compare the regions bucket by bucket and repair through the command path.

**How a region is read.** Each region's store sums up its live copies per bucket of ids and
placement group in one aggregation per first character of the ids (:mod:`.digests`; only a few
numbers per bucket leave the store), the regions at once, paced to a number of copies per
second over all regions. The buckets whose sums agree between the regions that must hold the
same customers are done. Consecutive buckets that differ, in the same placement groups, make a
*window*, read as one range of the ``_id`` index per region (the regions at once, a page at a
time): only the copies of the groups that differ, and every tombstone. A wiped region is read
in a few hundred ranges rather than one per bucket, and the groups it never held are not read.
The copies are checked again exactly and compared customer by customer
(:mod:`.divergence`). A customer about to be repaired is first looked up by id in the groups
that agree (a region restored from an old backup can hold it under its home before a move):
found there, it is read again whole, from every region.

A window is compared and repaired while the next one is read, one at a time and in order.

**How a customer is repaired.** Through the normal path:

- a copy ``missing`` or ``older`` in its placement: the newest version known anywhere (as
  read in its window) is published again to the command topic as the command that wrote it
  (same command id, same version, ``republished``), so the consumers route it through their
  placement tables and the version guard decides (:func:`regionstore_shared.domain.republished`);
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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from regionstore_recovery.digests import (
    Copy,
    Summary,
    bucket_differs,
    bucket_of,
    differing_groups,
    merged,
    share_of,
    summary_pipeline,
    summary_rows,
)
from regionstore_recovery.divergence import Finding, Kind, findings
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
    Collection,
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
COPIES_SUMMED = Counter(
    "regionstore_repair_copies_summed_total",
    "Live customer copies a region's store summed up for the repair (one aggregation per "
    "slice of ids; only the sums leave the store).",
    ["region"],
)
COPIES_READ = Counter(
    "regionstore_repair_copies_read_total",
    "Customer copies (id, version, flags) the repair read from a region's store, from the "
    "buckets whose sums differed.",
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
# Customers looked up at once by id (:meth:`Repairer._complete`): 5,000 took 0.4 s on a
# FerretDB store holding 450,000.
COMPLETE_CHUNK = 5000
# Every character a customer id may start with (``schemas.CustomerId``), in byte order.
ID_FIRST = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class Options:
    """How a pass reads and acts."""

    prefix: int = 3
    """Characters of the customer id that name its bucket."""
    page: int = 1000
    """Copies read from a store per request."""
    window: int = 20_000
    """Live copies (by the stores' sums) of consecutive differing buckets read together: one
    range of ids per region, its regions read at once."""
    copies_per_s: float | None = None
    """Copies read per second over every region; None reads as fast as the stores answer."""
    grace_s: float = 30.0
    """Customers written this recently are left for the next pass."""
    batch: int = 5000
    """Diverging copies gathered before they are repaired (whole windows: a batch may hold
    more), with one audit event and one publishing round per batch. A batch is repaired while
    the next window is read."""
    attempts: int = 3
    """Tries of a batch's audit event and of its publishing round before the batch is counted
    failed (left to the next pass): a broker that answered late once does not fail a repair."""
    retry_after_s: float = 1.0
    """The wait before the second try; doubled before each later one."""


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
    """Buckets holding a live copy in some region."""
    buckets_differing: int = 0
    """Buckets whose copies, read from every region, differ."""
    summed: dict[str, int] = field(default_factory=dict)
    """Per region, live copies its store summed up (nothing but their sums left the store)."""
    copies_read: dict[str, int] = field(default_factory=dict)
    """Per region, copies read (id, version, flags) from the buckets whose sums differed."""
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
    summing_s: float = 0.0
    """Of ``seconds``, until every region's sums were in."""
    acting_s: float = 0.0
    """Time spent repairing batches (the trail, publishing, tombstones), most of it while
    the pass read on."""
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


async def region_range(
    collection: Collection,
    region: str,
    window: Window,
    *,
    page: int,
    pacer: Pacer,
) -> list[dict[str, Any]]:
    """The documents a region holds in a window's range of ids, in ``_id`` order: of the
    window's differing placement groups and every tombstone, or all of them when the window's
    groups cannot be told. One query (a range of the ``_id`` index), taken a page at a time:
    a query per page (``_id`` above the last one read) took two to three times as long on
    FerretDB 2, each one sorting what was left of the range again."""
    query: dict[str, Any] = {
        # ids are ASCII: every id that starts with the last bucket sorts below it + DEL
        "_id": {"$gte": window.buckets[0], "$lt": window.buckets[-1] + "\x7f"}
    }
    if window.groups is not None:
        query["$or"] = [{HOME: {"$in": sorted(window.groups)}}, {DELETED: True}]
    cursor = collection.find(query).sort("_id", 1).batch_size(page)
    documents: list[dict[str, Any]] = []
    try:
        while part := await cursor.to_list(page):
            COPIES_READ.labels(region=region).inc(len(part))
            await pacer.took(len(part))
            documents += part
    finally:
        await cursor.close()
    return documents


@dataclass(frozen=True, slots=True)
class Window:
    """Consecutive differing buckets read together, one range of ids per region."""

    buckets: list[str]
    groups: frozenset[str] | None
    """The placement groups that differ, the only ones read (with every tombstone); None when
    a bucket holds a group the map does not know: every copy is read."""
    agreeing: frozenset[str] = frozenset()
    """The buckets' other groups: not read, so a customer about to be repaired is looked for
    in them first (:meth:`Repairer._complete`)."""


def windows(
    buckets: Sequence[str],
    differing: Mapping[str, frozenset[str] | None],
    sizes: Mapping[str, int],
    limit: int,
) -> list[list[str]]:
    """The differing buckets, in order, grouped so each group is read as one range of ids: a
    group never spans a bucket that agrees (its copies would be read for nothing), its buckets
    differ in the same placement groups, and it holds at most ``limit`` copies by ``sizes``
    (a larger bucket is a group of its own)."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for bucket in buckets:
        if current and (
            bucket not in differing
            or differing[bucket] != differing[current[0]]
            or size + sizes[bucket] > limit
        ):
            groups.append(current)
            current, size = [], 0
        if bucket in differing:
            current.append(bucket)
            size += sizes[bucket]
    if current:
        groups.append(current)
    return groups


async def region_summaries(
    collection: Collection, region: str, *, prefix: int, pacer: Pacer
) -> tuple[dict[str, dict[str | None, Summary]], int]:
    """A region's live copies summed up on its store, by bucket and placement group, one
    aggregation per first character of the ids; and how many copies that summed up."""
    summaries: dict[str, dict[str | None, Summary]] = {}
    counted = 0
    for first in ID_FIRST:
        match = {"_id": {"$gte": first, "$lt": chr(ord(first) + 1)}}
        cursor = await collection.aggregate(summary_pipeline(prefix, match))
        part = summary_rows(await cursor.to_list())
        copies = sum(summary[0] for groups in part.values() for summary in groups.values())
        COPIES_SUMMED.labels(region=region).inc(copies)
        counted += copies
        summaries.update(part)
        await pacer.took(copies)
    return summaries, counted


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

        ``going`` is asked after every window read: False stops the pass (a lost lease).
        """
        started = time.monotonic()
        report = Report(regions=tuple(self._collections), only=only, dry_run=dry_run)
        pacer = Pacer(self._options.copies_per_s)
        summaries = await self._summaries(report, pacer)
        report.summing_s = time.monotonic() - started
        batch = _Batch()
        chain = _Chain()
        try:
            for window in self._windows(summaries, report):
                read = await self._read_window(window, report, pacer)
                # Compared and repaired while the next window is read; in order, one at a time.
                await chain.then(partial(self._handle, window, read, batch, report, only, dry_run))
                if going is not None and not await going():
                    report.complete = False
                    break
            await chain.then(lambda: self._flush(batch, report, dry_run))
            await chain.done()
        finally:
            await chain.cancel()
        report.seconds = time.monotonic() - started
        if report.complete:
            LAST_PASS.set(self._clock())
        return report

    async def _summaries(
        self, report: Report, pacer: Pacer
    ) -> dict[str, dict[str, dict[str | None, Summary]]]:
        """Every region's sums, the regions' stores asked at once."""
        names = list(self._collections)
        results = await asyncio.gather(
            *(
                region_summaries(
                    self._collections[region], region, prefix=self._options.prefix, pacer=pacer
                )
                for region in names
            )
        )
        summaries: dict[str, dict[str, dict[str | None, Summary]]] = {}
        for region, (held, counted) in zip(names, results, strict=True):
            summaries[region], report.summed[region] = held, counted
        return summaries

    def _windows(
        self, summaries: Mapping[str, Mapping[str, Mapping[str | None, Summary]]], report: Report
    ) -> list[Window]:
        """The buckets whose sums differ, as windows to read."""
        every = sorted({bucket for held in summaries.values() for bucket in held})
        report.buckets = len(every)
        differing: dict[str, frozenset[str] | None] = {}
        held_groups: dict[str, set[str | None]] = {}
        sizes: dict[str, int] = {}
        for bucket in every:
            groups = {r: held[bucket] for r, held in summaries.items() if bucket in held}
            found = differing_groups(groups, self._regions)
            if found is not None and not found:
                BUCKETS.labels(differed="false").inc()
                continue
            differing[bucket] = found
            held_groups[bucket] = {group for held in groups.values() for group in held}
            sizes[bucket] = sum(
                summary[0]
                for held in groups.values()
                for group, summary in held.items()
                if found is None or group in found
            )
        result: list[Window] = []
        for buckets in windows(every, differing, sizes, self._options.window):
            read_groups = differing[buckets[0]]
            held = {str(g) for b in buckets for g in held_groups[b] if g is not None}
            agreeing = frozenset() if read_groups is None else frozenset(held - read_groups)
            result.append(Window(buckets, read_groups, agreeing))
        return result

    async def _read_window(self, window: Window, report: Report, pacer: Pacer) -> _Read:
        """Every region's copies in a window's buckets, the regions read at once."""
        names = list(self._collections)
        results = await asyncio.gather(
            *(
                region_range(
                    self._collections[region],
                    region,
                    window,
                    page=self._options.page,
                    pacer=pacer,
                )
                for region in names
            )
        )
        wanted = set(window.buckets)
        prefix = self._options.prefix
        read = _Read()
        for region, documents in zip(names, results, strict=True):
            report.copies_read[region] = report.copies_read.get(region, 0) + len(documents)
            for document in documents:
                copy = copy_of(document)
                # A shorter id is a bucket of its own, and the range also spans buckets where
                # no region holds a live copy: neither is this window's.
                bucket = bucket_of(copy.customer_id, prefix)
                if bucket in wanted:
                    read.shares.setdefault(bucket, {}).setdefault(region, []).append(copy)
                    read.documents[(region, copy.customer_id)] = document
        return read

    async def _handle(
        self,
        window: Window,
        read: _Read,
        batch: _Batch,
        report: Report,
        only: str | None,
        dry_run: bool,
    ) -> None:
        """Compare a window's buckets exactly, gather what diverges, repair a full batch."""
        candidates: dict[str, dict[str, Copy]] = {}
        for bucket in window.buckets:
            shares = read.shares.get(bucket, {})
            differs = bucket_differs({r: share_of(c) for r, c in shares.items()}, self._regions)
            BUCKETS.labels(differed=str(differs).lower()).inc()
            if not differs:
                continue
            report.buckets_differing += 1
            for customer_id, copies in merged(shares).items():
                if findings(copies, self._regions):
                    candidates[customer_id] = copies
        if window.agreeing and candidates:
            await self._complete(window, candidates, read)
        for copies in candidates.values():
            for finding in self._diverging(copies, report, only):
                document = read.documents.get((finding.newest_region, finding.customer_id))
                batch.add(finding, document)
        if len(batch.found) >= self._options.batch:
            await self._flush(batch, report, dry_run)

    async def _complete(
        self, window: Window, candidates: dict[str, dict[str, Copy]], read: _Read
    ) -> None:
        """Make whole the copies of the customers about to be repaired: a customer read from
        the differing groups may also hold a live copy in an agreeing group (a region restored
        from a backup older than the customer's move), and a repair from half its copies
        could publish an older version than one a region holds. Such customers are read
        again from every region, in full."""
        names = list(self._collections)
        agreeing = sorted(window.agreeing)
        # A group that agrees holds its customers live in its placement alone, and a region
        # holds one copy of a customer: where one was read, no other is to be found.
        could_hold = {r for group in agreeing for r in self._regions.placement_of_home(group)}
        wanted: dict[str, list[str]] = {}
        for customer_id, copies in candidates.items():
            for region in could_hold - copies.keys():
                wanted.setdefault(region, []).append(customer_id)

        async def elsewhere(region: str) -> set[str]:
            ids = sorted(wanted.get(region, ()))
            found: set[str] = set()
            for start in range(0, len(ids), COMPLETE_CHUNK):
                query = {
                    "_id": {"$in": ids[start : start + COMPLETE_CHUNK]},
                    HOME: {"$in": agreeing},
                }
                documents = await self._collections[region].find(query, {DELETED: 1}).to_list()
                found.update(str(d["_id"]) for d in documents if not d.get(DELETED))
            return found

        results = await asyncio.gather(*(elsewhere(r) for r in wanted))
        whole = sorted(set[str]().union(*results))
        if not whole:
            return
        full = await asyncio.gather(
            *(self._collections[r].find({"_id": {"$in": whole}}).to_list() for r in names)
        )
        for customer_id in whole:
            candidates[customer_id] = {}
        for region, documents in zip(names, full, strict=True):
            for document in documents:
                copy = copy_of(document)
                candidates[copy.customer_id][region] = copy
                read.documents[(region, copy.customer_id)] = document

    async def _flush(self, batch: _Batch, report: Report, dry_run: bool) -> None:
        if batch.found:
            found, documents = batch.found, batch.documents
            batch.found, batch.documents = [], {}
            acted = time.monotonic()
            try:
                await self._act(found, documents, report, dry_run)
            finally:
                report.acting_s += time.monotonic() - acted

    def _diverging(
        self, copies: Mapping[str, Copy], report: Report, only: str | None
    ) -> list[Finding]:
        """One customer's findings to repair (of ``only`` when given); none while it
        settles."""
        now_ms = self._clock() * 1000
        grace_ms = self._options.grace_s * 1000

        def recent(copy: Copy) -> bool:
            # A copy stamped later than this clock by more than the grace was stamped by a
            # clock that ran ahead (a writer's): its time says nothing, and holding it back
            # would leave the customer unrepaired for as long as that clock was ahead.
            applied = copy.applied_at_ms or 0
            return now_ms - grace_ms < applied <= now_ms + grace_ms

        wrong = [f for f in findings(copies, self._regions) if only in (None, f.region)]
        if not wrong:
            return []
        if any(recent(c) for c in copies.values()):
            report.settling += 1
            return []
        for finding in wrong:
            report.note(finding)
        return wrong

    async def _act(
        self,
        found: list[Finding],
        documents: Mapping[str, dict[str, Any]],
        report: Report,
        dry_run: bool,
    ) -> None:
        acting = [f for f in found if f.kind is not Kind.LOST]
        for finding in found:
            REPAIRS.labels(
                region=finding.region,
                kind=finding.kind.value,
                repaired=str(not dry_run and finding.kind is not Kind.LOST).lower(),
            ).inc()
        if dry_run or not acting:
            return
        plan = self._plan(acting, documents, report)
        if not plan.commands and not plan.tombstones:
            return
        event = self._event(plan)
        try:
            await self._tried(lambda: self._trail.record(event))
        except AuditUnavailableError as error:
            log.warning("repairs not made: the audit trail cannot be written", exc_info=error)
            report.failed += plan.customers
            return
        try:
            # Publishing again what was published is harmless: the version guard decides.
            await self._tried(lambda: self._publisher.publish(plan.commands))
            report.republished += len(plan.commands)
        except Exception:
            log.warning("repairs not published; the next pass tries again", exc_info=True)
            report.failed += len(plan.commands)
        try:
            report.tombstoned += await self._tombstones.tombstone(plan.tombstones)
        except Exception:
            log.warning("repair tombstones not written; the next pass tries again", exc_info=True)
            report.failed += len(plan.tombstones)

    async def _tried(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """``attempt()`` until it succeeds, ``attempts`` times at most; the last error is raised."""
        wait = self._options.retry_after_s
        for left in range(self._options.attempts - 1, -1, -1):
            try:
                await attempt()
                return
            except Exception as error:
                if left == 0:
                    raise
                log.info("repair batch refused, trying again", extra={"error": str(error)})
                await asyncio.sleep(wait)  # a backoff between tries
                wait *= 2

    def _plan(
        self, acting: list[Finding], documents: Mapping[str, dict[str, Any]], report: Report
    ) -> _Plan:
        """The commands to publish again and the tombstones to write, from the newest copies
        (``documents``: each customer's newest live copy in full, as read)."""
        by_customer: dict[str, list[Finding]] = {}
        for finding in acting:
            by_customer.setdefault(finding.customer_id, []).append(finding)
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
            return None
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
class _Read:
    """A window's copies, by bucket and region, and the documents they were read from."""

    shares: dict[str, dict[str, list[Copy]]] = field(default_factory=dict)
    documents: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Batch:
    """Diverging copies gathered for repair, and the newest copies they are repaired from."""

    found: list[Finding] = field(default_factory=list)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, finding: Finding, document: dict[str, Any] | None) -> None:
        self.found.append(finding)
        if document is not None:
            self.documents[finding.customer_id] = document


class _Chain:
    """Jobs run one after another, each in a task of its own, while the caller goes on: the
    pass reads the next window while the last one is compared and repaired."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def then(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``job`` once the job before is done (its failure is raised here)."""
        await self.done()
        self._task = asyncio.create_task(job())

    async def done(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def cancel(self) -> None:
        """Stop a job under way (the pass failed or was cancelled)."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait([task])


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
