"""The one way a batch of commands reaches the regional stores.

Writer, replicator and recovery all call :class:`BatchApplier`; they differ only in which targets
they select and in what happens when a region cannot be written: the consumers park the commands
in the region's parking topic and move on, recovery stops and tries again later. A command the
region refuses for itself (see :mod:`regionstore_shared.failures`) is neither: it goes to the
dead-letter topic alone, and the rest of the batch goes on.

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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry.trace import SpanKind
from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from regionstore_shared import metrics
from regionstore_shared.documents import VERSION, Collection, live_document, tombstone_document
from regionstore_shared.failures import (
    WRITE_ERRORS,
    Failure,
    classify,
    describe,
    describe_write_error,
)
from regionstore_shared.logs import Outages
from regionstore_shared.personal import (
    CustomerKey,
    ErasedError,
    KeyName,
    KeyStore,
    KeysUnreadableError,
    key_name,
    opened,
)
from regionstore_shared.schemas import Action, Command, Target, UpsertCustomer
from regionstore_shared.status import NodeStatus
from regionstore_shared.tracing import (
    CommandTracer,
    Headers,
    command_tracer,
    end_all,
    ending,
    headers_of,
    trace_id_of,
)

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000

TargetSelector = Callable[[Command], Iterable[Target]]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded command and the bytes it arrived as (a dead letter forwards them unchanged)."""

    command: Command
    raw: bytes
    topic: str = ""
    """The topic it was read from, for the dead-letter headers; empty when not from Kafka."""
    offset: int | None = None
    """Its offset in that topic; None when not from Kafka."""
    trace: Headers = ()
    """The trace headers it arrived with (W3C ``traceparent``), forwarded wherever it goes."""

    def stamped(self, version: int) -> Envelope:
        """The command at its effective ``version``, its offset in the command topic recorded
        as its ``position``: what the regions hold and a parked copy carries."""
        command = self.command.model_copy(update={"version": version, "position": self.offset})
        return Envelope(command, self.raw, self.topic, self.offset, self.trace)

    def traced(self, trace: Headers) -> Envelope:
        """The same command, sent on under another span (a parked copy under its park span)."""
        return Envelope(self.command, self.raw, self.topic, self.offset, trace)

    @property
    def trace_id(self) -> str | None:
        """The id of the trace the command belongs to, if it came with one."""
        return trace_id_of(self.trace)


Item = tuple[Envelope, Target]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A command a region refused for good, and the store's reason."""

    envelope: Envelope
    error: str


class RegionUnavailableError(Exception):
    """A region could not be written; part of the batch may have reached it, harmlessly."""

    def __init__(self, region: str, reason: str) -> None:
        super().__init__(f"region {region} unavailable: {reason}")
        self.region = region
        self.reason = reason


class CommandRejectedError(Exception):
    """A region refused commands for good and the applier has no dead-letter sink for them."""

    def __init__(self, region: str, rejected: Sequence[Rejected]) -> None:
        ids = ", ".join(str(r.envelope.command.command_id) for r in rejected[:5])
        super().__init__(
            f"region {region} refused {len(rejected)} command(s) for good ({ids}; first: "
            f"{rejected[0].error[:300]}) and the applier has no dead-letter sink"
        )
        self.region = region
        self.rejected = list(rejected)


class StatusSource(Protocol):
    """Where the applier learns which regions are marked unavailable."""

    async def all(self) -> dict[str, NodeStatus]: ...


class Parker(Protocol):
    """Keeps commands for a region that cannot take them now (its parking topic)."""

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None: ...


class DeadLetterSink(Protocol):
    """Takes commands a region refused for good (the dead-letter topic)."""

    async def send_commands(self, region: str, rejected: Sequence[Rejected]) -> None:
        """Return only once every command is durably stored with its reason."""
        ...


class AppliedSink(Protocol):
    """Hears how many documents each region's share of a batch changed (the console's totals)."""

    def add(self, region: str, count: int) -> None:
        """Must return at once and never raise: it is on the apply path."""
        ...


