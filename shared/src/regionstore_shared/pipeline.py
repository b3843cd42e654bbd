"""The consume-apply-commit loop shared by every service that reads commands from Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from regionstore_shared import metrics
from regionstore_shared.apply import BatchApplier, Envelope, Rejected, TargetSelector
from regionstore_shared.delivery import Outgoing, deliver, raise_unless_acknowledged
from regionstore_shared.logs import Outages
from regionstore_shared.schemas import decode_command
from regionstore_shared.tracing import trace_headers

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


ERROR_HEADER = "regionstore-error"
REGION_HEADER = "regionstore-region"
COMMAND_ID_HEADER = "regionstore-command-id"
SOURCE_TOPIC_HEADER = "regionstore-source-topic"


class DeadLetters:
    """Sends messages that can never be applied to the dead-letter topic, error in the headers.

    Two kinds: records that do not decode to a command (:meth:`send`), and commands a region
    refused for good (:meth:`send_commands`, the applier's dead-letter sink).
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, record: Record, error: str) -> None:
        """Forward a record unchanged, with where it came from and why it failed."""
        headers = [
            (ERROR_HEADER, error[:4000].encode()),
            (SOURCE_TOPIC_HEADER, record.topic.encode()),
            ("regionstore-source-partition", str(record.partition).encode()),
            ("regionstore-source-offset", str(record.offset).encode()),
            *trace_headers(record.headers),
        ]
        outgoing = Outgoing(record.value, record.key, headers)
        raise_unless_acknowledged(await deliver(self._producer, self._topic, [outgoing]))
        metrics.COMMANDS_DEADLETTERED.labels(source_topic=record.topic, region="").inc()
        log.error(
            "message dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": error[:500],
            },
        )

    async def send_commands(self, region: str, rejected: Sequence[Rejected]) -> None:
        """Forward each refused command's original bytes, with the region and the store's
        reason; return once Kafka acknowledged all of them."""
        outgoing = []
        for failure in rejected:
            envelope = failure.envelope
            headers = [
                (ERROR_HEADER, failure.error[:4000].encode()),
                (REGION_HEADER, region.encode()),
                (COMMAND_ID_HEADER, str(envelope.command.command_id).encode()),
                (SOURCE_TOPIC_HEADER, envelope.topic.encode()),
                *envelope.trace,
            ]
            outgoing.append(Outgoing(envelope.raw, envelope.command.key.encode(), headers))
        raise_unless_acknowledged(await deliver(self._producer, self._topic, outgoing))
        for failure in rejected:
            envelope = failure.envelope
            metrics.COMMANDS_DEADLETTERED.labels(source_topic=envelope.topic, region=region).inc()
            log.error(
                "command dead-lettered",
                extra={
                    "region": region,
                    "command_id": str(envelope.command.command_id),
                    "trace_id": envelope.trace_id,
                    "customer_id": envelope.command.key,
                    "version": envelope.command.version,
                    "topic": envelope.topic,
                    "error": failure.error[:500],
                },
            )


