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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata, RecordMetadata
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
from regionstore_shared.schemas import Action, Applier, Command, Target, decode_command
from regionstore_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

UNKNOWN_KEY = b"#unknown"
"""The key of a table's ``unknown`` entry; no customer id can take it (ids have no ``#``)."""


@dataclass(slots=True)
class Loaded:
    """One table partition as read back from Kafka, from some offset to its end."""

    entries: dict[str, Placed] = field(default_factory=dict)
    unknown: tuple[str, ...] | None = None
    """None when no ``unknown`` entry was read (from the start: the table was never written)."""
    end: int = 0
    """The offset after the last one read."""


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

    async def load(self, since: Mapping[int, int]) -> dict[int, Loaded]:
        """The committed entries of these partitions, each from the offset given (0: all)."""
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
        self, store: TableStore, *, group: str, role: Applier, regions: Sequence[str]
    ) -> None:
        self._store = store
        self._group = group
        self._role = role
        self._regions = tuple(regions)
        self._partitions: dict[int, asyncio.Future[_Partition]] = {}
        # Tables of partitions revoked by a rebalance that may hand them straight back: kept, so
        # taking one again reads only what its owners committed meanwhile.
        self._retired: dict[int, _Partition] = {}
        self._routed = {
            action: metrics.TARGETS_ROUTED.labels(role=role.value, action=action.value)
            for action in Action
        }

    async def assigned(self, partitions: Collection[TopicPartition]) -> None:
        """Fence and load the tables of newly assigned partitions (before any is routed).

        A table kept from before the rebalance reads only the entries committed since.
        """
        new = sorted({tp.partition for tp in partitions} - set(self._partitions))
        retired = {p: self._retired.pop(p) for p in new if p in self._retired}
        self._retired.clear()  # gone to other consumers
        if not new:
            return
        loop = asyncio.get_running_loop()
        futures = {p: loop.create_future() for p in new}
        self._partitions.update(futures)
        started = time.perf_counter()
        try:
            writers = await _fence_all(self._store, new)
            try:
                since = {p: retired[p].loaded_until if p in retired else 0 for p in new}
                loaded = await self._store.load(since)
                fresh = [p for p in new if p not in retired and loaded[p].unknown is None]
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
            if p in retired:
                partition = retired[p].resumed(loaded[p], writer)
            else:
                partition = _Partition.of(p, loaded[p], history.get(p), writer, self._regions)
            futures[p].set_result(partition)
            metrics.PLACEMENT_ENTRIES.labels(group=self._group, partition=str(p)).set(
                len(partition.table)
            )
        log.info(
            "placement tables loaded",
            extra={
                "group": self._group,
                "partitions": new,
                "kept": sorted(retired),
                "entries_read": sum(len(loaded[p].entries) for p in new),
                "learnt_from_commands": sum(len(h or {}) for h in history.values()),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Close the writers of revoked partitions; keep their committed tables a while."""
        for partition in await self._drop([tp.partition for tp in partitions]):
            # Only a table that committed can be resumed: one that never did may differ from
            # what another owner learnt and wrote first.
            if partition.written_unknown is not None:
                self._retired[partition.number] = partition

    async def close(self) -> None:
        """Close every writer (the consumer stops)."""
        await self._drop(list(self._partitions))
        self._retired.clear()

    async def _drop(self, partitions: Iterable[int]) -> list[_Partition]:
        """Stop routing and committing these partitions; their states, writers closed."""
        dropped = []
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
            dropped.append(partition)
        return dropped

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
            table = (await future).table
            for envelope in decoded:
                version, routed = table.route(envelope.command)
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
            table.settle()
            partition.unwritten = {}
            partition.written_unknown = table.unknown
            if written_to is not None:
                # The table now is the partition's log up to there: only this consumer writes it.
                partition.loaded_until = written_to
        metrics.PLACEMENT_ENTRIES.labels(group=self._group, partition=str(tp.partition)).set(
            len(table)
        )
        return True


@dataclass(slots=True)
class _Partition:
    number: int
    table: PlacementTable
    writer: TableWriter
    written_unknown: tuple[str, ...] | None
    """The ``unknown`` entry as committed; None until the first commit writes it."""
    loaded_until: int
    """The table partition's offset up to which the table holds what was committed."""
    unwritten: dict[str, Placed] = field(default_factory=dict)
    """Placements learnt from the command topic, written with the first commit."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of(
        cls,
        number: int,
        loaded: Loaded,
        history: dict[str, Placed] | None,
        writer: TableWriter,
        regions: tuple[str, ...],
    ) -> _Partition:
        """A partition's state from its committed table, or, for a table never written, from
        the commands already consumed: with them all, a customer never seen is live nowhere;
        with the oldest gone, it may be live anywhere."""
        if loaded.unknown is not None:
            table = PlacementTable(loaded.entries, unknown=loaded.unknown)
            return cls(number, table, writer, loaded.unknown, loaded.end)
        unknown = regions if history is None else ()
        learnt = history or {}
        table = PlacementTable(learnt, unknown=unknown)
        return cls(number, table, writer, None, loaded.end, dict(learnt))

    def resumed(self, loaded: Loaded, writer: TableWriter) -> _Partition:
        """This kept state taken again, with what was committed since it was kept on top
        (entries read in offset order: the newest of each customer wins)."""
        self.table.absorb(loaded.entries)
        return replace(self, writer=writer, loaded_until=loaded.end, lock=asyncio.Lock())


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

    def __init__(self, producer: AIOKafkaProducer, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition

    async def commit(
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
        await self._producer.stop()


def _take_outcome(future: asyncio.Future[RecordMetadata]) -> None:
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
        return KafkaTableWriter(producer, self.topic, partition)

    async def load(self, since: Mapping[int, int]) -> dict[int, Loaded]:
        consumer = AIOKafkaConsumer(
            **kafka_connection(self._settings),
            client_id=f"{self._client_id}-placement-load",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in since]
            consumer.assign(tps)
            # Seek before asking for the ends: asked first, aiokafka puts the position there.
            await consumer.seek_to_beginning(*tps)
            for tp in tps:
                if since[tp.partition]:
                    consumer.seek(tp, since[tp.partition])
            ends = await consumer.end_offsets(tps)
            loaded = {tp.partition: Loaded(end=ends[tp]) for tp in tps}
            left = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            while left:
                polled = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in polled.items():
                    table = loaded[tp.partition]
                    for record in records:
                        read_entry(table, record.key, record.value)
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
            return loaded
        finally:
            await consumer.stop()

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
            tables = {tp: PlacementTable({}, unknown=()) for tp in source if starts[tp] == 0}
            left = [tp for tp in tables if ends[tp] > 0]
            while left:
                polled = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in polled.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            _learn(tables[tp], record.value)
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
        finally:
            await consumer.stop()
        for tp, table in tables.items():
            table.settle()
            history[tp.partition] = table.placements
        return history


def _learn(table: PlacementTable, value: bytes | None) -> None:
    """Route a command already applied, for the placement it left; skip what never decoded
    (the consumers dead-lettered it)."""
    if value is None:
        return
    try:
        table.route(decode_command(value))
    except ValidationError:
        return


def read_entry(table: Loaded, key: bytes | None, value: bytes | None) -> None:
    """Take one record of a table partition, read in offset order, into ``table``."""
    if key is None or value is None:
        return
    try:
        if key == UNKNOWN_KEY:
            table.unknown = UNKNOWN_ADAPTER.validate_json(value)
        else:
            table.entries[key.decode()] = PLACED_ADAPTER.validate_json(value)
    except (ValidationError, UnicodeDecodeError) as error:
        # Only this service's own producers write the topic; a bad entry is a bug, and
        # routing without it could leave a stale copy.
        raise RuntimeError(f"unreadable placement entry {key!r}: {error}") from error
