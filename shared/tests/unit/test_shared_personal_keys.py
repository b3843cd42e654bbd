"""The key table: what the key topic says, on disk, with destroyed secrets gone from the file."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    LeaderNotAvailableError,
    TopicAuthorizationFailedError,
)

from regionstore_shared import personal_keys
from regionstore_shared.apply import (
    BatchApplier,
    Envelope,
    Parker,
    RegionUnavailableError,
    Suspicion,
)
from regionstore_shared.documents import DELETED, Collection
from regionstore_shared.personal import CustomerKey, KeysUnreadableError, seal_all
from regionstore_shared.personal_keys import (
    KafkaKeyring,
    KeyTable,
    open_keyring,
    parse_record,
    record_key,
    record_value,
)
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    Target,
    UpsertCustomer,
    decode_command,
    encode_command,
)
from regionstore_shared.settings import CommonSettings, KafkaSettings
from regionstore_shared.topics import partition_of
from shared.tests.fakes import FakeCollection, FakeStatus

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
DAY_S = 86_400.0
MARKER = "zzmarkerville"


def home(command: Command | None) -> tuple[Target, ...]:
    return (Target(region="region_1", role=Applier.WRITER, action=Action.UPSERT),)


class Recorded:
    """A parker that keeps the bytes of what it parks."""

    def __init__(self) -> None:
        self.parked: list[tuple[str, list[bytes], str]] = []

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None:
        self.parked.append((region, [e.raw for e in envelopes], reason))


def key_record(at: int, key: CustomerKey, since: int) -> tuple[int, bytes, bytes]:
    return at, record_key(CUSTOMER, key.key_id), record_value(key, since)


def tombstone(at: int, key: CustomerKey) -> tuple[int, bytes, None]:
    return at, record_key(CUSTOMER, key.key_id), None


class TestRecords:
    def test_a_record_round_trips_and_a_tombstone_says_destroyed(self) -> None:
        key = CustomerKey.new()
        name, held = parse_record(record_key(CUSTOMER, key.key_id), record_value(key, 42))
        assert (name, held) == ((CUSTOMER, key.key_id), (key, 42))
        assert parse_record(record_key(CUSTOMER, key.key_id), None) == (
            (CUSTOMER, key.key_id),
            None,
        )

    def test_a_customer_s_keys_share_the_command_partition(self) -> None:
        # Kafka's default partitioner on the command key: murmur2 of the customer id.
        assert partition_of(CUSTOMER, 6) == partition_of(CUSTOMER, 6)
        assert {partition_of(f"{n:032x}", 6) for n in range(200)} == set(range(6))


class TestKeyTable:
    def test_records_are_taken_in_order_and_a_tombstone_destroys(self, tmp_path: Path) -> None:
        old, new = CustomerKey.new(), CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(0, old, 5), key_record(1, new, 9), tombstone(2, old)])
        assert table.mark(0) == 3
        assert table.of(CUSTOMER) == [(new, 9)]
        assert table.find([(CUSTOMER, old.key_id), (CUSTOMER, new.key_id)]) == {
            (CUSTOMER, new.key_id): new
        }
        # Records already held are not taken again: a replay cannot bring a key back.
        table.take(0, [key_record(0, old, 5)])
        assert table.of(CUSTOMER) == [(new, 9)]
        table.close()

    def test_the_table_outlives_a_restart(self, tmp_path: Path) -> None:
        key = CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(3, [key_record(10, key, 5)])
        table.close()
        again = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        assert (again.mark(3), again.of(CUSTOMER)) == (11, [(key, 5)])
        again.close()

    def test_a_destroyed_secret_is_not_left_in_the_file(self, tmp_path: Path) -> None:
        keys = [CustomerKey.new() for _ in range(50)]
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(at, key, at) for at, key in enumerate(keys)])
        table.take(0, [tombstone(50 + at, key) for at, key in enumerate(keys)])
        table.close()
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert [k for k in keys if k.secret in on_disk] == []

    def test_a_table_not_followed_for_longer_than_tombstones_live_is_read_again(
        self, tmp_path: Path
    ) -> None:
        key = CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(0, key, 5)])
        table.close()
        # The table notes when it last followed the topic; any time since is too long here.
        stale = KeyTable(tmp_path, name="t", stale_after_s=0.0)
        assert (stale.mark(0), stale.of(CUSTOMER)) == (0, [])
        stale.close()

    def test_own_keys_are_kept_and_dropped(self, tmp_path: Path) -> None:
        key = CustomerKey.new()
        table = KeyTable(None, name="t", stale_after_s=DAY_S)
        table.put(CUSTOMER, key, 7)
        assert table.of(CUSTOMER) == [(key, 7)]
        table.drop(CUSTOMER, [key.key_id])
        assert len(table) == 0
        table.close()

    def test_a_second_process_on_the_same_directory_keeps_a_table_of_its_own(
        self, tmp_path: Path
    ) -> None:
        key = CustomerKey.new()
        first = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        first.take(0, [key_record(0, key, 5)])
        second = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        assert second.path.parent != tmp_path
        assert (second.mark(0), len(second)) == (0, 0)
        second.close()
        first.close()


class FakeLog:
    """The key topic in memory: what the fake producer appends, the fake consumer reads."""

    def __init__(self, partitions: int = 3) -> None:
        self.records: dict[int, list[tuple[bytes, bytes | None]]] = {
            p: [] for p in range(partitions)
        }
        self.refuse: list[BaseException] = []
        """Errors the next key records are refused with, one each."""
        self.silent = False
        """Nothing is answered: no record is fetched, no partition's end told (the leaders
        cannot be reached)."""
        self.appended = asyncio.Event()
        self.broken: BaseException | None = None
        """What asking for a partition's end raises (a connection the broker closed)."""