class Suspicion:
    """Regions that failed recently, kept down locally for a short while.

    Without it every batch would wait a full server-selection timeout on a dead store before
    parking. This never changes the status in Redis itself; the failure detector, which
    hears of every suspicion (regionstore_shared.health), may.
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
    deadlettered: int = 0


@dataclass(slots=True)
class BatchOutcome:
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

    @property
    def deadlettered(self) -> int:
        """Commands a region refused for good, sent to the dead-letter topic."""
        return sum(r.deadlettered for r in self.regions.values())


@dataclass(slots=True)
class _Written:
    """What one write of some of a region's commands did."""

    written: int = 0
    stale: int = 0
    rejected: list[tuple[Item, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Progress:
    """How far a region's share got: its first ``done`` commands are written, stale or refused."""

    done: int = 0
    started_ns: int = field(default_factory=time.time_ns)
    """When the region's share began: where the commands' apply spans start."""
    written: int = 0
    stale: int = 0
    rejected: list[tuple[Item, str]] = field(default_factory=list)

    def add(self, outcome: _Written, commands: int) -> None:
        self.done += commands
        self.written += outcome.written
        self.stale += outcome.stale
        self.rejected.extend(outcome.rejected)

    def applied(self, items: list[Item]) -> list[Item]:
        """The handled commands that reached the region (written or stale)."""
        if not self.rejected:
            return items[: self.done]
        refused = {id(envelope) for (envelope, _), _ in self.rejected}
        return [item for item in items[: self.done] if id(item[0]) not in refused]


def _document_for(command: Command, target: Target) -> dict[str, Any]:
    if target.action is Action.TOMBSTONE or (
        isinstance(command, UpsertCustomer) and not command.is_open
    ):
        # An upsert still sealed here was erased (see _open): it stands for a tombstone.
        return tombstone_document(command)
    if not isinstance(command, UpsertCustomer):
        raise ValueError(f"command {command.command_id}: only upserts can upsert a region")
    return live_document(command)


def _newest_per_customer(envelopes: Iterable[Item]) -> list[Item]:
    """The newest command of each customer, in customer id order.

    A store may run a bulk write as one transaction that locks its documents in request order
    (DocumentDB does): appliers that write overlapping customers in different orders then
    deadlock, each costing a second before the store aborts one. In one order they only queue.
    """
    newest: dict[str, Item] = {}
    for envelope, target in envelopes:
        key = envelope.command.key
        held = newest.get(key)
        if held is None or held[0].command.version < envelope.command.version:
            newest[key] = (envelope, target)
    return [newest[key] for key in sorted(newest)]


def _first_failure(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a batch raises when region shares fail: the first one, unwrapped.

    Callers catch :class:`RegionUnavailableError` and :class:`CommandRejectedError` as such
    (recovery's drainer pauses on the former), not inside an ExceptionGroup. The group holds
    the shares that failed, in the order they failed, and never the siblings it cancelled;
    a share that failed alongside the first is noted on it, not dropped.
    """
    first, *others = failed.exceptions
    for other in others:
        first.add_note(f"another region share of the batch failed too: {other!r}")
    return first


def _trace(envelope: Envelope, target: Target) -> dict[str, object]:
    command = envelope.command
    return {
        "command_id": str(command.command_id),
        "trace_id": envelope.trace_id,
        "customer_id": command.key,
        "version": command.version,
        "region": target.region,
        "action": target.action.value,
    }


def _span_attributes(
    role: str, region: str, envelope: Envelope, outcome: str, **more: str
) -> dict[str, str | int]:
    command = envelope.command
    return {
        "regionstore.role": role,
        "regionstore.region": region,
        "regionstore.command_id": str(command.command_id),
        "regionstore.customer_id": command.key,
        "regionstore.version": command.version,
        "regionstore.outcome": outcome,
        **{f"regionstore.{name}": value for name, value in more.items()},
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
        dead_letters: DeadLetterSink | None = None,
        outages: Outages | None = None,
        applied: AppliedSink | None = None,
        tracer: CommandTracer | None = None,
        chunk: int = 250,
        keyring: KeyStore | None = None,
    ) -> None:
        """``chunk`` bounds the commands sent to a region per request; ``outages`` hears of
        every region write that fails for the region's sake and every one that succeeds;
        ``applied`` of the documents each region's share changed; ``tracer`` makes a span per
        command and region, in the command's trace; ``keyring`` opens sealed upserts (without
        one, a sealed upsert is applied as erased)."""
        self._chunk = chunk
        self._keyring = keyring
        self._collections = collections
        self._status = status
        self._suspicion = suspicion
        self._parker = parker
        self._dead_letters = dead_letters
        self._outages = Outages() if outages is None else outages
        self._applied_sink = applied
        self._role = role
        # The process's tracer unless one is given: every service's applier traces once the
        # service configured tracing (regionstore_shared.tracing).
        self._tracer = tracer if tracer is not None else command_tracer()
        # Recovery's applies are the drains of the commands parked earlier.
        self._verb = "drain" if role == "recovery" else "apply"

    async def apply(self, envelopes: Sequence[Envelope], select: TargetSelector) -> BatchOutcome:
        """Apply every selected target of every command, park it, or dead-letter it.

        Raises :class:`RegionUnavailableError` when a region fails and there is no parker, and
        :class:`CommandRejectedError` when a region refuses a command and there is no
        dead-letter sink; when shares fail, the first failure is raised as itself, after the
        other regions' shares were cancelled and awaited. Returns only when each region's
        share is written, durably parked or durably dead-lettered, so the caller may commit
        the batch's offsets.
        """
        if self._tracer is None:
            return await self._apply(envelopes, select)
        with self._tracer.batch(self._role, (e.trace for e in envelopes), len(envelopes)):
            return await self._apply(envelopes, select)

    async def _apply(self, envelopes: Sequence[Envelope], select: TargetSelector) -> BatchOutcome:
        by_region: dict[str, list[Item]] = {}
        for envelope in envelopes:
            for target in select(envelope.command):
                by_region.setdefault(target.region, []).append((envelope, target))
        if not by_region:
            return BatchOutcome()
        by_region, waiting = await self._open(by_region)
        statuses = await self._status.all()
        # A TaskGroup, not gather: when one region's share raises, the others are cancelled
        # and awaited before the error leaves, so no region write outlives the batch (nor the
        # clients its caller may then close). The caller commits nothing of a batch that
        # raised and replays it, so a share cut short mid-write is harmless: the apply is
        # idempotent.
        try:
            async with asyncio.TaskGroup() as group:
                shares = {
                    region: group.create_task(
                        self._apply_share(region, items, waiting, statuses.get(region))
                    )
                    for region, items in by_region.items()
                }
        except BaseExceptionGroup as failed:
            error = _first_failure(failed)
        else:
            return BatchOutcome({region: share.result() for region, share in shares.items()})
        # Raised outside the handler: inside it the group, which holds the error, would
        # become the error's context.
        raise error

    async def _apply_share(
        self,
        region: str,
        items: list[Item],
        waiting: frozenset[int],
        status: NodeStatus | None,
    ) -> RegionResult:
        """One region's share: its newest command of each customer applied, except those whose
        keys could not be read in time (``waiting``, by identity), parked as for a region that
        cannot be written (recovery applies them once it reads their keys)."""
        newest = _newest_per_customer(items)
        held = [item for item in newest if id(item[0]) in waiting]
        if not held:
            return await self._apply_region(region, newest, status)
        ready = [item for item in newest if id(item[0]) not in waiting]
        result = await self._apply_region(region, ready, status) if ready else RegionResult()
        parked = await self._park(region, held, "key_unreadable")
        result.parked += parked.parked
        result.parked_reason = result.parked_reason or parked.parked_reason
        return result

    async def _open(
        self, by_region: dict[str, list[Item]]
    ) -> tuple[dict[str, list[Item]], frozenset[int]]:
        """The items, their sealed upserts opened with their customers' keys (a local table);
        an upsert whose key is gone stays sealed, and is applied as erased. Also the identities
        of the upserts whose keys could not be read in time: those wait, never taken as
        erased. Targets were selected before: a selector may know a command by its identity."""
        sealed = {
            id(envelope): envelope
            for items in by_region.values()
            for envelope, _ in items
            if isinstance(envelope.command, UpsertCustomer) and not envelope.command.is_open
        }
        if not sealed:
            return by_region, frozenset()
        names = {
            ident: name
            for ident, e in sealed.items()
            if isinstance(e.command, UpsertCustomer) and (name := key_name(e.command)) is not None
        }
        unknown: frozenset[KeyName] = frozenset()
        try:
            keys = await self._keyring.find(names.values()) if self._keyring is not None else {}
        except KeysUnreadableError as error:
            keys, unknown = error.found, error.unknown
            log.warning(
                "keys not read in time: their upserts wait",
                extra={"role": self._role, "keys": len(unknown), "error": str(error)},
            )
        waiting = frozenset(ident for ident, name in names.items() if name in unknown)
        swapped = {
            ident: self._opened(envelope, keys)
            for ident, envelope in sealed.items()
            if ident not in waiting
        }
        opened_items = {
            region: [(swapped.get(id(envelope), envelope), target) for envelope, target in items]
            for region, items in by_region.items()
        }
        return opened_items, waiting

    def _opened(self, envelope: Envelope, keys: Mapping[KeyName, CustomerKey]) -> Envelope:
        command = envelope.command
        if not isinstance(command, UpsertCustomer):
            return envelope
        try:
            return replace(envelope, command=opened(command, keys))
        except ErasedError:
            metrics.ERASED_APPLIED.labels(role=self._role).inc()
            log.info(
                "erased upsert applied as a tombstone",
                extra={"command_id": str(command.command_id), "role": self._role},
            )
            return envelope

    async def _apply_region(
        self, region: str, items: list[Item], status: NodeStatus | None
    ) -> RegionResult:
        if status is NodeStatus.UNAVAILABLE:
            return await self._park(region, items, "marked_unavailable")
        if self._suspicion.is_suspect(region):
            return await self._park(region, items, "recent_failure")
        collection = self._collections.get(region)
        if collection is None:
            return await self._park(region, items, "unknown_region")
        progress = _Progress()
        try:
            for start in range(0, len(items), self._chunk):
                chunk = items[start : start + self._chunk]
                await self._write_chunk(region, collection, chunk, progress)
        except WRITE_ERRORS as error:
            return await self._region_failed(region, items, progress, error)
        self._suspicion.clear(region)
        self._outages.ok(region)
        deadlettered = await self._dead_letter(region, progress.rejected)
        self._applied(region, items, progress)
        return RegionResult(
            written=progress.written, stale=progress.stale, deadlettered=deadlettered
        )

    async def _region_failed(
        self, region: str, items: list[Item], progress: _Progress, error: BaseException
    ) -> RegionResult:
        """A transient failure: park what is not handled yet and hold the region suspect."""
        metrics.STORE_ERRORS.labels(region=region, kind=type(error).__name__).inc()
        log.debug("region write failed", extra={"region": region, "error": describe(error)})
        self._outages.failed(region, describe(error))
        self._suspicion.suspect(region)
        self._applied(region, items, progress)
        if self._parker is None:
            # Nothing of this batch is committed: the refused commands are found again and
            # dead-lettered when it is replayed.
            raise RegionUnavailableError(region, "write_failed") from error
        deadlettered = await self._dead_letter(region, progress.rejected)
        parked = await self._park(region, items[progress.done :], "write_failed")
        return RegionResult(
            written=progress.written,
            stale=progress.stale,
            parked=parked.parked,
            parked_reason=parked.parked_reason,
            deadlettered=deadlettered,
        )

    async def _write_chunk(
        self, region: str, collection: Collection, chunk: list[Item], progress: _Progress
    ) -> None:
        """Write one request's worth of commands; raise only transient failures.

        A permanent failure of the whole request names no document, so the chunk is written
        again one command per request: the commands that still fail are the culprits.
        """
        try:
            progress.add(await self._write(collection, chunk), len(chunk))
            return
        except WRITE_ERRORS as error:
            if classify(error) is Failure.TRANSIENT:
                raise
            metrics.STORE_ERRORS.labels(region=region, kind=type(error).__name__).inc()
            log.warning(
                "region refused a request; isolating its commands",
                extra={"region": region, "error": describe(error)[:300], "commands": len(chunk)},
            )
        # What the failed request wrote anyway meets its own version now: stale, harmless.
        for item in chunk:
            try:
                outcome = await self._write(collection, [item])
            except WRITE_ERRORS as error:
                if classify(error) is Failure.TRANSIENT:
                    raise
                outcome = _Written(rejected=[(item, describe(error))])
            progress.add(outcome, 1)

    def _applied(self, region: str, shared: list[Item], progress: _Progress) -> None:
        items, written, stale = progress.applied(shared), progress.written, progress.stale
        if self._tracer is not None:
            self._trace_applied(self._tracer, region, items, progress.started_ns)
        metrics.COMMANDS_APPLIED.labels(region=region, role=self._role).inc(written)
        if written and self._applied_sink is not None:
            self._applied_sink.add(region, written)
        metrics.COMMANDS_STALE.labels(region=region).inc(stale)
        now_ms = time.time_ns() // 1_000_000
        lag = metrics.APPLY_LAG_SECONDS.labels(role=self._role)
        trace = log.isEnabledFor(logging.DEBUG)
        for envelope, target in items:
            lag.observe(max(0, now_ms - envelope.command.issued_at_ms) / 1000)
            if trace:
                log.debug("command applied", extra=_trace(envelope, target))

    def _trace_applied(
        self, tracer: CommandTracer, region: str, items: list[Item], started_ns: int
    ) -> None:
        # One write carried them all: each command's span lasts as long as its share did.
        spans = [
            tracer.start(
                f"{self._verb} {region}",
                envelope.trace,
                _span_attributes(self._role, region, envelope, "applied"),
                start_ns=started_ns,
            )
            for envelope, _ in items
        ]
        end_all(spans)

    async def _write(self, collection: Collection, items: list[Item]) -> _Written:
        """Write the newer commands; report how many were written, stale or refused.

        Every document is inserted; those that collide on ``_id`` are replaced where the stored
        version is older, and the rest met a newer (or the same) version: they are stale.
        Documents are never removed, only tombstoned, so a collided one is still there.
        """
        inserts = [InsertOne(_document_for(e.command, t)) for e, t in items]
        collided, rejected = await self._insert(collection, inserts, items)
        if not collided:
            return _Written(written=len(items) - len(rejected), rejected=rejected)
        replaces = [
            ReplaceOne(
                {"_id": e.command.key, VERSION: {"$lt": e.command.version}},
                _document_for(e.command, t),
            )
            for e, t in collided
        ]
        matched, refused = await self._replace(collection, replaces, collided)
        rejected.extend(refused)
        stale = len(collided) - matched - len(refused)
        return _Written(written=len(items) - stale - len(rejected), stale=stale, rejected=rejected)

    @staticmethod
    async def _insert(
        collection: Collection, inserts: list[InsertOne[dict[str, Any]]], items: list[Item]
    ) -> tuple[list[Item], list[tuple[Item, str]]]:
        """Insert; return the commands that collided on ``_id`` and those refused for good."""
        try:
            await collection.bulk_write(inserts, ordered=False)
        except BulkWriteError as error:
            if classify(error) is Failure.TRANSIENT:
                raise
            collided: list[Item] = []
            rejected: list[tuple[Item, str]] = []
            for e in error.details.get("writeErrors", []):
                if e.get("code") == DUPLICATE_KEY:
                    collided.append(items[e["index"]])
                else:
                    rejected.append((items[e["index"]], describe_write_error(e)))
            return collided, rejected
        return [], []

    @staticmethod
    async def _replace(
        collection: Collection, replaces: list[ReplaceOne[dict[str, Any]]], items: list[Item]
    ) -> tuple[int, list[tuple[Item, str]]]:
        """Replace under the version guard; return how many matched and those refused."""
        try:
            result = await collection.bulk_write(replaces, ordered=False)
        except BulkWriteError as error:
            if classify(error) is Failure.TRANSIENT:
                raise
            refused = [
                (items[e["index"]], describe_write_error(e))
                for e in error.details.get("writeErrors", [])
            ]
            return int(error.details.get("nMatched", 0)), refused
        return result.matched_count, []

    async def _dead_letter(self, region: str, rejected: list[tuple[Item, str]]) -> int:
        if not rejected:
            return 0
        failures = [Rejected(envelope, error) for (envelope, _), error in rejected]
        if self._dead_letters is None:
            raise CommandRejectedError(region, failures)
        spans = [
            self._tracer.start(
                f"dead-letter {region}",
                failure.envelope.trace,
                _span_attributes(
                    self._role, region, failure.envelope, "dead_lettered", error=failure.error[:500]
                ),
            )
            for failure in failures
            if self._tracer is not None
        ]
        with ending(spans):
            await self._dead_letters.send_commands(region, failures)
        return len(failures)

    async def _park(self, region: str, items: list[Item], reason: str) -> RegionResult:
        if self._parker is None:
            raise RegionUnavailableError(region, reason)
        envelopes = [envelope for envelope, _ in items]
        spans = [
            self._tracer.start(
                f"park {region}",
                envelope.trace,
                _span_attributes(self._role, region, envelope, "parked", park_reason=reason),
                kind=SpanKind.PRODUCER,
            )
            for envelope in envelopes
            if self._tracer is not None
        ]
        if spans:
            # The parked copy's parent is its park span: the drain continues the trace there.
            envelopes = [e.traced(headers_of(s)) for e, s in zip(envelopes, spans, strict=True)]
        with ending(spans):
            await self._parker.park(region, envelopes, reason)
        metrics.COMMANDS_PARKED.labels(region=region, reason=reason).inc(len(envelopes))
        log.info(
            "commands parked",
            extra={
                "region": region,
                "reason": reason,
                "command_ids": [str(e.command.command_id) for e in envelopes],
                "trace_ids": [e.trace_id for e in envelopes],
            },
        )
        return RegionResult(parked=len(envelopes), parked_reason=reason)
