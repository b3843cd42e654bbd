"""The one apply path: version-guarded writes, tombstones and parking, against small fakes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import pytest
from pymongo import InsertOne, ReplaceOne
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from regionstore_shared.apply import (
    BatchApplier,
    BatchOutcome,
    CommandRejectedError,
    Envelope,
    RegionResult,
    RegionUnavailableError,
    Rejected,
    Suspicion,
)
from regionstore_shared.documents import (
    APPLIED_AT,
    CITY_KEY,
    COMMAND_ID,
    DELETED,
    HOME,
    VERSION,
    Collection,
    customer_from_document,
)
from regionstore_shared.logs import Outages
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
from regionstore_shared.status import NodeStatus
from shared.tests.fakes import (
    Document,
    FakeCollection,
    FakeStatus,
    Hook,
    Op,
    duplicate_key,
)

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"


class RecordingParker:
    def __init__(self) -> None:
        self.parked: list[tuple[str, list[Envelope], str]] = []

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None:
        self.parked.append((region, list(envelopes), reason))


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Rejected]] = []

    async def send_commands(self, region: str, rejected: Sequence[Rejected]) -> None:
        self.sent.extend((region, r) for r in rejected)

    def keys(self) -> list[tuple[str, str]]:
        """(region, customer id) of every dead-lettered command, in order."""
        return [(region, r.envelope.command.key) for region, r in self.sent]


class RecordingApplied:
    """The applied-documents sink: what each call added, per region."""

    def __init__(self) -> None:
        self.added: list[tuple[str, int]] = []

    def add(self, region: str, count: int) -> None:
        self.added.append((region, count))


class InFlight:
    """A region write that starts and never finishes on its own; records its cancellation."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def customer(city: str = "franca", zip_prefix: int = 14409) -> Customer:
    return Customer(
        customer_id=CUSTOMER,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_prefix,
        customer_city=city,
        customer_state="SP",
    )


HOME_1 = Target(region="region_1", role=Applier.WRITER, action=Action.UPSERT)
REPLICA_3 = Target(region="region_3", role=Applier.REPLICATOR, action=Action.UPSERT)


def upsert(
    version: int, city: str = "franca", targets: Iterable[Target] = (HOME_1, REPLICA_3)
) -> Envelope:
    command = UpsertCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=1_700_000_000_000,
        targets=tuple(targets),
        customer=customer(city),
        home_region="region_1",
    )
    return Envelope(command, encode_command(command))


def delete(version: int, regions: Iterable[str] = ("region_1", "region_3")) -> Envelope:
    command = DeleteCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=1_700_000_000_000,
        targets=tuple(
            Target(
                region=r,
                role=Applier.WRITER if i == 0 else Applier.REPLICATOR,
                action=Action.TOMBSTONE,
            )
            for i, r in enumerate(regions)
        ),
        customer_id=CUSTOMER,
    )
    return Envelope(command, encode_command(command))


def upsert_of(customer_id: str, version: int, targets: Iterable[Target] = (HOME_1,)) -> Envelope:
    """An upsert of another customer than CUSTOMER."""
    command = upsert(version, targets=targets).command
    assert isinstance(command, UpsertCustomer)
    renamed = command.model_copy(
        update={"customer": command.customer.model_copy(update={"customer_id": customer_id})}
    )
    return Envelope(renamed, encode_command(renamed))


def stored(customer_id: str, version: int, **fields: Any) -> Hook:
    """A hook standing for another applier that writes ``customer_id`` at ``version`` first."""

    def hook(store: FakeCollection) -> None:
        store.docs[customer_id] = {"_id": customer_id, VERSION: version, **fields}

    return hook


def every_target(command: Command) -> Iterable[Target]:
    return command.targets


def home_only(command: Command) -> Iterable[Target]:
    return [t for t in command.targets if t.role is Applier.WRITER]


class Harness:
    """One applier over three fake regions, with its status, parker and suspicion clock."""

    def __init__(
        self,
        *,
        parker: bool = True,
        dead_letters: bool = True,
        hold_s: float = 3.0,
        chunk: int = 250,
    ) -> None:
        self.stores = {name: FakeCollection() for name in ("region_1", "region_2", "region_3")}
        self.status = FakeStatus()
        self.parker = RecordingParker()
        self.dead_letters = RecordingDeadLetters()
        self.time = FakeTime()
        self.suspicion = Suspicion(hold_s, clock=self.time)
        self.outages = Outages(clock=self.time)
        self.applied = RecordingApplied()
        self.applier = BatchApplier(
            collections=cast("Mapping[str, Collection]", self.stores),
            status=self.status,
            suspicion=self.suspicion,
            parker=self.parker if parker else None,
            dead_letters=self.dead_letters if dead_letters else None,
            outages=self.outages,
            applied=self.applied,
            role="writer",
            chunk=chunk,
        )

    async def apply(
        self,
        *envelopes: Envelope,
        select: Callable[[Command], Iterable[Target]] = every_target,
    ) -> BatchOutcome:
        return await self.applier.apply(list(envelopes), select)

    def doc(self, region: str = "region_1") -> Document:
        return self.stores[region].docs[CUSTOMER]