@dataclass(slots=True)
class Batch:
    """One poll's records, decoded: what to apply and what to dead-letter, by partition."""

    records: dict[TopicPartition, list[Record]]
    decoded: dict[TopicPartition, list[Envelope]] = field(default_factory=dict)
    rejects: list[tuple[Record, str]] = field(default_factory=list)

    @property
    def envelopes(self) -> list[Envelope]:
        """The commands to apply, partition by partition in poll order."""
        return [envelope for envelopes in self.decoded.values() for envelope in envelopes]

    @property
    def count(self) -> int:
        """Records held, rejects included."""
        return sum(len(records) for records in self.records.values())

    def holds(self, record: Record) -> bool:
        """Whether the record's partition is still part of the batch."""
        return TopicPartition(record.topic, record.partition) in self.records

    def offsets(self, owned: Collection[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """What committing the batch means, for the partitions in ``owned`` only."""
        return {
            tp: OffsetAndMetadata(records[-1].offset + 1, "")
            for tp, records in self.records.items()
            if tp in owned
        }

    @classmethod
    def joined(cls, batches: Sequence[Batch]) -> Batch:
        """``batches`` (in poll order) as one: what committing them all means."""
        if len(batches) == 1:
            return batches[0]
        joined = cls({})
        for batch in batches:
            for tp, records in batch.records.items():
                joined.records.setdefault(tp, []).extend(records)
            for tp, envelopes in batch.decoded.items():
                joined.decoded.setdefault(tp, []).extend(envelopes)
            joined.rejects.extend(batch.rejects)
        return joined

    def drop(self, partitions: Collection[TopicPartition]) -> int:
        """Forget every record of ``partitions``; return how many were held."""
        dropped = 0
        for tp in partitions:
            dropped += len(self.records.pop(tp, ()))
            self.decoded.pop(tp, None)
        if dropped:
            self.rejects = [(r, e) for r, e in self.rejects if self.holds(r)]
        return dropped


def decode_records(records: dict[TopicPartition, list[Record]]) -> Batch:
    """Decode a poll's records; the undecodable ones are set aside with the reason."""
    batch = Batch(records)
    for tp, partition in records.items():
        decoded = batch.decoded.setdefault(tp, [])
        for record in partition:
            if record.value is None:
                batch.rejects.append((record, "empty message"))
                continue
            try:
                command = decode_command(record.value)
                trace = trace_headers(record.headers)
                decoded.append(Envelope(command, record.value, record.topic, record.offset, trace))
            except ValidationError as error:
                batch.rejects.append((record, f"invalid command: {error}"))
    return batch


class PartitionHooks(Protocol):
    """Hears of partitions a consumer gains and loses, after its held batches are adjusted."""

    async def assigned(self, partitions: Collection[TopicPartition]) -> None: ...

    async def revoked(self, partitions: Collection[TopicPartition]) -> None: ...


class PartitionOwnership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the batches a consumer holds to the partitions it still owns.

    Pass it to :func:`~regionstore_shared.clients.kafka_consumer` and to :func:`run_batches`.
    When the group rebalances, aiokafka calls :meth:`on_partitions_revoked` before the
    partitions go to their new owners, which start from the last committed offset: every
    batch held (the one being applied and the one polled ahead) then forgets the records of
    those partitions, so this consumer neither applies what it has not started nor commits
    what it no longer owns. A partition given back to this consumer restarts from its
    committed offset too, so nothing forgotten is skipped. ``hooks`` (the placement tables)
    hear of each change after that.
    """

    def __init__(self, group: str, hooks: PartitionHooks | None = None) -> None:
        self._group = group
        self._hooks = hooks
        self._held: list[Batch] = []
        self._revoked: set[TopicPartition] = set()

    def hold(self, batch: Batch) -> None:
        """Track a batch from the moment it is polled."""
        self._held.append(batch)

    def release(self, batch: Batch) -> None:
        """Stop tracking a batch once it is committed."""
        self._held = [held for held in self._held if held is not batch]

    def release_all(self) -> None:
        """Stop tracking every batch: the loop rewound or committed all it held."""
        self._held.clear()

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Drop the revoked partitions' records from every batch held (aiokafka's callback)."""
        dropped = sum(batch.drop(revoked) for batch in self._held)
        self._revoked = set(revoked)
        self._forget_lag(self._revoked)
        log.info(
            "partitions revoked",
            extra={"group": self._group, "partitions": _names(revoked), "dropped": dropped},
        )
        if self._hooks is not None:
            await self._hooks.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """Log the new assignment (aiokafka's callback)."""
        # Again: a lag update in the middle of the rebalance may have set them anew.
        self._forget_lag(self._revoked - set(assigned))
        log.info(
            "partitions assigned", extra={"group": self._group, "partitions": _names(assigned)}
        )
        if self._hooks is not None:
            await self._hooks.assigned(assigned)

    def _forget_lag(self, partitions: Collection[TopicPartition]) -> None:
        # Another member reports these partitions' lag now; a stale gauge here would count twice.
        for tp in partitions:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self._group, tp.topic, str(tp.partition))


def _names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)


@dataclass(frozen=True, slots=True)
class RoutedBatch:
    """A batch's commands as they are to be applied, and the targets of each."""

    envelopes: Sequence[Envelope]
    select: TargetSelector


class Routing(Protocol):
    """Where a batch's commands go, and how the batch is committed once they got there."""

    async def route(self, batch: Batch) -> RoutedBatch:
        """The commands of the batch at the versions they are applied at, and the targets of
        each that this consumer applies."""
        ...

    async def commit(self, consumer: AIOKafkaConsumer, batch: Batch, group: str) -> bool:
        """Commit the batch's partitions the consumer still owns; whether a commit was made."""
        ...

    def discard(self) -> None:
        """Forget what routing the batch changed: it was not committed and comes again."""
        ...


class FixedTargets:
    """Routing by the command alone (``select``), committed with the consumer's offsets."""

    def __init__(self, select: TargetSelector) -> None:
        self._select = select

    async def route(self, batch: Batch) -> RoutedBatch:
        return RoutedBatch(batch.envelopes, self._select)

    async def commit(self, consumer: AIOKafkaConsumer, batch: Batch, group: str) -> bool:
        offsets = batch.offsets(consumer.assignment())
        if not offsets:
            return False
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The group rebalanced between the check above and the commit: the partitions'
            # new owners start from the last committed offsets and apply these records again.
            log.warning(
                "commit refused after a rebalance; the new owners consume the batch again",
                extra={"group": group, "partitions": _names(offsets), "error": str(error)},
            )
            return False
        return True

    def discard(self) -> None:
        return None


async def _poll(
    consumer: AIOKafkaConsumer, timeout_ms: int, ownership: PartitionOwnership
) -> Batch | None:
    records = await consumer.getmany(timeout_ms=timeout_ms)
    if not records:
        return None
    # Held before this task ends: a rebalance can come before the loop takes the batch.
    batch = decode_records(records)
    ownership.hold(batch)
    return batch