class FakeKeyProducer:
    def __init__(self, log: FakeLog) -> None:
        self.log = log

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, *, key: bytes, value: bytes | None, partition: int
    ) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.log.refuse:
            future.set_exception(self.log.refuse.pop(0))
            return future
        self.log.records[partition].append((key, value))
        self.log.appended.set()
        future.set_result(None)
        return future


@dataclass
class FakeRecord:
    offset: int
    key: bytes
    value: bytes | None


class FakeKeyConsumer:
    def __init__(self, log: FakeLog) -> None:
        self.log = log
        self.at: dict[TopicPartition, int] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.at = dict.fromkeys(partitions, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.at[tp]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.log.broken is not None:
            raise self.log.broken
        if self.log.silent:
            await asyncio.Event().wait()
        return {tp: len(self.log.records[tp.partition]) for tp in tps}

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[FakeRecord]]:
        if self.log.silent:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        polled = {}
        for tp, at in self.at.items():
            held = self.log.records[tp.partition][at:]
            if held:
                polled[tp] = [FakeRecord(at + i, k, v) for i, (k, v) in enumerate(held)]
                self.at[tp] = at + len(held)
        if not polled:
            self.log.appended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.log.appended.wait(), timeout_ms / 1000)
        return polled


class FakeAdmin:
    def __init__(self, log: FakeLog) -> None:
        self.log = log

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"partitions": [{"partition": p} for p in self.log.records]}]


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    log = FakeLog()
    monkeypatch.setattr(personal_keys, "AIOKafkaConsumer", lambda **_: FakeKeyConsumer(log))
    monkeypatch.setattr(personal_keys, "kafka_producer", lambda *_: FakeKeyProducer(log))
    monkeypatch.setattr(personal_keys, "kafka_admin", lambda *_: FakeAdmin(log))
    return log


@contextlib.asynccontextmanager
async def keyring(writes: bool = True) -> AsyncIterator[KafkaKeyring]:
    async with contextlib.AsyncExitStack() as stack:
        settings = CommonSettings()
        yield await open_keyring(stack, settings, writes=writes)


