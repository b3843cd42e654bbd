"""Each partition's placement table, kept in Kafka and committed with the consumer's offsets.

A consumer group routes commands through one :class:`~regionstore_shared.placement.PlacementTable`
per partition of the command topic. The tables live in a compacted topic of the group's own,
``<group>.placement``, with as many partitions as the command topic: its partition p holds one
entry per customer of command partition p, and one entry (key ``#unknown``) saying where a
customer the table never saw may be live.

A batch's table changes and its offsets are committed in one Kafka transaction, so the table is
never behind nor ahead of the offsets, whatever is killed and when. Each partition has its own
transactional producer (``transactional.id`` ``<group>.placement.<p>``): whoever is assigned the
partition starts one, which fences the previous owner's, so a consumer that lost the partition
(a zombie) can neither commit offsets nor write the table any more. The new owner reads the
table (``read_committed``) only after that fence, so it sees every transaction the previous
owner managed to commit and none it did not.

The tables themselves are kept on this machine's disk (:mod:`regionstore_shared.placement_local`),
so memory does not grow with the number of customers. Each partition's local table remembers how
far it follows its table partition; an assignment reads only what was committed after that, and a
standby follower keeps the partitions this consumer does not own near their end, so a partition
that changes hands resumes in seconds at any size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerFenced
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, RecordMetadata
from pydantic import ValidationError

from regionstore_shared import metrics
from regionstore_shared.apply import Envelope
from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.pipeline import Batch, RoutedBatch
from regionstore_shared.placement import (
    PLACED_ADAPTER,
    UNKNOWN_ADAPTER,
    Placed,
    PlacementTable,
)
from regionstore_shared.placement_local import UNKNOWN_KEY, LocalTable, LocalTables, Record
from regionstore_shared.schemas import Action, Applier, Command, Target, decode_command
from regionstore_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

FOLLOW_RETRY_S = 5.0
"""How long the standby follower waits before it reads again after Kafka failed it."""


class TableWriter(Protocol):
    """One partition's fenced, transactional producer."""

    async def commit(
        self,
        entries: Mapping[bytes, bytes],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group: str,
    ) -> int | None:
        """Write the entries and commit the group's offsets, all or nothing; the table
        partition's offset after the last entry written (None when there were none)."""
        ...

    async def close(self) -> None: ...


class TableStore(Protocol):
    """Where a group's tables are kept: fenced writers, the committed tables, and history."""

    async def fence(self, partition: int) -> TableWriter:
        """A writer for the partition's table; every earlier writer of it is fenced."""
        ...

    async def load(self, since: Mapping[int, int], into: LocalTables) -> dict[int, int]:
        """Read the committed entries of these partitions into ``into``, each from the offset
        given to the partition's end; those ends. A partition whose offset given is past its
        end is not read."""
        ...

    async def follow(
        self, into: LocalTables, owned: Collection[int], caught_up: asyncio.Event
    ) -> None:
        """Read the committed entries of every partition not ``owned`` (a live view) into
        ``into`` as they come, each from its mark, until cancelled; set ``caught_up`` once
        every partition was read to the end it had when the follower started."""
        ...

    async def history(self, partitions: Collection[int]) -> dict[int, dict[str, Placed] | None]:
        """The placements the group's committed offsets already account for, per command
        partition: learnt from every command before the committed offset (none when nothing is
        committed), or None when the partition's first commands are gone (retention)."""
        ...