@pytest.fixture
def harness() -> Harness:
    return Harness()


class TestVersionGuard:
    async def test_a_new_customer_is_inserted_in_every_selected_region(
        self, harness: Harness
    ) -> None:
        envelope = upsert(5, city="São Paulo")
        result = await harness.apply(envelope)
        assert result.regions == {
            "region_1": RegionResult(written=1),
            "region_3": RegionResult(written=1),
        }
        doc = harness.doc("region_1")
        assert customer_from_document(doc) == customer("São Paulo")
        assert (doc[VERSION], doc[DELETED], doc[HOME], doc[CITY_KEY]) == (
            5,
            False,
            "region_1",
            "sao paulo",
        )
        assert doc[COMMAND_ID] == str(envelope.command.command_id)
        assert harness.doc("region_3")[VERSION] == 5
        assert CUSTOMER not in harness.stores["region_2"].docs

    async def test_a_new_customer_costs_one_unordered_insert_and_no_read(
        self, harness: Harness
    ) -> None:
        await harness.apply(upsert(5))
        for region in ("region_1", "region_3"):
            store = harness.stores[region]
            assert store.kinds() == [[InsertOne]]
            assert [ordered for _, ordered in store.writes] == [False]
            assert store.reads == []

    async def test_only_the_selected_targets_are_written(self, harness: Harness) -> None:
        await harness.apply(upsert(5), select=home_only)
        assert CUSTOMER in harness.stores["region_1"].docs
        assert harness.stores["region_3"].writes == []
        assert CUSTOMER not in harness.stores["region_3"].docs

    @pytest.mark.parametrize("order", [(1, 2, 3), (3, 2, 1), (2, 3, 1), (1, 3, 2)])
    async def test_newest_version_wins_within_a_batch(
        self, harness: Harness, order: tuple[int, ...]
    ) -> None:
        await harness.apply(*(upsert(v, city=f"city {v}") for v in order), select=home_only)
        assert harness.doc()[VERSION] == 3
        assert harness.doc()["customer_city"] == "city 3"
        (ops, _), *_ = harness.stores["region_1"].writes
        assert len(ops) == 1

    async def test_newest_version_wins_across_batches(self, harness: Harness) -> None:
        await harness.apply(upsert(3, city="new"), select=home_only)
        result = await harness.apply(upsert(2, city="old"), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=0, stale=1)
        assert (harness.doc()[VERSION], harness.doc()["customer_city"]) == (3, "new")

    async def test_a_newer_batch_collides_then_replaces_under_a_version_guard(
        self, harness: Harness
    ) -> None:
        await harness.apply(upsert(2, city="old"), select=home_only)
        result = await harness.apply(upsert(3, city="new"), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=1)
        assert (harness.doc()[VERSION], harness.doc()["customer_city"]) == (3, "new")
        store = harness.stores["region_1"]
        assert store.kinds() == [[InsertOne], [InsertOne], [ReplaceOne]]
        ops, ordered = store.writes[-1]
        assert ordered is False
        (op,) = ops
        assert isinstance(op, ReplaceOne)
        assert op._filter == {"_id": CUSTOMER, VERSION: {"$lt": 3}}
        assert op._upsert is not True
        assert op._doc[VERSION] == 3
        assert store.reads == []

    async def test_applying_the_same_command_twice_changes_nothing(self, harness: Harness) -> None:
        envelope = upsert(4)
        await harness.apply(envelope)
        before = {region: dict(harness.doc(region)) for region in ("region_1", "region_3")}
        result = await harness.apply(envelope)
        assert result.written == 0
        assert result.regions == {
            "region_1": RegionResult(stale=1),
            "region_3": RegionResult(stale=1),
        }
        for region in ("region_1", "region_3"):
            assert harness.doc(region) == before[region]  # _applied_at included: not rewritten
            assert harness.stores[region].kinds() == [[InsertOne], [InsertOne], [ReplaceOne]]

    async def test_one_bulk_write_per_region_for_many_new_customers(self, harness: Harness) -> None:
        targets = (HOME_1, REPLICA_3)
        envelopes = [upsert_of(f"c{i}", 10 + i, targets) for i in range(5)]
        result = await harness.apply(*envelopes)
        assert result.written == 10
        for region in ("region_1", "region_3"):
            assert harness.stores[region].kinds() == [[InsertOne] * 5]
            assert set(harness.stores[region].docs) == {f"c{i}" for i in range(5)}

    async def test_only_the_collided_documents_are_replaced(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.docs["older"] = {"_id": "older", VERSION: 1}
        store.docs["newer"] = {"_id": "newer", VERSION: 99}
        batch = [upsert_of("fresh", 10), upsert_of("older", 11), upsert_of("newer", 12)]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(written=2, stale=1)
        assert store.kinds() == [[InsertOne] * 3, [ReplaceOne] * 2]
        replaces, _ = store.writes[1]
        assert [op._filter for op in replaces if isinstance(op, ReplaceOne)] == [
            {"_id": "newer", VERSION: {"$lt": 12}},
            {"_id": "older", VERSION: {"$lt": 11}},
        ]
        assert {k: d[VERSION] for k, d in store.docs.items()} == {
            "fresh": 10,
            "older": 11,
            "newer": 99,
        }

    async def test_every_command_stale_writes_nothing(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        for i in range(3):
            store.docs[f"c{i}"] = {"_id": f"c{i}", VERSION: 50, "mark": "kept"}
        result = await harness.apply(*(upsert_of(f"c{i}", 10 + i) for i in range(3)))
        assert result.regions["region_1"] == RegionResult(written=0, stale=3)
        assert all(d == {"_id": d["_id"], VERSION: 50, "mark": "kept"} for d in store.docs.values())

    async def test_an_equal_version_is_stale(self, harness: Harness) -> None:
        harness.stores["region_1"].docs[CUSTOMER] = {"_id": CUSTOMER, VERSION: 7, "mark": "kept"}
        result = await harness.apply(upsert(7), select=home_only)
        assert result.regions["region_1"] == RegionResult(stale=1)
        assert harness.doc() == {"_id": CUSTOMER, VERSION: 7, "mark": "kept"}

    async def test_the_applier_never_reads(self, harness: Harness) -> None:
        await harness.apply(upsert(1))
        await harness.apply(upsert(3), delete(2))
        await harness.apply(upsert(2))
        assert all(store.reads == [] for store in harness.stores.values())

    async def test_an_empty_selection_reads_no_status(self, harness: Harness) -> None:
        result = await harness.apply(upsert(1), select=lambda _: [])
        assert result.regions == {}
        assert harness.status.reads == 0


class TestTombstones:
    async def test_a_newer_delete_tombstones_a_live_record(self, harness: Harness) -> None:
        await harness.apply(upsert(1))
        result = await harness.apply(delete(2))
        assert result.written == 2
        for region in ("region_1", "region_3"):
            doc = harness.doc(region)
            assert (doc[VERSION], doc[DELETED]) == (2, True)
            assert "customer_city" not in doc
            assert HOME not in doc  # a delete's tombstone points nowhere

    async def test_an_older_upsert_never_resurrects_a_tombstone(self, harness: Harness) -> None:
        await harness.apply(upsert(1))
        await harness.apply(delete(2))
        result = await harness.apply(upsert(1))
        assert result.regions["region_1"] == RegionResult(stale=1)
        assert (harness.doc()[VERSION], harness.doc()[DELETED]) == (2, True)

    async def test_a_delete_first_seen_leaves_a_tombstone(self, harness: Harness) -> None:
        result = await harness.apply(delete(5))
        assert result.regions["region_1"] == RegionResult(written=1)
        assert harness.stores["region_1"].kinds() == [[InsertOne]]
        assert (harness.doc()[VERSION], harness.doc()[DELETED]) == (5, True)
        result = await harness.apply(upsert(3))
        assert result.regions["region_1"] == RegionResult(stale=1)
        assert (harness.doc()[VERSION], harness.doc()[DELETED]) == (5, True)

    async def test_tombstone_and_older_upsert_in_one_batch(self, harness: Harness) -> None:
        await harness.apply(upsert(3), delete(4), upsert(2))
        assert (harness.doc()[VERSION], harness.doc()[DELETED]) == (4, True)

    async def test_a_newer_upsert_recreates_a_deleted_customer(self, harness: Harness) -> None:
        await harness.apply(delete(5))
        result = await harness.apply(upsert(6, city="back"))
        assert result.regions["region_1"] == RegionResult(written=1)
        doc = harness.doc()
        assert (doc[VERSION], doc[DELETED], doc["customer_city"]) == (6, False, "back")

    async def test_an_upsert_tombstones_every_region_outside_its_placement(
        self, harness: Harness
    ) -> None:
        await harness.apply(upsert(1, targets=[HOME_1, REPLICA_3]))
        moved = [
            Target(region="region_2", role=Applier.WRITER, action=Action.UPSERT),
            Target(region="region_1", role=Applier.REPLICATOR, action=Action.UPSERT),
            Target(region="region_3", role=Applier.REPLICATOR, action=Action.TOMBSTONE),
        ]
        result = await harness.apply(upsert(2, targets=moved))
        assert result.written == 3
        assert (harness.doc("region_3")[VERSION], harness.doc("region_3")[DELETED]) == (2, True)
        assert (harness.doc("region_2")[VERSION], harness.doc("region_2")[DELETED]) == (2, False)
        assert (harness.doc("region_1")[VERSION], harness.doc("region_1")[DELETED]) == (2, False)

    async def test_a_tombstone_lands_in_a_region_that_never_saw_the_customer(
        self, harness: Harness
    ) -> None:
        targets = [
            HOME_1,
            Target(region="region_2", role=Applier.REPLICATOR, action=Action.TOMBSTONE),
        ]
        await harness.apply(upsert(4, targets=targets))
        assert harness.doc("region_2") == {
            "_id": CUSTOMER,
            VERSION: 4,
            DELETED: True,
            HOME: "region_1",  # an upsert's tombstone says where the customer lives
            COMMAND_ID: harness.doc("region_1")[COMMAND_ID],
            APPLIED_AT: harness.doc("region_2")[APPLIED_AT],
        }


class TestConcurrentInsert:
    """Another applier (recovery draining while the writer runs) writes the same customer."""

    async def test_an_older_concurrent_insert_is_replaced(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.hooks = [stored(CUSTOMER, 1)]
        result = await harness.apply(upsert(7), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=1)
        assert harness.doc()[VERSION] == 7
        assert store.kinds() == [[InsertOne], [ReplaceOne]]
        (replace,), _ = store.writes[1]
        assert isinstance(replace, ReplaceOne)
        assert replace._filter == {"_id": CUSTOMER, VERSION: {"$lt": 7}}

    async def test_a_newer_concurrent_insert_makes_ours_stale(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.hooks = [stored(CUSTOMER, 9, mark="theirs")]
        result = await harness.apply(upsert(7), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=0, stale=1)
        assert harness.doc() == {"_id": CUSTOMER, VERSION: 9, "mark": "theirs"}
        assert store.kinds() == [[InsertOne], [ReplaceOne]]

    async def test_a_newer_write_between_our_insert_and_replace_makes_ours_stale(
        self, harness: Harness
    ) -> None:
        store = harness.stores["region_1"]
        store.docs[CUSTOMER] = {"_id": CUSTOMER, VERSION: 1}
        store.hooks = [None, stored(CUSTOMER, 9, mark="theirs")]
        result = await harness.apply(upsert(7), select=home_only)
        assert result.regions["region_1"] == RegionResult(stale=1)
        assert harness.doc() == {"_id": CUSTOMER, VERSION: 9, "mark": "theirs"}

    async def test_only_the_raced_command_is_replaced(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.hooks = [stored(CUSTOMER, 1)]
        result = await harness.apply(upsert(7), upsert_of("other", 8), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=2)
        assert [len(ops) for ops, _ in store.writes] == [2, 1]
        (replace,), _ = store.writes[1]
        assert isinstance(replace, ReplaceOne)
        assert replace._filter["_id"] == CUSTOMER
        assert store.docs["other"][VERSION] == 8
        assert store.docs[CUSTOMER][VERSION] == 7


class TestLockOrder:
    async def test_every_request_writes_its_customers_in_id_order(self) -> None:
        harness = Harness(chunk=3)
        store = harness.stores["region_1"]
        store.docs["c3"] = {"_id": "c3", VERSION: 1}
        store.docs["c1"] = {"_id": "c1", VERSION: 1}
        ids = ["c4", "c1", "c6", "c3", "c5", "c2"]
        await harness.apply(*(upsert_of(i, 10) for i in ids), select=home_only)
        assert [[op._doc["_id"] for op in ops] for ops, _ in store.writes] == [
            ["c1", "c2", "c3"],
            ["c1", "c3"],
            ["c4", "c5", "c6"],
        ]


class TestChunks:
    async def test_a_region_is_written_in_requests_of_the_chunk_size(self) -> None:
        harness = Harness(chunk=2)
        result = await harness.apply(*(upsert_of(f"c{i}", 10 + i) for i in range(5)))
        store = harness.stores["region_1"]
        assert [len(ops) for ops, _ in store.writes] == [2, 2, 1]
        assert result.regions["region_1"] == RegionResult(written=5)

    async def test_a_failed_chunk_parks_it_and_the_rest_but_not_what_was_written(self) -> None:
        harness = Harness(chunk=2)
        store = harness.stores["region_1"]
        batch = [upsert_of(f"c{i}", 10 + i) for i in range(5)]
        original = store.bulk_write
        calls = 0

        async def failing_from_second_chunk(ops: Sequence[Op], ordered: bool = True) -> Any:
            nonlocal calls
            calls += 1
            if calls >= 2:
                raise AutoReconnect("store went away")
            return await original(ops, ordered)

        store.bulk_write = failing_from_second_chunk  # type: ignore[method-assign]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(
            written=2, parked=3, parked_reason="write_failed"
        )
        assert set(store.docs) == {"c0", "c1"}
        ((region, parked, reason),) = harness.parker.parked
        assert (region, reason) == ("region_1", "write_failed")
        assert [e.command.key for e in parked] == ["c2", "c3", "c4"]
        assert harness.suspicion.is_suspect("region_1")


class TestAppliedCounts:
    async def test_each_region_hears_of_the_documents_it_changed(self) -> None:
        harness = Harness()
        await harness.apply(*(upsert_of(f"c{i}", 10 + i, (HOME_1, REPLICA_3)) for i in range(3)))
        assert sorted(harness.applied.added) == [("region_1", 3), ("region_3", 3)]

    async def test_stale_commands_are_not_counted(self, harness: Harness) -> None:
        await harness.apply(upsert(5))
        harness.applied.added.clear()
        await harness.apply(upsert(5), upsert_of("other", 6, (HOME_1,)))
        assert harness.applied.added == [("region_1", 1)]

    async def test_parked_commands_are_not_counted(self, harness: Harness) -> None:
        harness.status.statuses = {"region_3": NodeStatus.UNAVAILABLE}
        await harness.apply(upsert(1))
        assert harness.applied.added == [("region_1", 1)]

    async def test_a_failed_chunk_counts_what_was_written_before_it(self) -> None:
        harness = Harness(chunk=2)
        store = harness.stores["region_1"]
        original = store.bulk_write
        calls = 0

        async def failing_from_second_chunk(ops: Sequence[Op], ordered: bool = True) -> Any:
            nonlocal calls
            calls += 1
            if calls >= 2:
                raise AutoReconnect("store went away")
            return await original(ops, ordered)

        store.bulk_write = failing_from_second_chunk  # type: ignore[method-assign]
        await harness.apply(*(upsert_of(f"c{i}", 10 + i) for i in range(5)))
        assert harness.applied.added == [("region_1", 2)]


class TestParking:
    async def test_a_region_marked_unavailable_is_parked_and_others_written(
        self, harness: Harness
    ) -> None:
        harness.status.statuses = {"region_3": NodeStatus.UNAVAILABLE}
        envelopes = [upsert(1), upsert(2)]
        result = await harness.apply(*envelopes)
        assert harness.doc("region_1")[VERSION] == 2
        assert result.regions["region_3"] == RegionResult(
            parked=1, parked_reason="marked_unavailable"
        )
        ((region, parked, reason),) = harness.parker.parked
        assert (region, reason) == ("region_3", "marked_unavailable")
        assert parked == [envelopes[1]]  # only the newest survives per customer
        assert harness.stores["region_3"].reads == []
        assert harness.stores["region_3"].writes == []

    async def test_parking_forwards_the_raw_bytes_unchanged(self, harness: Harness) -> None:
        harness.status.statuses = {"region_1": NodeStatus.UNAVAILABLE}
        envelope = upsert(1)
        await harness.apply(envelope, select=home_only)
        assert harness.parker.parked[0][1][0].raw == envelope.raw

    async def test_an_available_status_is_written(self, harness: Harness) -> None:
        harness.status.statuses = {"region_1": NodeStatus.AVAILABLE}
        result = await harness.apply(upsert(1), select=home_only)
        assert result.regions["region_1"] == RegionResult(written=1)

    async def test_a_region_without_a_store_is_parked(self, harness: Harness) -> None:
        target = Target(region="region_9", role=Applier.WRITER, action=Action.UPSERT)
        result = await harness.apply(upsert(1, targets=[target]))
        assert result.regions["region_9"] == RegionResult(parked=1, parked_reason="unknown_region")

    async def test_a_connection_error_parks_and_holds_the_region_suspect(
        self, harness: Harness
    ) -> None:
        store = harness.stores["region_3"]
        store.fail_with = AutoReconnect("connection refused")
        first = await harness.apply(upsert(1))
        assert first.regions["region_3"] == RegionResult(parked=1, parked_reason="write_failed")
        assert first.regions["region_1"] == RegionResult(written=1)
        assert harness.suspicion.is_suspect("region_3")
        assert not harness.suspicion.is_suspect("region_1")

        store.fail_with = None
        writes = len(store.writes)
        harness.time.now += 2.9
        second = await harness.apply(upsert(2))
        assert second.regions["region_3"] == RegionResult(parked=1, parked_reason="recent_failure")
        assert len(store.writes) == writes
        assert [reason for _, _, reason in harness.parker.parked] == [
            "write_failed",
            "recent_failure",
        ]

        harness.time.now += 0.2
        third = await harness.apply(upsert(3))
        assert third.regions["region_3"] == RegionResult(written=1)
        assert harness.doc("region_3")[VERSION] == 3
        assert not harness.suspicion.is_suspect("region_3")

    async def test_a_failing_insert_parks(self, harness: Harness) -> None:
        harness.stores["region_1"].hooks = [_raise(AutoReconnect("reset by peer"))]
        result = await harness.apply(upsert(1), select=home_only)
        assert result.regions["region_1"] == RegionResult(parked=1, parked_reason="write_failed")
        assert harness.suspicion.is_suspect("region_1")

    async def test_a_failing_replace_after_a_collision_parks(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.docs[CUSTOMER] = {"_id": CUSTOMER, VERSION: 1}
        store.hooks = [None, _raise(AutoReconnect("reset by peer"))]
        result = await harness.apply(upsert(7), upsert_of("other", 8), select=home_only)
        assert result.regions["region_1"] == RegionResult(parked=2, parked_reason="write_failed")
        assert store.kinds() == [[InsertOne, InsertOne], [ReplaceOne]]
        assert harness.suspicion.is_suspect("region_1")
        # Parked whole: replaying "other", already inserted, is stale and harmless.
        ((_, parked, _),) = harness.parker.parked
        assert [e.command.key for e in parked] == [CUSTOMER, "other"]

    async def test_a_duplicate_key_with_a_write_concern_error_parks(self, harness: Harness) -> None:
        error = BulkWriteError(
            {
                "writeErrors": [duplicate_key(0)],
                "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication"}],
            }
        )
        harness.stores["region_1"].hooks = [_raise(error)]
        result = await harness.apply(upsert(1), select=home_only)
        assert result.regions["region_1"] == RegionResult(parked=1, parked_reason="write_failed")
        assert len(harness.stores["region_1"].writes) == 1

    async def test_a_write_concern_error_alone_parks(self, harness: Harness) -> None:
        error = BulkWriteError(
            {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "timeout"}]}
        )
        harness.stores["region_1"].hooks = [_raise(error)]
        result = await harness.apply(upsert(1), select=home_only)
        assert result.regions["region_1"] == RegionResult(parked=1, parked_reason="write_failed")

    async def test_batch_totals(self, harness: Harness) -> None:
        harness.status.statuses = {"region_3": NodeStatus.UNAVAILABLE}
        result = await harness.apply(upsert(1))
        assert (result.written, result.parked) == (1, 1)


TRANSIENT_ERRORS = [
    pytest.param(AutoReconnect("connection reset"), id="AutoReconnect"),
    pytest.param(NetworkTimeout("timed out"), id="NetworkTimeout"),
    pytest.param(ServerSelectionTimeoutError("no primary"), id="ServerSelectionTimeoutError"),
    pytest.param(NotPrimaryError("not primary", {"code": 10107}), id="NotPrimaryError"),
    pytest.param(ExecutionTimeout("maxTimeMS", 50), id="ExecutionTimeout"),
    pytest.param(WTimeoutError("waiting for replication", 64), id="WTimeoutError"),
    pytest.param(OperationFailure("PostgreSQL unreachable", 1), id="FerretDB-InternalError"),
    pytest.param(OperationFailure("stepped down", 189), id="PrimarySteppedDown"),
    pytest.param(
        OperationFailure("odd", 2, {"errorLabels": ["RetryableWriteError"]}), id="labelled"
    ),
    pytest.param(
        BulkWriteError({"writeErrors": [{"index": 0, "code": 11602, "errmsg": "repl state"}]}),
        id="per-item-transient-code",
    ),
    pytest.param(
        BulkWriteError(
            {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}]}
        ),
        id="writeConcernError",
    ),
]


