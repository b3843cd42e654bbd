"""Small fakes of Kafka, Redis and the regional stores, shared by every unit test suite.

Each fake has only the few methods the code under test calls, async where the real one is, and
records what it was asked so a test can assert on it. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced
from aiokafka.structs import RecordMetadata
from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.results import BulkWriteResult
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from regionstore_shared import command_consumer as service
from regionstore_shared.apply import Envelope, RegionUnavailableError
from regionstore_shared.documents import VERSION
from regionstore_shared.domain import upsert_command
from regionstore_shared.placement import Placed
from regionstore_shared.placement_local import UNKNOWN_KEY, LocalTables
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.runtime import ServiceState
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
    encode_command,
)
from regionstore_shared.settings import CommonSettings, KafkaSettings, RedisSettings
from regionstore_shared.status import NodeStatus, RegionStatus
from regionstore_testing.keys import MemoryKeyring

Document = dict[str, Any]
Op = InsertOne[Document] | ReplaceOne[Document]
REGIONS = ("region_1", "region_2", "region_3")
TP = TopicPartition("pending.region_1", 0)
TP2 = TopicPartition("pending.region_1", 1)


def appended(topic: str, offset: int, partition: int = 0) -> RecordMetadata:
    """What a producer's delivery future holds once Kafka appended a record at ``offset``."""
    return RecordMetadata(topic, partition, TopicPartition(topic, partition), offset, -1, 0, 0)


class OnePartition:
    """A fake producer's topics, each of one partition: where ``appended`` puts every record."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


# Kafka records and the consumer that hands them out.


@dataclass
class Record:
    """A consumer record: where it was read from, and its key, bytes and headers."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def tombstone(
    customer_id: str,
    version: int,
    targets: Iterable[tuple[str, Applier]] = (("region_1", Applier.WRITER),),
) -> DeleteCustomer:
    """A delete of ``customer_id`` for the given (region, role) targets."""
    return DeleteCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=0,
        targets=tuple(
            Target(region=region, role=role, action=Action.TOMBSTONE) for region, role in targets
        ),
        customer_id=customer_id,
    )


def upsert(customer_id: str, version: int, zip_prefix: int = 14409) -> UpsertCustomer:
    """An upsert placed by the default region map (14409: region_1, replica region_3)."""
    customer = Customer(
        customer_id=customer_id,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_prefix,
        customer_city="franca",
        customer_state="SP",
    )
    return upsert_command(
        customer, regions=RegionMap(DEFAULT_REGIONS), version=version, issued_at_ms=0
    )


def command_record(command: Command, offset: int, tp: TopicPartition = TP) -> Record:
    """The record a command arrives as: its bytes, keyed by customer."""
    return Record(tp.topic, tp.partition, offset, command.key.encode(), encode_command(command))


def delete_record(offset: int, tp: TopicPartition = TP) -> Record:
    """A delete of customer ``c<offset>`` in region_1, at version ``offset + 1``."""
    return command_record(tombstone(f"c{offset}", offset + 1), offset, tp)


def poison_record(offset: int, tp: TopicPartition = TP) -> Record:
    """A record that does not decode to a command."""
    return Record(tp.topic, tp.partition, offset, b"k", b'{"not": "a command"}')