class PlacementLog:
    """Routes a group's batches through the partitions' tables and commits them with the offsets.

    The consumer's rebalance listener passes on every assignment (:meth:`assigned`: fence, then
    load) and revocation (:meth:`revoked`); :func:`~regionstore_shared.pipeline.run_batches`
    calls :meth:`route` before applying a batch, :meth:`commit` after, and :meth:`discard` when
    the batch is to be replayed.
    """

    def __init__(
        self,
        store: TableStore,
        local: LocalTables,
        *,
        group: str,
        role: Applier,
        regions: Sequence[str],
    ) -> None:
        self._store = store
        self._local = local
        self._group = group
        self._role = role
        self._regions = tuple(regions)
        self._partitions: dict[int, asyncio.Future[_Partition]] = {}
        self._follower: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._routed = {
            action: metrics.TARGETS_ROUTED.labels(role=role.value, action=action.value)
            for action in Action
        }

    async def start(self) -> None:
        """Follow every table partition in the background, so one handed over resumes fast;
        return once the tables on disk caught up with the topic.

        A process started on an empty disk so reads the tables before it joins its group, as
        Kafka Streams warms a new instance up before it gives it active tasks: the group's
        other members keep applying meanwhile, instead of waiting for a rebalance that stalls
        until the newcomer has read millions of entries.
        """
        self._follower = asyncio.create_task(self._follow(), name=f"{self._group} placement")
        started = time.perf_counter()
        await self._caught_up.wait()
        log.info(
            "placement tables caught up",
            extra={"group": self._group, "seconds": round(time.perf_counter() - started, 3)},
        )

    async def _follow(self) -> None:
        while True:
            try:
                await self._store.follow(self._local, self._partitions.keys(), self._caught_up)
            except Exception:
                # Only speed depends on the follower: an assignment reads what it missed.
                log.exception(
                    "placement follower stopped, reading again", extra={"group": self._group}
                )
                await asyncio.sleep(FOLLOW_RETRY_S)

    async def assigned(self, partitions: Collection[TopicPartition]) -> None:
        """Fence the newly assigned partitions, then bring their local tables to the end of
        what was committed (before any is routed)."""
        new = sorted({tp.partition for tp in partitions} - set(self._partitions))
        if not new:
            return
        loop = asyncio.get_running_loop()
        futures = {p: loop.create_future() for p in new}
        self._partitions.update(futures)
        started = time.perf_counter()
        marks = {p: self._local.mark(p).offset for p in new}
        try:
            writers = await _fence_all(self._store, new)
            try:
                ends = await self._store.load(marks, self._local)
                # A mark past the end: the file followed another topic of that name.
                stale = {p: 0 for p in new if marks[p] > ends[p]}
                for p in stale:
                    self._local.reset(p)
                if stale:
                    ends |= await self._store.load(stale, self._local)
                fresh = [p for p in new if self._local.mark(p).unknown is None]
                history = await self._store.history(fresh) if fresh else {}
            except BaseException:
                await _close_all(writers)
                raise
        except BaseException as error:
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
                    # Retrieved here so an unrouted failure is not reported as never retrieved;
                    # route() raises it again for the batch that needed the partition.
                    future.exception()
            raise
        for p, writer in zip(new, writers, strict=True):
            if p in fresh:
                partition = _Partition.learnt(p, self._local, history.get(p), writer, self._regions)
            else:
                partition = _Partition.kept(p, self._local, writer)
            futures[p].set_result(partition)
            metrics.PLACEMENT_ENTRIES.labels(group=self._group, partition=str(p)).set(
                len(partition.table)
            )
        log.info(
            "placement tables loaded",
            extra={
                "group": self._group,
                "partitions": new,
                "read": {p: [marks[p], ends[p]] for p in new},
                "learnt_from_commands": sum(len(h or {}) for h in history.values()),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Close the writers of revoked partitions; their local tables stay, followed."""
        await self._drop([tp.partition for tp in partitions])

    async def close(self) -> None:
        """Stop following, and close every writer (the consumer stops)."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._drop(list(self._partitions))

    async def _drop(self, partitions: Iterable[int]) -> None:
        """Stop routing and committing these partitions, and close their writers."""
        for number in partitions:
            future = self._partitions.pop(number, None)
            with contextlib.suppress(KeyError):
                metrics.PLACEMENT_ENTRIES.remove(self._group, str(number))
            if future is None or not future.done() or future.exception() is not None:
                continue
            partition = future.result()
            # After a commit in flight, never under it.
            async with partition.lock:
                await partition.writer.close()
                partition.table.discard()

    async def route(self, batch: Batch) -> RoutedBatch:
        """Route the batch's commands, partition by partition in order, for this group's role:
        each at its effective version, with its position in the partition.

        A partition no longer assigned routes nothing: its records are its new owner's.
        """
        envelopes: list[Envelope] = []
        targets: dict[int, tuple[Target, ...]] = {}
        for tp, decoded in batch.decoded.items():
            future = self._partitions.get(tp.partition)
            if future is None:
                continue
            partition = await future
            partition.known.prefetch([envelope.command.key for envelope in decoded])
            table = partition.table
            for envelope in decoded:
                version, routed = table.route(envelope.command, envelope.offset)
                mine = tuple(t for t in routed if t.role is self._role)
                if not mine:
                    continue
                stamped = envelope.stamped(version)
                envelopes.append(stamped)
                targets[id(stamped.command)] = mine
                for target in mine:
                    self._routed[target.action].inc()
        return RoutedBatch(envelopes, _Routes(targets))

    async def commit(self, consumer: AIOKafkaConsumer, batch: Batch, group: str) -> bool:
        """Commit each owned partition's table changes with its offset; whether any was.

        A partition whose writer was fenced (another consumer owns it now) is not committed and
        its changes are dropped. Any other failure is raised after every partition was tried.
        """
        offsets = batch.offsets(consumer.assignment())
        if not offsets:
            return False
        results = await asyncio.gather(
            *(self._commit_partition(tp, offset) for tp, offset in offsets.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return any(results)

    def discard(self) -> None:
        """Forget every change not committed: the batch will be routed again."""
        for future in self._partitions.values():
            if future.done() and future.exception() is None:
                future.result().table.discard()

    async def _commit_partition(self, tp: TopicPartition, offset: OffsetAndMetadata) -> bool:
        future = self._partitions.get(tp.partition)
        if future is None or not future.done():
            return False
        partition = future.result()
        async with partition.lock:
            table = partition.table
            if partition.fenced:
                table.discard()
                return False
            changes = partition.unwritten | table.changes
            entries = {
                key.encode(): PLACED_ADAPTER.dump_json(p, exclude_defaults=True)
                for key, p in changes.items()
            }
            if partition.written_unknown is None:
                entries[UNKNOWN_KEY] = UNKNOWN_ADAPTER.dump_json(table.unknown)
            try:
                written_to = await partition.writer.commit(entries, {tp: offset}, self._group)
            except ProducerFenced:
                partition.fenced = True
                table.discard()
                metrics.PLACEMENT_FENCED.labels(group=self._group).inc()
                log.warning(
                    "placement commit fenced: another consumer owns the partition now",
                    extra={"group": self._group, "partition": tp.partition},
                )
                return False
            except BaseException:
                table.discard()
                raise
            metrics.PLACEMENT_COMMITS.labels(group=self._group).inc()
            table.settle()
            partition.unwritten = {}
            partition.written_unknown = table.unknown
            if written_to is not None:
                # The table partition now ends there, and only this consumer writes it.
                self._local.advance(tp.partition, written_to, unknown=table.unknown)
        metrics.PLACEMENT_ENTRIES.labels(group=self._group, partition=str(tp.partition)).set(
            len(table)
        )
        return True


@dataclass(slots=True)
class _Partition:
    number: int
    known: LocalTable
    table: PlacementTable
    writer: TableWriter
    written_unknown: tuple[str, ...] | None
    """The ``unknown`` entry as committed; None until the first commit writes it."""
    unwritten: dict[str, Placed] = field(default_factory=dict)
    """Placements learnt from the command topic, written with the first commit."""
    fenced: bool = False
    """Another consumer owns the partition now: its writer, fenced, is never used again (the
    rebalance that revokes the partition here may come batches later)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def kept(cls, number: int, local: LocalTables, writer: TableWriter) -> _Partition:
        """A partition whose table was committed, from its local table (read to the end)."""
        unknown = local.mark(number).unknown
        assert unknown is not None
        known = local.table(number)
        return cls(number, known, PlacementTable(known, unknown=unknown), writer, unknown)

    @classmethod
    def learnt(
        cls,
        number: int,
        local: LocalTables,
        history: dict[str, Placed] | None,
        writer: TableWriter,
        regions: tuple[str, ...],
    ) -> _Partition:
        """A partition whose table was never committed, from the commands already consumed:
        with them all, a customer never seen is live nowhere; with the oldest gone, it may be
        live anywhere."""
        unknown = regions if history is None else ()
        learnt = history or {}
        # What an earlier try learnt is replaced: only this history matches the offsets now.
        local.reset(number)
        known = local.table(number)
        known.update(learnt)
        table = PlacementTable(known, unknown=unknown)
        return cls(number, known, table, writer, None, dict(learnt))


class _Routes:
    """A batch's routed targets, by the identity of each stamped command: the selector its
    apply uses (two copies of one command may route apart, so not by command id)."""

    def __init__(self, routes: dict[int, tuple[Target, ...]]) -> None:
        self._routes = routes

    def __call__(self, command: Command) -> Iterable[Target]:
        return self._routes.get(id(command), ())


async def _fence_all(store: TableStore, partitions: Sequence[int]) -> list[TableWriter]:
    """Fence every partition; if one fails, close the writers that started and raise."""
    results = await asyncio.gather(*(store.fence(p) for p in partitions), return_exceptions=True)
    writers = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await _close_all(writers)
        raise errors[0]
    return writers


async def _close_all(writers: Iterable[TableWriter]) -> None:
    for writer in writers:
        with contextlib.suppress(KafkaError, OSError):
            await writer.close()


class KafkaTableWriter:
    """A started transactional producer for one table partition."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, partition: int, *, timeout_s: float
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._timeout_s = timeout_s

    async def commit(
        self,
        entries: Mapping[bytes, bytes],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group: str,
    ) -> int | None:
        # aiokafka's sender can die on an error it does not expect (seen: UnknownError on
        # TxnOffsetCommit after a broker was killed), leaving every transaction waiting for
        # ever: the consumer would hold its partitions and apply nothing. Bounded, the commit
        # fails instead, and the consumer stops and starts again with a new producer.
        return await _bounded(self._commit(entries, offsets, group), self._timeout_s)

    async def _commit(
        self,
        entries: Mapping[bytes, bytes],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group: str,
    ) -> int | None:
        sent: list[asyncio.Future[RecordMetadata]] = []
        try:
            async with self._producer.transaction():
                for key, value in entries.items():
                    sent.append(
                        await self._producer.send(
                            self._topic, value=value, key=key, partition=self._partition
                        )
                    )
                await self._producer.send_offsets_to_transaction(dict(offsets), group)
                written = await asyncio.gather(*sent)
        except BaseException:
            # A fenced or failed transaction fails every send in it too: the first error is
            # the one raised, the sends' own are taken so they are not reported as lost.
            for future in sent:
                future.add_done_callback(_take_outcome)
            raise
        return written[-1].offset + 1 if written else None

    async def close(self) -> None:
        await _bounded(self._producer.stop(), self._timeout_s)


async def _bounded(work: Coroutine[Any, Any, T], seconds: float) -> T:
    """``work``'s result, or KafkaTimeoutError after ``seconds``; work that does not end when
    cancelled is left behind rather than waited for."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(_take_outcome)
        raise KafkaTimeoutError(f"no answer from Kafka within {seconds:.0f} s")
    return task.result()


def _take_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class KafkaTableStore:
    """A group's tables in its compacted topic, ``<group>.placement``."""

    def __init__(self, settings: KafkaSettings, *, group: str, client_id: str) -> None:
        self._settings = settings
        self._group = group
        self._client_id = client_id
        self.topic = settings.placement_topic(group)

    async def fence(self, partition: int) -> TableWriter:
        producer = AIOKafkaProducer(
            **kafka_connection(self._settings),
            client_id=f"{self._client_id}-placement-{partition}",
            transactional_id=f"{self.topic}.{partition}",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        # start() asks the coordinator for the transactional id's producer id, which fences
        # every earlier producer of it and ends (aborts) a transaction it left open.
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        # Twice a request's timeout: a transaction is a few requests in a row.
        timeout_s = 2 * self._settings.request_timeout_ms / 1000
        return KafkaTableWriter(producer, self.topic, partition, timeout_s=timeout_s)

    async def load(self, since: Mapping[int, int], into: LocalTables) -> dict[int, int]:
        consumer = self._table_consumer("load")
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in since]
            consumer.assign(tps)
            # Seek before asking for the ends: asked first, aiokafka puts the position there.
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            left = [tp for tp in tps if since[tp.partition] <= ends[tp]]
            for tp in left:
                if since[tp.partition]:
                    consumer.seek(tp, since[tp.partition])
            left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
            while left:
                polled = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in polled.items():
                    into.take(tp.partition, _records(records))
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
            return {tp.partition: ends[tp] for tp in tps}
        finally:
            await consumer.stop()

    async def follow(
        self, into: LocalTables, owned: Collection[int], caught_up: asyncio.Event
    ) -> None:
        admin = kafka_admin(self._settings, f"{self._client_id}-placement-admin")
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        tps = [TopicPartition(self.topic, p["partition"]) for p in described["partitions"]]
        consumer = self._table_consumer("follow")
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            paused: set[TopicPartition] = set()
            while True:
                # An owned partition's table moves with this consumer's own commits: it is not
                # read; once handed over, it is read again from its mark.
                mine = {tp for tp in tps if tp.partition in owned}
                consumer.pause(*(mine - paused))
                for tp in paused - mine:
                    consumer.resume(tp)
                for tp in set(tps) - mine:
                    if (mark := into.mark(tp.partition).offset) > await consumer.position(tp):
                        consumer.seek(tp, mark)
                paused = mine
                if not caught_up.is_set() and all(
                    [await consumer.position(tp) >= ends[tp] for tp in set(tps) - mine]
                ):
                    caught_up.set()
                polled = await consumer.getmany(timeout_ms=1000)
                for tp, records in polled.items():
                    if tp.partition not in owned:
                        into.take(tp.partition, _records(records))
        finally:
            await consumer.stop()

    def _table_consumer(self, use: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka_connection(self._settings),
            client_id=f"{self._client_id}-placement-{use}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            request_timeout_ms=self._settings.request_timeout_ms,
        )

    async def history(self, partitions: Collection[int]) -> dict[int, dict[str, Placed] | None]:
        source = [TopicPartition(self._settings.command_topic, p) for p in partitions]
        admin = kafka_admin(self._settings, f"{self._client_id}-placement-admin")
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self._group, partitions=source)
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(
            **kafka_connection(self._settings),
            client_id=f"{self._client_id}-placement-history",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        await consumer.start()
        try:
            consumer.assign(source)
            await consumer.seek_to_beginning(*source)
            starts = await consumer.beginning_offsets(source)
            ends = {tp: max(0, committed[tp].offset) if tp in committed else 0 for tp in source}
            history: dict[int, dict[str, Placed] | None] = {
                tp.partition: None if starts[tp] > 0 else {} for tp in source
            }
            tables: dict[TopicPartition, dict[str, Placed]] = {
                tp: {} for tp in source if starts[tp] == 0
            }
            routes = {tp: PlacementTable(tables[tp], unknown=()) for tp in tables}
            left = [tp for tp in tables if ends[tp] > 0]
            while left:
                polled = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in polled.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            _learn(routes[tp], record.value, record.offset)
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
        finally:
            await consumer.stop()
        for tp, table in routes.items():
            table.settle()
            history[tp.partition] = tables[tp]
        return history


def _learn(table: PlacementTable, value: bytes | None, offset: int) -> None:
    """Route a command already applied, for the placement it left; skip what never decoded
    (the consumers dead-lettered it)."""
    if value is None:
        return
    try:
        table.route(decode_command(value), offset)
    except ValidationError:
        return


def _records(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[Record]:
    return [(r.offset, r.key, r.value) for r in records]