async def run_batches(
    consumer: AIOKafkaConsumer,
    *,
    group: str,
    applier: BatchApplier,
    routing: Routing,
    dead_letters: DeadLetters,
    stop: asyncio.Event,
    role: str,
    ownership: PartitionOwnership | None = None,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
    outages: Outages | None = None,
    poll_timeout_ms: int = 500,
    commit_interval_ms: int = 0,
) -> None:
    """Consume until ``stop`` is set: decode, route, apply or park, then commit what was handled.

    ``routing`` says which targets of each command this consumer writes, and commits the batch.
    Offsets are committed only after the whole batch is written or parked, so a crash at any
    point replays at most the uncommitted batches, which the version guard makes harmless.
    The next batch is polled and decoded while the current one is written (the stores, not
    this process, are then the ones working); it is applied only after the current one is
    committed, and rewound with it if the current one fails. A commit is the consumer's proof
    that Kafka works: it is reported to ``outages`` as ``kafka`` being ok.

    ``ownership``, the consumer's rebalance listener, removes revoked partitions from the
    batches in hand; only partitions still assigned are committed, and a commit the group
    refuses because it rebalanced is logged and skipped: the new owners consume those records
    again. Without it (a consumer with fixed partitions) nothing is ever revoked.

    With ``commit_interval_ms``, batches applied are committed together, at most that often
    (and at once when a poll finds nothing more, or the loop stops), as Kafka Streams commits
    under exactly-once: a commit (a transaction per partition, for the placement tables) then
    costs per interval, not per batch, which is what a write pays at low rates. A crash
    replays what was applied since the last commit, through the same committed tables, so to
    the same targets at the same versions: harmless, as any replay.
    """
    ownership = ownership if ownership is not None else PartitionOwnership(group)
    ahead: asyncio.Task[Batch | None] | None = None
    applied: list[Batch] = []
    """Batches applied and not committed yet, oldest first."""
    since = 0.0
    loop = asyncio.get_running_loop()

    async def commit() -> None:
        try:
            committed = await routing.commit(consumer, Batch.joined(applied), group)
        except BaseException:
            routing.discard()
            following = None if ahead is None else await _cancel(ahead)
            _rewind(consumer, applied if following is None else [*applied, following])
            raise
        for done in applied:
            ownership.release(done)
        count = sum(done.count for done in applied)
        applied.clear()
        if committed and outages is not None:
            outages.ok("kafka")
        await _update_lag(consumer, group)
        if on_batch is not None and count:
            await on_batch(count)

    stopped = False
    try:
        while not stop.is_set():
            if ahead is None:
                batch = await _poll(consumer, poll_timeout_ms, ownership)
            else:
                batch, ahead = await ahead, None
            if batch is None:
                if applied:
                    await commit()
                continue
            ahead = asyncio.create_task(_poll(consumer, poll_timeout_ms, ownership))
            try:
                with metrics.BATCH_SECONDS.labels(role=role).time():
                    for record, error in batch.rejects:
                        # A partition revoked during an earlier send is its new owner's now.
                        if batch.holds(record):
                            await dead_letters.send(record, error)
                    # A batch in the middle of applying finishes it even if a rebalance takes
                    # partitions away meanwhile: applying twice is harmless, committing is not.
                    if batch.envelopes:
                        routed = await routing.route(batch)
                        await applier.apply(routed.envelopes, routed.select)
            except BaseException:
                routing.discard()
                following, ahead = await _cancel(ahead), None
                held = [*applied, batch]
                _rewind(consumer, held if following is None else [*held, following])
                raise
            if not applied:
                since = loop.time()
            applied.append(batch)
            if (loop.time() - since) * 1000 >= commit_interval_ms:
                await commit()
        stopped = True
    finally:
        # A batch polled ahead and never applied is rewound, so no later poll skips it.
        if ahead is not None and (following := await _cancel(ahead)) is not None:
            _rewind(consumer, [following])
            ahead = None
        if stopped and applied:
            await commit()
        ownership.release_all()


async def _cancel(task: asyncio.Task[Batch | None]) -> Batch | None:
    """Stop a poll in flight; the batch it already returned, if it had finished."""
    if task.done():
        return None if task.cancelled() or task.exception() else task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


def _rewind(consumer: AIOKafkaConsumer, batches: list[Batch]) -> None:
    """Seek every partition back to the first record of the earliest batch that holds it.

    Nothing of these batches is committed; whoever consumes next (this consumer after a
    pause, or another after a rebalance) starts with them again.
    """
    first: dict[TopicPartition, int] = {}
    for batch in batches:
        for tp, records in batch.records.items():
            first.setdefault(tp, records[0].offset)
    assigned = consumer.assignment()
    for tp, offset in first.items():
        if tp in assigned:
            consumer.seek(tp, offset)


async def _update_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    for tp in consumer.assignment():
        # A rebalance can take partitions away while this loop awaits a position.
        if tp not in consumer.assignment() or (end := consumer.highwater(tp)) is None:
            continue
        try:
            position = await consumer.position(tp)
        except IllegalStateError:
            continue
        metrics.CONSUMER_LAG.labels(group=group, topic=tp.topic, partition=str(tp.partition)).set(
            max(0, end - position)
        )