class TestKafkaKeyring:
    async def test_the_follower_is_answered_at_once_and_asks_seldom_when_idle(
        self, kafka: FakeLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        options: list[dict[str, Any]] = []

        def consumer(**given: Any) -> FakeKeyConsumer:
            options.append(given)
            return FakeKeyConsumer(kafka)

        monkeypatch.setattr(personal_keys, "AIOKafkaConsumer", consumer)
        async with keyring(writes=False):
            (follower,) = [o for o in options if o["client_id"].endswith("-keys")]
            assert follower["fetch_min_bytes"] == 1
            assert follower["fetch_max_wait_ms"] >= 500
            # The fetch is bounded by a request's timeout: held longer, an idle one would fail.
            assert follower["fetch_max_wait_ms"] < follower["request_timeout_ms"]

    def test_an_idle_follower_asks_every_5_s_within_half_a_request_timeout(self) -> None:
        assert KafkaSettings().held_fetch_ms == 5000
        assert KafkaSettings(request_timeout_ms=4000).held_fetch_ms == 2000

    async def test_a_new_key_is_in_the_topic_before_obtain_returns(self, kafka: FakeLog) -> None:
        async with keyring() as gateway, keyring(writes=False) as writer:
            keys = await gateway.obtain({CUSTOMER: 5}, newer_than={})
            key = keys[CUSTOMER]
            held = [r for p in kafka.records.values() for r in p]
            assert held == [(record_key(CUSTOMER, key.key_id), record_value(key, 5))]
            # Another process finds it, reading the partition to its end when it lacks it.
            assert await writer.find([(CUSTOMER, key.key_id)]) == {(CUSTOMER, key.key_id): key}
            # The customer's next write reuses it.
            assert (await gateway.obtain({CUSTOMER: 6}, newer_than={}))[CUSTOMER] == key

    async def test_a_delete_destroys_only_the_keys_made_before_it(self, kafka: FakeLog) -> None:
        async with keyring() as gateway, keyring(writes=False) as writer:
            old = (await gateway.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            new = (await gateway.obtain({CUSTOMER: 9}, newer_than={CUSTOMER: 8}))[CUSTOMER]
            assert new != old
            assert await gateway.destroy({CUSTOMER: 8}) == 1
            names = [(CUSTOMER, old.key_id), (CUSTOMER, new.key_id)]
            await writer.caught_up()  # a reader drops a key once it read the tombstone
            assert list(await writer.find(names)) == [(CUSTOMER, new.key_id)]
            assert list(await gateway.find(names)) == [(CUSTOMER, new.key_id)]

    async def test_a_key_destroyed_by_another_gateway_is_never_reused(self, kafka: FakeLog) -> None:
        async with keyring() as one, keyring() as two:
            key = (await one.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            await two.caught_up()
            assert (await two.obtain({CUSTOMER: 6}, newer_than={}))[CUSTOMER] == key
            assert await one.destroy({CUSTOMER: 7}) == 1
            # The delete's 202 came back: a write through the other gateway makes a new key.
            assert (await two.obtain({CUSTOMER: 8}, newer_than={}))[CUSTOMER] != key

    async def test_a_gateway_that_has_not_seen_a_key_makes_another_and_both_open(
        self, kafka: FakeLog
    ) -> None:
        async with keyring() as one, keyring() as two:
            first = (await one.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            kafka.appended.clear()  # the other gateway's follower has not read it yet
            second = (await two.obtain({CUSTOMER: 6}, newer_than={}))[CUSTOMER]
            names = [(CUSTOMER, first.key_id), (CUSTOMER, second.key_id)]
            assert len(await one.find(names)) == len(await two.find(names)) == len(set(names))
            # A delete destroys every key made before it, whichever gateway made it.
            assert await one.destroy({CUSTOMER: 7}) == len(set(names))
            await two.caught_up()
            assert await two.find(names) == {}

    async def test_a_key_kafka_refuses_fails_the_obtain(self, kafka: FakeLog) -> None:
        async with keyring() as gateway:
            kafka.refuse = [TopicAuthorizationFailedError()]
            with pytest.raises(TopicAuthorizationFailedError):
                await gateway.obtain({CUSTOMER: 5}, newer_than={})
            assert all(not records for records in kafka.records.values())

    async def test_a_key_record_that_found_no_leader_is_sent_again(self, kafka: FakeLog) -> None:
        # A broker killed: its partitions have no leader until the election, and the producer
        # gives a record up after one request timeout. The write is not refused for that.
        async with keyring() as gateway:
            kafka.refuse = [LeaderNotAvailableError(), KafkaConnectionError()]
            key = (await gateway.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            held = [r for p in kafka.records.values() for r in p]
            assert held == [(record_key(CUSTOMER, key.key_id), record_value(key, 5))]

    async def test_a_table_whose_marks_are_past_the_topic_s_end_is_read_again(
        self, kafka: FakeLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The state directory outlived its Kafka (make test-quorum starts three new brokers
        # beside the single broker's state): the file's marks count another topic's records.
        monkeypatch.setenv("REGIONSTORE_STATE_DIR", str(tmp_path))
        monkeypatch.setenv("REGIONSTORE_SERVICE_NAME", "writer")
        old, new = CustomerKey.new(), CustomerKey.new()
        table = KeyTable(tmp_path, name="writer", stale_after_s=DAY_S)
        partition = partition_of(CUSTOMER, len(kafka.records))
        table.take(partition, [key_record(at, old, 1) for at in range(50)])
        table.close()
        kafka.records[partition].append(key_record(0, new, 2)[1:])
        async with keyring(writes=False) as writer:
            names = [(CUSTOMER, old.key_id), (CUSTOMER, new.key_id)]
            assert await writer.find(names) == {(CUSTOMER, new.key_id): new}

    async def test_a_key_read_that_never_ends_is_bounded_and_never_says_destroyed(
        self, kafka: FakeLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGIONSTORE_KAFKA__REQUEST_TIMEOUT_MS", "1000")
        async with keyring() as gateway, keyring(writes=False) as writer:
            held = (await gateway.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            await writer.caught_up()
            unseen = (CUSTOMER, CustomerKey.new().key_id)
            kafka.silent = True
            with pytest.raises(KeysUnreadableError) as raised:
                await writer.find([(CUSTOMER, held.key_id), unseen])
            assert raised.value.found == {(CUSTOMER, held.key_id): held}
            assert raised.value.unknown == {unseen}

    async def test_a_connection_closed_under_uvloop_is_a_kafka_error(self, kafka: FakeLog) -> None:
        # aiokafka on uvloop raises RuntimeError there (aio-libs/aiokafka#1038): a delete
        # Kafka acknowledged must be answered as unknown, never as a 500.
        async with keyring() as gateway:
            held = (await gateway.obtain({CUSTOMER: 5}, newer_than={}))[CUSTOMER]
            kafka.broken = RuntimeError("unable to perform operation; the handler is closed")
            with pytest.raises(KafkaConnectionError):
                await gateway.destroy({CUSTOMER: 9})
            unseen = (CUSTOMER, CustomerKey.new().key_id)
            with pytest.raises(KeysUnreadableError) as raised:
                await gateway.find([(CUSTOMER, held.key_id), unseen])
            assert raised.value.unknown == {unseen}


class TestApplyWhileKeysCannotBeRead:
    """A key source that never answers: the upsert waits (parked, or the drain paused), is
    neither erased nor lost, and is applied in clear once its key is read."""

    def applier(
        self, keyring: KafkaKeyring, stores: dict[str, FakeCollection], parker: Parker | None
    ) -> BatchApplier:
        return BatchApplier(
            collections=cast("Mapping[str, Collection]", stores),
            status=FakeStatus(),
            suspicion=Suspicion(3.0),
            parker=parker,
            role="writer",
            keyring=keyring,
        )

    async def sealed(self, gateway: KafkaKeyring, customer_id: str) -> Envelope:
        customer = Customer(
            customer_id=customer_id,
            customer_unique_id=customer_id,
            customer_zip_code_prefix=14409,
            customer_city=MARKER,
            customer_state="SP",
        )
        command = UpsertCustomer(
            command_id=uuid.uuid4(),
            version=5,
            issued_at_ms=1_700_000_000_000,
            targets=home(None),
            customer=customer,
            home_region="region_1",
        )
        (sealed,) = await seal_all([command], gateway)
        wire = decode_command(encode_command(sealed))
        return Envelope(wire, encode_command(wire))

    async def test_the_upsert_is_parked_sealed_and_the_others_applied(
        self, kafka: FakeLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGIONSTORE_KAFKA__REQUEST_TIMEOUT_MS", "1000")
        other = "f" * 32
        async with keyring() as gateway, keyring(writes=False) as writer:
            seen = await self.sealed(gateway, other)
            await writer.caught_up()
            kafka.silent = True  # no partition's end can be read any more
            unseen = await self.sealed(gateway, CUSTOMER)
            stores = {"region_1": FakeCollection()}
            parker = Recorded()
            applier = self.applier(writer, stores, parker)
            outcome = await applier.apply([seen, unseen], home)
            # The customer whose key was read is applied; the other waits in the pending
            # topic, as sealed as it came, and nothing of it reached the store.
            assert stores["region_1"].docs[other]["customer_city"] == MARKER
            assert CUSTOMER not in stores["region_1"].docs
            assert outcome.parked == 1
            assert parker.parked == [("region_1", [unseen.raw], "key_unreadable")]
            kafka.silent = False
            # Drained later, once its key is read: applied in clear, not as erased.
            await applier.apply([unseen], home)
            assert stores["region_1"].docs[CUSTOMER]["customer_city"] == MARKER
            assert stores["region_1"].docs[CUSTOMER][DELETED] is False

    async def test_without_a_parker_the_region_waits_and_nothing_is_written(
        self, kafka: FakeLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGIONSTORE_KAFKA__REQUEST_TIMEOUT_MS", "1000")
        async with keyring() as gateway, keyring(writes=False) as recovery:
            await recovery.caught_up()
            kafka.silent = True
            unseen = await self.sealed(gateway, CUSTOMER)
            stores = {"region_1": FakeCollection()}
            applier = self.applier(recovery, stores, None)
            with pytest.raises(RegionUnavailableError) as raised:
                await applier.apply([unseen], home)
            assert raised.value.reason == "key_unreadable"
            assert stores["region_1"].docs == {}