class FakeConsumer:
    """Hands out scripted polls; once they run out it sets ``stop`` and polls nothing.

    ``seek`` only records where the loop rewound to: the next poll is the next scripted one.
    """

    def __init__(
        self,
        batches: list[list[Record] | dict[TopicPartition, list[Record]]],
        stop: asyncio.Event,
    ) -> None:
        self.batches = batches
        self.stop_event = stop
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.assigned = {TP, TP2}
        self.commit_errors: list[Exception] = []
        self.end: int | None = None
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        if not self.batches:
            self.stop_event.set()
            return {}
        batch = self.batches.pop(0)
        return batch if isinstance(batch, dict) else {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        # aiokafka's checks: a partition not assigned, or a group that moved on.
        for tp in offsets:
            if tp not in self.assigned:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned, "Partition is not assigned"  # aiokafka asserts too
        return self.end

    async def position(self, tp: TopicPartition) -> int:
        if tp not in self.assigned:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return 0


class TopicConsumer:
    """A consumer of one partition's log: polls from its position, and a seek moves it back.

    Polls return at most ``max_records``; at the end of the log ``on_idle`` runs and the poll
    returns nothing. ``fail_start`` is raised by ``start``, ``fail_polls`` by the next polls,
    one each. ``log`` hears
    "commit" on every commit, for a test to order it against other events.
    """

    def __init__(
        self,
        records: list[Record],
        *,
        on_idle: Callable[[], None],
        max_records: int = 100,
        tp: TopicPartition = TP,
        log: list[str] | None = None,
    ) -> None:
        self.tp = tp
        self.records = records
        self.on_idle = on_idle
        self.max_records = max_records
        self.position_at = 0
        self.commits: list[int] = []
        self.seeks: list[int] = []
        self.fail_polls: list[Exception] = []
        self.fail_start: Exception | None = None
        self.log = log if log is not None else []
        self.started = False
        self.stopped = False

    @property
    def committed(self) -> int:
        """The last committed offset, 0 before any commit."""
        return self.commits[-1] if self.commits else 0

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        if self.fail_polls:
            raise self.fail_polls.pop(0)
        polled = self.records[self.position_at : self.position_at + self.max_records]
        if not polled:
            self.on_idle()
            await asyncio.sleep(0)  # a poll that waited and got nothing: others run meanwhile
            return {}
        self.position_at += len(polled)
        return {self.tp: polled}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.log.append("commit")
        self.commits.append(offsets[self.tp].offset)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position_at = offset

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.records)

    async def position(self, tp: TopicPartition) -> int:
        return self.position_at


# Kafka producer.


class FakeFuture:
    """A send's acknowledgement: the message counts as sent once this runs (as a task, like
    the future of Kafka's producer, which settles whether or not it is awaited).

    With ``error`` set, awaiting it raises instead, as a send Kafka refused does.
    """

    def __init__(
        self, sent: list[dict[str, Any]], message: dict[str, Any], error: Exception | None
    ) -> None:
        self._sent = sent
        self._message = message
        self._error = error

    def __await__(self) -> Any:
        async def acked() -> None:
            if self._error is not None:
                raise self._error
            self._sent.append(self._message)

        return acked().__await__()


