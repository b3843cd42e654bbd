"""The customers' data keys: a compacted Kafka topic, and a table of it on each process's disk.

The keys are kept where the commands are, in Kafka, so no write depends on anything Kafka does
not: a topic ``customers.keys`` (acks=all, compacted), one record per key, keyed
``<customer id>/<key id>`` and placed by the customer id, so all of a customer's keys are in one
partition. A record holds the secret and ``since``, the version of the first command the key
sealed. A key's record is acknowledged before any command sealed with it is sent, so a reader
that meets a command whose key it lacks reads the key's partition to its end and then knows.
That read is bounded: a reader that cannot finish it does not know, and the command waits
(:class:`~regionstore_shared.personal.KeysUnreadableError`), never taken for erased. Nor does a
table whose marks are past the topic's end (it followed another topic of that name) know: it
is read again whole.

A delete destroys, after Kafka acknowledged it, the customer's keys made before its version
(tombstones, acknowledged before the delete's 202): an upsert sent after that 202 reads the
partition to its end first, finds no key and makes one, so it stands. Compaction then removes
the destroyed secrets from the log: the topic's settings follow ``REGIONSTORE_ERASURE_WITHIN``
(:mod:`regionstore_shared.topics`).

Each process keeps the keys it follows in SQLite (:class:`KeyTable`), as the placement tables
are kept, so memory stays bounded at millions of customers and a restart reads only what was
written since it stopped. Not :mod:`regionstore_shared.placement_local` itself: a key's
tombstone must remove the secret from the disk too (``secure_delete``), and a table not followed
for longer than the topic keeps tombstones may have missed one, so it is read again whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import sqlite3
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from regionstore_shared.clients import kafka_admin, kafka_connection, kafka_producer
from regionstore_shared.delivery import Outcome, Outgoing, deliver
from regionstore_shared.personal import CustomerKey, KeyName, KeysUnreadableError
from regionstore_shared.placement_local import StateInUse
from regionstore_shared.settings import CommonSettings, KafkaSettings
from regionstore_shared.topics import key_tombstone_ms, partition_of

log = logging.getLogger(__name__)

FOLLOW_RETRY_S = 5.0
"""How long the follower waits before it reads again after Kafka failed it."""
SEEN_EVERY_S = 60.0
"""How often a table that is following notes so, records or not."""
RESEND_AFTER_S = 0.5
"""How long the gateway waits before it sends again a key record Kafka could not take."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS key (
    customer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    since INTEGER NOT NULL,
    secret BLOB NOT NULL,
    PRIMARY KEY (customer, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mark (partition INTEGER PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id INTEGER PRIMARY KEY CHECK (id = 0), at REAL NOT NULL);
"""

Record = tuple[int, bytes | None, bytes | None]
"""One record of a key partition: its offset, key and value."""
Held = tuple[CustomerKey, int]
"""A key and its ``since``."""


def record_key(customer_id: str, key_id: str) -> bytes:
    return f"{customer_id}/{key_id}".encode()


def parse_record(key: bytes, value: bytes | None) -> tuple[KeyName, Held | None]:
    """A key topic record: the key's name, and the key with its since (None: destroyed)."""
    customer_id, _, key_id = key.decode().rpartition("/")
    if value is None:
        return (customer_id, key_id), None
    body = json.loads(value)
    secret = base64.b64decode(body["secret"])
    return (customer_id, key_id), (CustomerKey(key_id, secret), int(body["since"]))


def record_value(key: CustomerKey, since: int) -> bytes:
    secret = base64.b64encode(key.secret).decode()
    return json.dumps({"since": since, "secret": secret}).encode()


class KeyTable:
    """The keys of the key topic, in one SQLite file of one process."""

    def __init__(self, directory: Path | None, *, name: str, stale_after_s: float) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                self._lock = _hold(directory / f"{name}.keys.lock")
            except StateInUse:
                # A second copy of a process given the same directory (a gateway started by
                # hand beside the stack's): it reads the topic whole into a table of its own.
                log.warning(
                    "key table in use by another process: this one keeps a temporary one",
                    extra={"directory": str(directory)},
                )
                directory = None
        if directory is None:
            self._scratch = tempfile.TemporaryDirectory()
            directory = Path(self._scratch.name)
            self._lock = _hold(directory / f"{name}.keys.lock")
        self.path = directory / f"{name}.keys.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A destroyed key's bytes are overwritten in the file, and the log is emptied at
        # each checkpoint, so the disk keeps no secret the topic no longer has.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_size_limit=0")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT at FROM seen").fetchone()
        if row is not None and time.time() - row[0] > stale_after_s:
            # Tombstones older than that may be gone from the topic: this file may hold
            # keys destroyed since, and only a whole read tells which.
            log.warning(
                "key table not followed for too long: read again", extra={"path": str(self.path)}
            )
            self.clear()

    def close(self) -> None:
        self._db.close()
        self._lock.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def clear(self) -> None:
        """Forget every key and mark, so that the topic is read again whole."""
        with _transaction(self._db):
            self._db.execute("DELETE FROM key")
            self._db.execute("DELETE FROM mark")
        self._db.execute("VACUUM")

    def mark(self, partition: int) -> int:
        row = self._db.execute(
            "SELECT offset FROM mark WHERE partition = ?", (partition,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def take(
        self, partition: int, records: Iterable[tuple[int, bytes | None, bytes | None]]
    ) -> None:
        """Take records of a key partition in offset order; those below the mark are held."""
        start = self.mark(partition)
        offset = start
        destroyed = False
        with _transaction(self._db):
            for at, key, value in records:
                if at < start or key is None:
                    continue
                offset = at + 1
                (customer, key_id), held = parse_record(key, value)
                if held is None:
                    self._drop(customer, [key_id])
                    destroyed = True
                else:
                    self._put(customer, *held)
            if offset != start:
                self._db.execute(
                    "INSERT INTO mark (partition, offset) VALUES (?, ?) ON CONFLICT (partition) "
                    "DO UPDATE SET offset = excluded.offset",
                    (partition, offset),
                )
            self._seen()
        if destroyed:
            self._forget()

    def seen(self) -> None:
        """The table is following the topic, even when nothing new came."""
        with _transaction(self._db):
            self._seen()

    def put(self, customer_id: str, key: CustomerKey, since: int) -> None:
        """Keep a key this process wrote and Kafka acknowledged."""
        with _transaction(self._db):
            self._put(customer_id, key, since)

    def drop(self, customer_id: str, key_ids: Collection[str]) -> None:
        """Forget keys this process destroyed and Kafka acknowledged."""
        with _transaction(self._db):
            self._drop(customer_id, key_ids)
        self._forget()

    def of(self, customer_id: str) -> list[Held]:
        """The customer's keys, oldest first."""
        rows = self._db.execute(
            "SELECT key_id, secret, since FROM key WHERE customer = ? ORDER BY since",
            (customer_id,),
        ).fetchall()
        return [(CustomerKey(key_id, bytes(secret)), int(since)) for key_id, secret, since in rows]

    def find(self, names: Iterable[KeyName]) -> dict[KeyName, CustomerKey]:
        found = {}
        for customer_id, key_id in set(names):
            row = self._db.execute(
                "SELECT secret FROM key WHERE customer = ? AND key_id = ?", (customer_id, key_id)
            ).fetchone()
            if row is not None:
                found[customer_id, key_id] = CustomerKey(key_id, bytes(row[0]))
        return found

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM key").fetchone()
        return int(count)

    def _put(self, customer_id: str, key: CustomerKey, since: int) -> None:
        self._db.execute(
            "INSERT INTO key (customer, key_id, since, secret) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (customer, key_id) DO UPDATE SET since = excluded.since, "
            "secret = excluded.secret",
            (customer_id, key.key_id, since, key.secret),
        )

    def _drop(self, customer_id: str, key_ids: Collection[str]) -> None:
        self._db.executemany(
            "DELETE FROM key WHERE customer = ? AND key_id = ?",
            [(customer_id, key_id) for key_id in key_ids],
        )

    def _forget(self) -> None:
        """Empty the write-ahead log, which still holds the pages as they were before."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seen(self) -> None:
        self._db.execute(
            "INSERT INTO seen (id, at) VALUES (0, ?) "
            "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            (time.time(),),
        )


def _hold(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateInUse(
            f"{path.parent} is in use by another process: "
            "give each process its own REGIONSTORE_STATE_DIR"
        ) from None
    return handle


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class KafkaKeyring:
    """The key topic, followed into a :class:`KeyTable`: finds keys for the appliers and the
    export, and (given ``writes``) makes and destroys them for the gateway."""

    def __init__(
        self,
        settings: KafkaSettings,
        table: KeyTable,
        *,
        client_id: str,
        writes: bool = False,
    ) -> None:
        self._settings = settings
        self._topic = settings.key_topic
        self._table = table
        self._client_id = client_id
        self._consumer = AIOKafkaConsumer(
            **kafka_connection(settings),
            client_id=f"{client_id}-keys",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # The broker answers a held fetch as soon as a key record comes (the minimum is one
            # byte), so the wait delays no key: it only sets how often an idle follower asks.
            # At 20 ms every process's follower asked 50 times a second, the largest idle cost
            # of Kafka and of each service (docs/performance.md, "What a write costs"); at
            # Kafka's default (500 ms) the four followers still asked 8 times a second.
            fetch_max_wait_ms=settings.held_fetch_ms,
            fetch_min_bytes=1,
            request_timeout_ms=settings.request_timeout_ms,
        )
        # Asks where the partitions end on a connection of its own: behind the follower's
        # fetch, which the broker may hold, every question would wait for it.
        self._ends = AIOKafkaConsumer(
            **kafka_connection(settings),
            client_id=f"{client_id}-key-ends",
            enable_auto_commit=False,
            request_timeout_ms=settings.request_timeout_ms,
        )
        self._producer: AIOKafkaProducer | None = (
            kafka_producer(settings, f"{client_id}-keys") if writes else None
        )
        self._partitions: list[TopicPartition] = []
        self._read: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self._follower: asyncio.Task[None] | None = None
        self._closing = False
        # How long a read of key partitions to their ends may take: a batch that cannot read
        # them sets aside the upserts whose keys it has not seen (KeysUnreadableError).
        self._read_within_s = settings.request_timeout_ms / 1000
        # A key record is waited for over two requests' time: when a broker is killed, its
        # partitions had no reachable leader for up to 15 s here (the dead broker's KRaft
        # session, then the election), as long as one request timeout, and a create refused
        # for that is a 503 that a longer wait turns into a 202. The producer retries the
        # record itself meanwhile (idempotent, so never twice in the log).
        self._write_within_s = 2 * settings.request_timeout_ms / 1000

    async def start(self) -> None:
        """Start following the key topic (in the background: nothing waits for it here)."""
        admin = kafka_admin(self._settings, f"{self._client_id}-keys")
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self._topic])
        finally:
            await admin.close()
        numbers = [p["partition"] for p in described["partitions"]]
        if not numbers:
            raise RuntimeError(f"topic {self._topic} has no partitions: is it created?")
        await self._consumer.start()
        await self._ends.start()
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(numbers)]
        ends = await self._end_offsets(self._partitions)
        past = {
            tp.partition: mark
            for tp, end in ends.items()
            if (mark := self._table.mark(tp.partition)) > end
        }
        if past:
            # The file followed another topic of that name (a stack started again on a new
            # Kafka, as make test-quorum does beside the single broker's state): below its
            # marks it would skip every key of this one, and take them all for destroyed.
            log.warning(
                "key table marks past the topic's end: read again whole",
                extra={"path": str(self._table.path), "marks": past},
            )
            self._table.clear()
        self._consumer.assign(self._partitions)
        for tp in self._partitions:
            self._consumer.seek(tp, self._table.mark(tp.partition))
            self._read[tp.partition] = self._table.mark(tp.partition)
        if self._producer is not None:
            await self._producer.start()
        self._follower = asyncio.create_task(self._follow(), name="key follower")

    async def close(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.cancel()
            # Bounded: a cancellation swallowed by a wait inside the poll (Python 3.11's
            # wait_for may) still ends the loop, by the flag, within one poll.
            await asyncio.wait({self._follower}, timeout=5)
        if self._producer is not None:
            await self._producer.stop()
        await self._consumer.stop()
        await self._ends.stop()

    def __len__(self) -> int:
        return len(self._table)

    @property
    def table(self) -> KeyTable:
        """The keys this process holds."""
        return self._table

    async def _follow(self) -> None:
        noted = time.monotonic()
        while not self._closing:
            try:
                polled = await self._consumer.getmany(timeout_ms=1000)
                for tp, records in polled.items():
                    self._table.take(tp.partition, _records(records))
                for tp in self._partitions:
                    self._read[tp.partition] = await self._consumer.position(tp)
                if not polled and time.monotonic() - noted > SEEN_EVERY_S:
                    self._table.seen()
                    noted = time.monotonic()
                async with self._progress:
                    self._progress.notify_all()
            except Exception:
                # Every use waits for what it needs (_sync): a follower that stopped would hold
                # them all, so it reads again, from the table's marks.
                log.exception("key follower stopped, reading again")
                await asyncio.sleep(FOLLOW_RETRY_S)
                with contextlib.suppress(Exception):
                    for tp in self._partitions:
                        self._consumer.seek(tp, self._table.mark(tp.partition))

    async def caught_up(self) -> None:
        """Return once the table holds every key the topic held when this was called."""
        started = time.perf_counter()
        async with self._progress:
            ends = await self._end_offsets(self._partitions)
            await self._progress.wait_for(
                lambda: all(self._read.get(tp.partition, 0) >= end for tp, end in ends.items())
            )
        log.info(
            "key table caught up",
            extra={"keys": len(self._table), "seconds": round(time.perf_counter() - started, 3)},
        )

    async def _end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            ends: dict[TopicPartition, int] = await self._ends.end_offsets(partitions)
        except RuntimeError as error:
            # aiokafka on uvloop: a request on a connection the broker closed raises
            # "... the handler is closed" (aio-libs/aiokafka#1038), not a KafkaError; left
            # as it is, a delete Kafka acknowledged was answered 500.
            raise KafkaConnectionError(f"the key topic's ends are unreadable: {error}") from error
        return ends

    def _partition(self, customer_id: str) -> int:
        return partition_of(customer_id, len(self._partitions))

    async def _sync(self, customer_ids: Iterable[str], within_s: float) -> None:
        """Return once the table holds every key record of these customers' partitions that
        Kafka had acknowledged when this was called."""
        wanted = {TopicPartition(self._topic, self._partition(c)) for c in customer_ids}
        if not wanted:
            return
        async with asyncio.timeout(within_s):
            ends = await self._end_offsets(list(wanted))
            async with self._progress:
                await self._progress.wait_for(
                    lambda: all(self._read.get(tp.partition, 0) >= end for tp, end in ends.items())
                )

    async def find(self, names: Iterable[KeyName]) -> dict[KeyName, CustomerKey]:
        """The keys among ``names`` the table holds once their partitions are read to the ends
        they had when this was called: one left out was destroyed (its key record was
        acknowledged before any command it sealed was sent). Raises KeysUnreadableError,
        after at most one request's time, when those ends cannot be reached."""
        wanted = set(names)
        found = self._table.find(wanted)
        missing = wanted - found.keys()
        if not missing:
            return found
        try:
            await self._sync({c for c, _ in missing}, self._read_within_s)
        except (TimeoutError, KafkaError) as error:
            found |= self._table.find(missing)
            unknown = wanted - found.keys()
            if unknown:
                reason = "timed out" if isinstance(error, TimeoutError) else repr(error)
                raise KeysUnreadableError(found, unknown, reason) from error
            return found
        return found | self._table.find(missing)

    async def obtain(
        self, first: Mapping[str, int], *, newer_than: Mapping[str, int]
    ) -> dict[str, CustomerKey]:
        producer = self._writer()
        # Only a key to reuse needs the partition read to its end (a delete acknowledged
        # through another gateway may have destroyed it); a new key is safe as it is.
        await self._synced([c for c in first if self._table.of(c)])
        keys: dict[str, CustomerKey] = {}
        fresh: dict[str, tuple[CustomerKey, int]] = {}
        for customer_id, version in first.items():
            floor = newer_than.get(customer_id)
            usable = [
                k for k, since in self._table.of(customer_id) if floor is None or since > floor
            ]
            if usable:
                keys[customer_id] = usable[-1]
            else:
                fresh[customer_id] = (CustomerKey.new(), version)
        await self._write(
            producer,
            [
                (c, record_key(c, k.key_id), record_value(k, since))
                for c, (k, since) in fresh.items()
            ],
        )
        for customer_id, (key, since) in fresh.items():
            self._table.put(customer_id, key, since)
            keys[customer_id] = key
        return keys

    async def destroy(self, before: Mapping[str, int]) -> int:
        producer = self._writer()
        await self._synced(before)
        doomed = {
            c: [k.key_id for k, since in self._table.of(c) if since < version]
            for c, version in before.items()
        }
        await self._write(
            producer, [(c, record_key(c, k), None) for c, ks in doomed.items() for k in ks]
        )
        for customer_id, key_ids in doomed.items():
            self._table.drop(customer_id, key_ids)
        return sum(len(ks) for ks in doomed.values())

    def _writer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("this keyring only reads keys")
        return self._producer

    async def _synced(self, customer_ids: Iterable[str]) -> None:
        try:
            await self._sync(customer_ids, self._read_within_s)
        except TimeoutError as error:
            raise KafkaTimeoutError("the key topic was not read in time") from error

    async def _write(
        self, producer: AIOKafkaProducer, records: Sequence[tuple[str, bytes, bytes | None]]
    ) -> None:
        """Write key records, and return once Kafka acknowledged every one; raise otherwise."""
        if not records:
            return
        deadline = time.monotonic() + self._write_within_s
        while True:
            outgoing = [
                Outgoing(value, key, partition=self._partition(c)) for c, key, value in records
            ]
            within = max(0.0, deadline - time.monotonic())
            deliveries = await deliver(producer, self._topic, outgoing, timeout_s=within)
            # A record the producer refused outright (send raised) fails the write at once.
            for delivery in deliveries:
                if delivery.outcome is Outcome.NOT_SENT and delivery.error is not None:
                    raise delivery.error
            if any(delivery.waiting for delivery in deliveries):
                raise KafkaTimeoutError("a key record was not acknowledged in time")
            failed = [
                (record, delivery.error)
                for record, delivery in zip(records, deliveries, strict=True)
                if delivery.error is not None
            ]
            if not failed:
                return
            error = failed[0][1]
            # A record that expired with no leader for its partition is sent again while the
            # bound lasts; writing a key record twice leaves one after compaction.
            if not (isinstance(error, KafkaError) and error.retriable):
                raise error
            if time.monotonic() + RESEND_AFTER_S >= deadline:
                raise error
            await asyncio.sleep(RESEND_AFTER_S)
            records = [record for record, _ in failed]


def _records(
    records: Iterable[ConsumerRecord[bytes, bytes]],
) -> Iterator[Record]:
    for record in records:
        yield record.offset, record.key, record.value


async def open_keyring(
    stack: contextlib.AsyncExitStack, settings: CommonSettings, *, writes: bool = False
) -> KafkaKeyring:
    """This process's keyring, following the key topic into a table under
    ``REGIONSTORE_STATE_DIR`` (a temporary one when unset), closed with ``stack``; returned
    once the table caught up with the topic, as the placement tables are, so that no write
    nor batch waits for a whole partition to be read."""
    table = KeyTable(
        settings.state_dir,
        name=settings.service_name,
        stale_after_s=key_tombstone_ms(settings) / 1000,
    )
    stack.callback(table.close)
    keyring = KafkaKeyring(settings.kafka, table, client_id=settings.service_name, writes=writes)
    stack.push_async_callback(keyring.close)
    await keyring.start()
    await keyring.caught_up()
    return keyring