class TestFailureClasses:
    """Transient failures park and suspect the region; permanent ones dead-letter the command."""

    @pytest.mark.parametrize("error", TRANSIENT_ERRORS)
    async def test_a_transient_failure_parks_and_suspects_the_region(
        self, harness: Harness, error: Exception
    ) -> None:
        harness.stores["region_1"].hooks = [_raise(error)]
        result = await harness.apply(upsert_of("a", 1), upsert_of("b", 2))
        assert result.regions["region_1"] == RegionResult(parked=2, parked_reason="write_failed")
        assert harness.suspicion.is_suspect("region_1")
        assert harness.outages.is_down("region_1")
        assert harness.dead_letters.sent == []

    async def test_a_refused_document_is_dead_lettered_alone(self, harness: Harness) -> None:
        store = harness.stores["region_1"]
        store.refuse = {"bad": 121}
        batch = [upsert_of("good", 1), upsert_of("bad", 2), upsert_of("fine", 3)]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(written=2, deadlettered=1)
        assert set(store.docs) == {"good", "fine"}
        assert store.kinds() == [[InsertOne] * 3]  # one request, nothing retried
        ((region, rejected),) = harness.dead_letters.sent
        assert (region, rejected.envelope) == ("region_1", batch[1])
        assert rejected.error == "WriteError 121: refused with 121"
        assert harness.parker.parked == []
        assert not harness.suspicion.is_suspect("region_1")
        assert not harness.outages.is_down("region_1")

    async def test_a_refused_document_leaves_other_regions_alone(self, harness: Harness) -> None:
        harness.stores["region_3"].refuse = {"bad": 2}
        targets = (HOME_1, REPLICA_3)
        result = await harness.apply(upsert_of("bad", 1, targets), upsert_of("ok", 2, targets))
        assert result.regions == {
            "region_1": RegionResult(written=2),
            "region_3": RegionResult(written=1, deadlettered=1),
        }
        assert harness.dead_letters.keys() == [("region_3", "bad")]
        assert result.deadlettered == 1

    async def test_a_refused_replace_is_dead_lettered_and_the_duplicate_path_goes_on(
        self, harness: Harness
    ) -> None:
        store = harness.stores["region_1"]
        store.docs["bad"] = {"_id": "bad", VERSION: 1}
        store.docs["older"] = {"_id": "older", VERSION: 1}
        store.docs["newer"] = {"_id": "newer", VERSION: 99}
        # The insert collides with the stored "bad" before its replace is refused.
        store.hooks = [None, lambda s: s.refuse.update(bad=17419)]
        batch = [upsert_of(i, 10) for i in ("bad", "older", "newer", "fresh")]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(written=2, stale=1, deadlettered=1)
        assert store.kinds() == [[InsertOne] * 4, [ReplaceOne] * 3]
        assert {k: d[VERSION] for k, d in store.docs.items()} == {
            "bad": 1,
            "older": 10,
            "newer": 99,
            "fresh": 10,
        }
        assert harness.dead_letters.keys() == [("region_1", "bad")]
        assert harness.dead_letters.sent[0][1].error.startswith("WriteError 17419")

    async def test_a_refused_request_is_retried_one_command_at_a_time(
        self, harness: Harness
    ) -> None:
        store = harness.stores["region_1"]
        store.poison = {"bad": OperationFailure("BSONObjectTooLarge", 10334)}
        batch = [upsert_of("good", 1), upsert_of("bad", 2), upsert_of("fine", 3)]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(written=2, deadlettered=1)
        assert store.ids() == [["bad", "fine", "good"], ["bad"], ["fine"], ["good"]]
        assert set(store.docs) == {"good", "fine"}
        ((_, rejected),) = harness.dead_letters.sent
        assert rejected.envelope == batch[1]
        assert rejected.error.startswith("OperationFailure 10334: BSONObjectTooLarge")
        assert not harness.suspicion.is_suspect("region_1")

    async def test_isolation_isolates_one_chunk_only(self) -> None:
        harness = Harness(chunk=2)
        store = harness.stores["region_1"]
        store.poison = {"c1": OperationFailure("bad value", 2)}
        result = await harness.apply(*(upsert_of(f"c{i}", 10 + i) for i in range(4)))
        assert result.regions["region_1"] == RegionResult(written=3, deadlettered=1)
        assert store.ids() == [["c0", "c1"], ["c0"], ["c1"], ["c2", "c3"]]

    async def test_a_document_the_driver_cannot_encode_is_dead_lettered(
        self, harness: Harness
    ) -> None:
        harness.stores["region_1"].poison = {"big": DocumentTooLarge("over 16 MiB")}
        result = await harness.apply(upsert_of("big", 1), upsert_of("small", 2))
        assert result.regions["region_1"] == RegionResult(written=1, deadlettered=1)
        assert harness.dead_letters.keys() == [("region_1", "big")]

    async def test_a_transient_failure_while_isolating_parks_the_rest(self) -> None:
        harness = Harness(chunk=3)
        store = harness.stores["region_1"]
        store.poison = {"c1": OperationFailure("bad value", 2)}
        # The whole chunk, then "c0" alone, then the store goes away.
        store.hooks = [None, None, _raise(AutoReconnect("gone"))]
        batch = [upsert_of(f"c{i}", 10 + i) for i in range(5)]
        result = await harness.apply(*batch)
        assert result.regions["region_1"] == RegionResult(
            written=1, parked=4, parked_reason="write_failed"
        )
        ((_, parked, _),) = harness.parker.parked
        assert [e.command.key for e in parked] == ["c1", "c2", "c3", "c4"]
        assert harness.dead_letters.sent == []
        assert harness.suspicion.is_suspect("region_1")

    async def test_refused_commands_are_dead_lettered_before_a_later_chunk_parks(self) -> None:
        harness = Harness(chunk=2)
        store = harness.stores["region_1"]
        store.refuse = {"c1": 121}
        store.hooks = [None, _raise(AutoReconnect("gone"))]
        result = await harness.apply(*(upsert_of(f"c{i}", 10 + i) for i in range(4)))
        assert result.regions["region_1"] == RegionResult(
            written=1, parked=2, parked_reason="write_failed", deadlettered=1
        )
        assert harness.dead_letters.keys() == [("region_1", "c1")]
        ((_, parked, _),) = harness.parker.parked
        assert [e.command.key for e in parked] == ["c2", "c3"]

    async def test_a_transient_item_error_parks_the_whole_request(self, harness: Harness) -> None:
        error = BulkWriteError(
            {
                "writeErrors": [
                    {"index": 0, "code": 121, "errmsg": "invalid"},
                    {"index": 1, "code": 91, "errmsg": "shutting down"},
                ]
            }
        )
        harness.stores["region_1"].hooks = [_raise(error)]
        result = await harness.apply(upsert_of("a", 1), upsert_of("b", 2), select=home_only)
        assert result.regions["region_1"] == RegionResult(parked=2, parked_reason="write_failed")
        assert harness.dead_letters.sent == []

    async def test_without_a_dead_letter_sink_a_refused_command_raises(self) -> None:
        harness = Harness(dead_letters=False)
        harness.stores["region_1"].refuse = {"bad": 121}
        bad = upsert_of("bad", 2)
        with pytest.raises(CommandRejectedError) as caught:
            await harness.apply(upsert_of("good", 1), bad)
        assert caught.value.region == "region_1"
        assert [r.envelope for r in caught.value.rejected] == [bad]
        message = str(caught.value)
        assert str(bad.command.command_id) in message
        assert "no dead-letter sink" in message
        assert "WriteError 121" in message

    async def test_a_region_is_reported_down_once_and_back_once(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = harness.stores["region_3"]
        store.fail_with = AutoReconnect("connection refused")
        with caplog.at_level(logging.INFO, logger="regionstore_shared"):
            for version in range(1, 21):
                await harness.apply(upsert(version))
                harness.time.now += 1.0  # past the suspicion every few batches
            attempts = len(store.writes)
            store.fail_with = None
            harness.time.now += 3.0
            await harness.apply(upsert(30))
            await harness.apply(upsert(31))
        outage = [r for r in caplog.records if r.__dict__.get("dependency") == "region_3"]
        assert [(r.levelname, r.getMessage()) for r in outage] == [
            ("WARNING", "region_3 down"),
            ("WARNING", "region_3 back"),
        ]
        assert 1 < attempts < 20  # the suspicion spared most batches a write
        assert outage[-1].__dict__["failures"] == attempts


class TestWithoutParker:
    async def test_a_region_marked_unavailable_raises(self) -> None:
        harness = Harness(parker=False)
        harness.status.statuses = {"region_1": NodeStatus.UNAVAILABLE}
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1), select=home_only)
        assert (caught.value.region, caught.value.reason) == ("region_1", "marked_unavailable")
        assert str(caught.value) == "region region_1 unavailable: marked_unavailable"

    async def test_a_connection_error_raises(self) -> None:
        harness = Harness(parker=False)
        harness.stores["region_1"].fail_with = AutoReconnect("down")
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1), select=home_only)
        assert (caught.value.region, caught.value.reason) == ("region_1", "write_failed")
        assert harness.suspicion.is_suspect("region_1")

    async def test_a_transient_bulk_error_raises(self) -> None:
        harness = Harness(parker=False)
        error = BulkWriteError({"writeErrors": [{"index": 0, "code": 91, "errmsg": "shutdown"}]})
        harness.stores["region_1"].hooks = [_raise(error)]
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1), select=home_only)
        assert caught.value.reason == "write_failed"

    async def test_a_refused_command_is_dead_lettered_and_the_rest_written(self) -> None:
        harness = Harness(parker=False)
        harness.stores["region_1"].refuse = {"bad": 121}
        result = await harness.apply(upsert_of("good", 1), upsert_of("bad", 2))
        assert result.regions["region_1"] == RegionResult(written=1, deadlettered=1)
        assert harness.dead_letters.keys() == [("region_1", "bad")]

    async def test_a_refused_command_before_a_transient_failure_is_left_to_the_replay(
        self,
    ) -> None:
        harness = Harness(parker=False, chunk=1)
        store = harness.stores["region_1"]
        store.refuse = {"bad": 121}
        store.hooks = [None, _raise(AutoReconnect("gone"))]
        with pytest.raises(RegionUnavailableError):
            await harness.apply(upsert_of("bad", 1), upsert_of("next", 2))
        # Nothing is committed: the replay meets "bad" again and dead-letters it then, once.
        assert harness.dead_letters.sent == []
        assert harness.suspicion.is_suspect("region_1")

    async def test_a_recent_failure_raises(self) -> None:
        harness = Harness(parker=False)
        harness.suspicion.suspect("region_1")
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1), select=home_only)
        assert caught.value.reason == "recent_failure"
        assert harness.stores["region_1"].writes == []