class FakeProducer:
    """Records a message once its send is awaited: acknowledged, like Kafka's future.

    ``queued`` holds every message handed to ``send``, acknowledged or not; ``refuse`` fails
    the acknowledgement of the next sends, one error each.
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.queued: list[dict[str, Any]] = []
        self.refuse: list[Exception] = []

    async def send(self, topic: str, **message: Any) -> asyncio.Future[None]:
        queued = {"topic": topic, **message}
        self.queued.append(queued)
        error = self.refuse.pop(0) if self.refuse else None
        return asyncio.ensure_future(FakeFuture(self.sent, queued, error))

    async def send_and_wait(self, topic: str, **message: Any) -> None:
        await (await self.send(topic, **message))


# The apply step and the dead-letter topic, as the consume loop sees them.


class FakeApplier:
    """Records each batch's customer ids and selected targets; fails on the given calls.

    ``error`` is what a failing call raises; ``during`` runs once (awaited if it gives an
    awaitable), in the middle of the next
    call (after the yield a store round trip would give other tasks).
    """

    def __init__(
        self,
        fail_on_call: int | Iterable[int] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.calls = 0
        if fail_on_call is None:
            self.failing: set[int] = set()
        elif isinstance(fail_on_call, int):
            self.failing = {fail_on_call}
        else:
            self.failing = set(fail_on_call)
        self.error = error if error is not None else RegionUnavailableError("region_1", "down")
        self.applied: list[list[str]] = []
        self.selected: list[list[Target]] = []
        self.during: Callable[[], object] | None = None

    async def apply(
        self, envelopes: Sequence[Envelope], select: Callable[[Command], Iterable[Target]]
    ) -> None:
        self.calls += 1
        self.applied.append([envelope.command.key for envelope in envelopes])
        self.selected.append([t for envelope in envelopes for t in select(envelope.command)])
        # Yield once, as a store round trip would: the next poll runs meanwhile.
        await asyncio.sleep(0)
        if self.during is not None:
            during, self.during = self.during, None
            if inspect.isawaitable(outcome := during()):
                await outcome
        if self.calls in self.failing:
            raise self.error


class FakeTableWriter:
    """A partition's transactional writer: a commit is all or nothing, and fails once fenced;
    as aiokafka's producer, once it said so it is in a fatal state, and the next transaction
    it begins fails on that."""

    def __init__(self, store: FakeTableStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.fenced = False
        self.fatal = False
        self.closed = False

    async def commit(
        self,
        entries: Mapping[bytes, bytes],
        offsets: Mapping[TopicPartition, Any],
        group: str,
    ) -> int | None:
        if self.fatal:
            raise AssertionError("Invalid state transition FATAL_ERROR -> IN_TRANSACTION")
        await asyncio.sleep(0)  # a round trip: a rebalance may fence the writer meanwhile
        if self.fenced:
            self.fatal = True
            raise ProducerFenced()
        if self.store.commit_errors:
            raise self.store.commit_errors.pop(0)
        log = self.store.logs.setdefault(self.partition, [])
        log.append(dict(entries))
        self.store.commits.append({tp: meta.offset for tp, meta in offsets.items()})
        return len(log)

    async def close(self) -> None:
        self.closed = True


class FakeTableStore:
    """Placement tables in memory, with Kafka's transactional behaviour: a new writer of a
    partition fences the one before, and only committed entries are loaded."""

    def __init__(self, history: Mapping[int, Mapping[str, Placed] | None] | None = None) -> None:
        self.logs: dict[int, list[dict[bytes, bytes]]] = {}
        """Each table partition's committed transactions, in order."""
        self.loads: list[dict[int, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.commit_errors: list[BaseException] = []
        self.writers: dict[int, FakeTableWriter] = {}
        self.fenced: list[int] = []
        self.followed = asyncio.Event()
        self._history = dict(history or {})

    async def fence(self, partition: int) -> FakeTableWriter:
        if (old := self.writers.get(partition)) is not None:
            old.fenced = True
        self.fenced.append(partition)
        self.writers[partition] = writer = FakeTableWriter(self, partition)
        return writer

    async def load(self, since: Mapping[int, int], into: LocalTables) -> dict[int, int]:
        """Entries from the offsets given: a table partition's offsets here are its commits."""
        self.loads.append(dict(since))
        ends = {}
        for p, start in since.items():
            log = self.logs.get(p, [])
            ends[p] = len(log)
            if start <= len(log):
                self.read(p, start, into)
        return ends

    def read(self, partition: int, start: int, into: LocalTables) -> None:
        """Take a partition's committed entries from ``start`` into ``into``."""
        log = self.logs.get(partition, [])
        into.take(
            partition,
            [
                (at, k, v)
                for at, entries in enumerate(log)
                if at >= start
                for k, v in entries.items()
            ],
        )

    async def follow(
        self, into: LocalTables, owned: Collection[int], caught_up: asyncio.Event
    ) -> None:
        """Follow as Kafka would: every partition's commits, read now, then waiting."""
        for p in list(self.logs):
            if p not in owned:
                self.read(p, into.mark(p).offset, into)
        caught_up.set()
        self.followed.set()
        await asyncio.Event().wait()

    async def history(self, partitions: Collection[int]) -> dict[int, dict[str, Placed] | None]:
        return {p: None if (h := self._history.get(p, {})) is None else dict(h) for p in partitions}

    def table(self, partition: int) -> dict[bytes, bytes]:
        """A table partition's committed entries, the newest of each key."""
        return {k: v for entries in self.logs.get(partition, []) for k, v in entries.items()}

    def unknown(self, partition: int) -> bytes | None:
        """The committed ``unknown`` entry of a partition's table."""
        return self.table(partition).get(UNKNOWN_KEY)


class FakeDeadLetters:
    """Records the offsets of the undecodable records sent to the dead-letter topic."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, record: Record, error: str) -> None:
        assert "invalid command" in error
        self.sent.append(record.offset)


# Redis: status keys, counters and keyspace notifications.


class FakeRedis:
    """String keys and hashes; ``down`` fails every command with ``error``, as redis-py does."""

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings if settings is not None else RedisSettings()
        self.values: dict[str, str] = {}
        self.hashes: dict[str, dict[str, int | str]] = {}
        self.streams: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.down = False
        self.error: RedisError = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise self.error

    async def mget(self, keys: list[str]) -> list[str | None]:
        self._check()
        return [self.values.get(key) for key in keys]

    async def set(self, key: str, value: str) -> bool:
        self._check()
        self.values[key] = value
        return True

    async def hincrby(self, key: str, name: str, amount: int) -> int:
        self._check()
        held = self.hashes.setdefault(key, {})
        total = int(held.get(name, 0)) + amount
        held[name] = total
        return total

    async def hset(self, key: str, mapping: dict[str, str]) -> int:
        self._check()
        self.hashes.setdefault(key, {}).update(mapping)
        return len(mapping)

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    async def xadd(self, key: str, fields: dict[str, str], **_: Any) -> str:
        self._check()
        entries = self.streams.setdefault(key, [])
        entries.append((f"{len(entries) + 1}-0", dict(fields)))
        return entries[-1][0]

    async def hgetall(self, key: str) -> dict[str, str]:
        self._check()
        return {name: str(value) for name, value in self.hashes.get(key, {}).items()}

    def mark(self, region: str, status: NodeStatus | RegionStatus) -> None:
        """Set a region's status key directly, without any keyspace event."""
        self.values[self.settings.status_key(region)] = status.value


class FakePipeline:
    """Queues commands and runs them in order on ``execute``: all of them, or none when the
    Redis is down (as MULTI/EXEC)."""

    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._queued: list[Callable[[], Awaitable[object]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._queued.clear()

    def __getattr__(self, name: str) -> Callable[..., None]:
        command = getattr(self._redis, name)

        def queue(*args: Any, **kwargs: Any) -> None:
            self._queued.append(lambda: command(*args, **kwargs))

        return queue

    async def execute(self) -> list[object]:
        self._redis._check()  # one round trip, counted once
        results = []
        for command in self._queued:
            self._redis.calls -= 1
            results.append(await command())
        self._queued.clear()
        return results


class FakePubSub:
    """One connection's subscription: fails as scripted, or yields the scripted messages.

    After its messages it either stays subscribed with nothing more to say (``idle`` is set
    then), or, with ``drop``, loses the connection.
    """

    def __init__(
        self,
        fail: bool,
        messages: list[dict[str, Any]],
        idle: asyncio.Event,
        *,
        drop: bool = False,
    ) -> None:
        self._fail = fail
        self._messages = messages
        self._idle = idle
        self._drop = drop
        self.patterns: list[str] = []
        self.closed = False

    async def __aenter__(self) -> FakePubSub:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.closed = True

    async def psubscribe(self, *patterns: str) -> None:
        if self._fail:
            raise RedisConnectionError("Connection closed by server.")
        self.patterns.extend(patterns)

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        for message in self._messages:
            yield message
        if self._drop:
            raise RedisConnectionError("Connection closed by server.")
        self._idle.set()
        await asyncio.Event().wait()  # a live subscription with nothing more to say


class PubSubRedis(FakeRedis):
    """A FakeRedis whose successive ``pubsub()`` connections are the given ones."""

    def __init__(self, connections: list[FakePubSub]) -> None:
        super().__init__()
        self._connections = connections
        self.opened: list[FakePubSub] = []

    def pubsub(self) -> FakePubSub:
        connection = self._connections.pop(0)
        self.opened.append(connection)
        return connection


# A regional store.


def duplicate_key(index: int) -> dict[str, Any]:
    return {"index": index, "code": 11000, "errmsg": "E11000 duplicate key error"}


Hook = Callable[["FakeCollection"], None]


class FakeCollection:
    """A regional store in a dict, answering bulk writes the way MongoDB does.

    An unordered bulk of ``InsertOne`` inserts every new ``_id`` and reports the others as
    duplicate keys by index; a bulk of ``ReplaceOne`` (never upserting) replaces the documents
    its filter matches and reports how many matched. ``hooks`` run one per bulk write, before
    it, to let another applier write in between.

    ``refuse`` maps an ``_id`` to the code every write of it fails with, reported by index as
    a write error while the other operations of the bulk go on (a document the store rejects).
    ``poison`` maps an ``_id`` to an error that fails any whole request holding it (a request
    the store rejects without naming a document). ``before`` is awaited at the start of every
    bulk write, to hold a write in flight or order it after another region's.
    """

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.reads: list[str] = []
        self.writes: list[tuple[list[Op], bool]] = []
        self.fail_with: PyMongoError | None = None
        self.hooks: list[Hook | None] = []
        self.refuse: dict[str, int] = {}
        self.poison: dict[str, Exception] = {}
        self.before: Callable[[], Awaitable[object]] | None = None

    def find(self, *args: Any, **kwargs: Any) -> AsyncIterator[Document]:
        self.reads.append("find")

        async def cursor() -> AsyncIterator[Document]:
            for doc in self.docs.values():
                yield doc

        return cursor()

    async def find_one(self, query: Mapping[str, Any], *args: Any) -> Document | None:
        self.reads.append("find_one")
        assert set(query) == {"_id"}, "reads look documents up by _id alone"
        return self.docs.get(query["_id"])

    async def bulk_write(self, ops: Sequence[Op], ordered: bool = True) -> BulkWriteResult:
        self.writes.append((list(ops), ordered))
        if self.before is not None:
            await self.before()
        if self.fail_with is not None:
            raise self.fail_with
        if self.hooks:
            hook = self.hooks.pop(0)
            if hook is not None:
                hook(self)
        assert len({type(op) for op in ops}) == 1, "inserts and replaces go in separate bulks"
        for op in ops:
            poison = self.poison.get(id_of(op))
            if poison is not None:
                raise poison
        errors: list[dict[str, Any]] = []
        inserted = matched = 0
        for index, op in enumerate(ops):
            code = self.refuse.get(id_of(op))
            if code is not None:
                errors.append({"index": index, "code": code, "errmsg": f"refused with {code}"})
                continue
            if isinstance(op, InsertOne):
                doc: Document = op._doc
                if doc["_id"] in self.docs:
                    errors.append(duplicate_key(index))
                    continue
                self.docs[doc["_id"]] = dict(doc)
                inserted += 1
            else:
                assert not op._upsert, "a guarded replace must never upsert"
                guard: Mapping[str, Any] = op._filter
                assert set(guard) == {"_id", VERSION}, "the version check is in the filter"
                held = self.docs.get(guard["_id"])
                if held is not None and held[VERSION] < guard[VERSION]["$lt"]:
                    self.docs[guard["_id"]] = dict(op._doc)
                    matched += 1
        raw = {
            "writeErrors": errors,
            "writeConcernErrors": [],
            "nInserted": inserted,
            "nUpserted": 0,
            "nMatched": matched,
            "nModified": matched,
            "nRemoved": 0,
            "upserted": [],
        }
        if errors:
            raise BulkWriteError(raw)
        return BulkWriteResult(raw, acknowledged=True)

    def kinds(self) -> list[list[type]]:
        """The operation types of every bulk write, in order."""
        return [[type(op) for op in ops] for ops, _ in self.writes]

    def ids(self) -> list[list[str]]:
        """The ``_id`` of every operation of every bulk write, in order."""
        return [[id_of(op) for op in ops] for ops, _ in self.writes]


def id_of(op: Op) -> str:
    customer_id: str = op._doc["_id"] if isinstance(op, InsertOne) else op._filter["_id"]
    return customer_id


class FakeStatus:
    """Statuses from a dict, counting its reads."""

    def __init__(self, statuses: dict[str, NodeStatus] | None = None) -> None:
        self.statuses = statuses or {}
        self.reads = 0

    async def all(self) -> dict[str, NodeStatus]:
        self.reads += 1
        return dict(self.statuses)


# A command consumer service with its I/O edges replaced.

COMMANDS = TopicPartition("customers.commands", 0)


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget every ``REGIONSTORE_*`` variable, so settings are the code's defaults."""
    for name in list(os.environ):
        if name.startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)


class ConsumerRig:
    """Runs ``consume_commands`` against fakes: no topics created, no client connected.

    ``run_service`` stands for :func:`~regionstore_shared.runtime.run_service`: it runs the
    work with :attr:`state` and no HTTP listener. The consumer hands out ``polls`` from the
    command topic, then stops the service.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, polls: list[list[Record]]) -> None:
        self.state = ServiceState()
        # The consumers listen for status changes: one subscription, quiet for good.
        self.redis = PubSubRedis([FakePubSub(False, [], asyncio.Event())])
        self.stores = {region: FakeCollection() for region in REGIONS}
        self.producer = FakeProducer()
        self.polls = polls
        self.settings: CommonSettings | None = None
        self.consumer: FakeConsumer | None = None
        self.subscriptions: list[dict[str, Any]] = []
        self.clients_for: list[str] = []
        self.topics_ensured = 0
        self.ready_at_first_poll: bool | None = None
        self.tables = FakeTableStore()
        self.copartitioned: list[tuple[str, ...]] = []
        monkeypatch.setattr(service, "ensure_topics", self._ensure_topics)
        monkeypatch.setattr(service, "ensure_copartitioned", self._ensure_copartitioned)
        monkeypatch.setattr(service, "KafkaTableStore", lambda *_, **__: self.tables)
        monkeypatch.setattr(service, "open_core", self._open_core)
        monkeypatch.setattr(service, "ensure_indexes", self._ensure_indexes)
        monkeypatch.setattr(service, "kafka_consumer", self._kafka_consumer)
        self.keyring = MemoryKeyring()
        monkeypatch.setattr(service, "open_keyring", self._open_keyring)

    async def _open_keyring(self, *_: object) -> MemoryKeyring:
        return self.keyring

    async def run_service(
        self,
        settings: CommonSettings,
        work: Callable[[ServiceState], Awaitable[None]],
    ) -> None:
        self.settings = settings
        await work(self.state)

    async def _ensure_topics(self, settings: CommonSettings) -> None:
        self.topics_ensured += 1

    async def _ensure_copartitioned(self, settings: CommonSettings, *topics: str) -> None:
        self.copartitioned.append(topics)

    async def _open_core(
        self, stack: contextlib.AsyncExitStack, settings: CommonSettings, name: str
    ) -> tuple[FakeRedis, dict[str, FakeCollection], FakeProducer]:
        self.clients_for.append(name)
        return self.redis, self.stores, self.producer

    async def _ensure_indexes(self, collections: Mapping[str, Any]) -> dict[str, str]:
        return dict.fromkeys(collections, "ensured")

    def _kafka_consumer(
        self,
        settings: KafkaSettings,
        *topics: str,
        group_id: str,
        client_id: str,
        listener: Any = None,
        gather: bool = False,
    ) -> FakeConsumer:
        del gather  # the fake hands over what it holds, gathering or not
        self.subscriptions.append(
            {"topics": topics, "group_id": group_id, "client_id": client_id, "listener": listener}
        )
        rig = self

        class Consumer(FakeConsumer):
            async def start(self) -> None:
                # aiokafka joins the group and calls the listener before the first poll.
                await super().start()
                await listener.on_partitions_assigned(self.assignment())

            async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
                if rig.ready_at_first_poll is None:
                    rig.ready_at_first_poll = rig.state.ready
                return await super().getmany(timeout_ms)

        consumer = Consumer([{COMMANDS: poll} for poll in self.polls], self.state.stop)
        consumer.assigned = {COMMANDS}
        self.consumer = consumer
        return consumer