class TestOneRegionFailing:
    """A region's failure leaves the batch as itself, and no other region's write runs on."""

    async def test_cancels_a_write_still_in_flight_in_another_region(self) -> None:
        harness = Harness(parker=False)
        stalled = InFlight()
        harness.stores["region_3"].before = stalled
        # region_1 fails only once region_3's write is under way.
        harness.stores["region_1"].before = stalled.started.wait
        harness.stores["region_1"].fail_with = AutoReconnect("down")
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1))
        assert (caught.value.region, caught.value.reason) == ("region_1", "write_failed")
        assert isinstance(caught.value.__cause__, AutoReconnect)
        assert stalled.cancelled
        assert not harness.suspicion.is_suspect("region_3")  # cut short, not failed

    async def test_a_refusal_without_a_sink_is_raised_as_itself(self) -> None:
        harness = Harness(dead_letters=False)
        stalled = InFlight()
        harness.stores["region_3"].before = stalled
        harness.stores["region_1"].before = stalled.started.wait
        harness.stores["region_1"].refuse = {CUSTOMER: 121}
        with pytest.raises(CommandRejectedError) as caught:
            await harness.apply(upsert(1))
        assert caught.value.region == "region_1"
        assert stalled.cancelled

    async def test_regions_failing_together_raise_the_first_and_note_the_others(self) -> None:
        harness = Harness(parker=False)
        harness.stores["region_1"].fail_with = AutoReconnect("region_1 down")
        harness.stores["region_3"].fail_with = AutoReconnect("region_3 down")
        with pytest.raises(RegionUnavailableError) as caught:
            await harness.apply(upsert(1))
        assert caught.value.region == "region_1"
        (note,) = caught.value.__notes__
        assert "region region_3 unavailable: write_failed" in note


class TestSuspicion:
    def test_holds_for_the_configured_time(self) -> None:
        time = FakeTime()
        suspicion = Suspicion(3.0, clock=time)
        suspicion.suspect("region_1")
        time.now += 2.999
        assert suspicion.is_suspect("region_1")
        time.now += 0.001
        assert not suspicion.is_suspect("region_1")

    def test_clear_forgets_a_failure(self) -> None:
        suspicion = Suspicion(3.0, clock=FakeTime())
        suspicion.suspect("region_1")
        suspicion.clear("region_1")
        assert not suspicion.is_suspect("region_1")

    def test_other_regions_are_not_suspect(self) -> None:
        suspicion = Suspicion(3.0, clock=FakeTime())
        suspicion.suspect("region_1")
        assert not suspicion.is_suspect("region_2")
        suspicion.clear("region_2")  # clearing an unknown region is harmless


def _raise(error: Exception) -> Hook:
    def hook(_: FakeCollection) -> None:
        raise error

    return hook
