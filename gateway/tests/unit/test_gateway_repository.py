"""Repository logic against fake stores: point lookups, which copy wins, coverage, filters."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
)

from regionstore_gateway.api.customers import customer_out
from regionstore_gateway.api.errors import refusal
from regionstore_gateway.models import CustomerOut
from regionstore_gateway.repository import (
    CustomerFilter,
    CustomerRepository,
    Found,
    _fresher,
    missed_deadline,
)
from regionstore_gateway.services.customers import CustomerService
from regionstore_gateway.services.errors import RegionsUnreachable
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.writes import Writes
from regionstore_shared.apply import Collection, Suspicion
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec
from regionstore_shared.status import NodeStatus

Document = dict[str, Any]
CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
NAMES = ("region_1", "region_2", "region_3")
DEADLINE_S = 0.01


class Stall:
    """A read that waits for an event nobody sets; counts the reads it held and cancelled."""

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.held = 0
        self.cancelled = 0

    async def __call__(self) -> None:
        self.held += 1
        try:
            await self.never.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FakeCursor:
    """The find cursor of a fake store: records the sort, limit and index hint asked for."""

    def __init__(self, docs: list[Document], store: FakeCollection) -> None:
        self.docs = docs
        self.store = store
        self.sorted_by: tuple[str, int] | None = None
        self.limited_to: int | None = None
        self.hinted: str | None = None

    def sort(self, key: str, direction: int) -> FakeCursor:
        self.sorted_by = (key, direction)
        return self

    def limit(self, count: int) -> FakeCursor:
        self.limited_to = count
        return self

    def hint(self, index: str) -> FakeCursor:
        self.hinted = index
        return self

    def __aiter__(self) -> AsyncIterator[Document]:
        async def rows() -> AsyncIterator[Document]:
            await self.store.answer()
            for doc in sorted(self.docs, key=lambda d: d["_id"])[: self.limited_to]:
                yield doc

        return rows()


class FakeCollection:
    """A regional store in a dict that answers reads and records them.

    ``fail_with`` fails every read; ``stall`` holds every read until it is cancelled.
    """

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.queries: list[Document] = []
        self.cursors: list[FakeCursor] = []
        self.fail_with: BaseException | None = None
        self.stall: Stall | None = None

    async def answer(self) -> None:
        if self.stall is not None:
            await self.stall()
        if self.fail_with is not None:
            raise self.fail_with

    def find(self, query: Document) -> FakeCursor:
        self.queries.append(query)
        home = query["_home"]
        cursor = FakeCursor([d for d in self.docs.values() if d.get("_home") == home], self)
        self.cursors.append(cursor)
        return cursor

    async def find_one(
        self, query: Document, projection: Mapping[str, int] | None = None
    ) -> Document | None:
        self.queries.append(query)
        await self.answer()
        assert set(query) == {"_id"}, "point reads filter on _id alone"
        doc = self.docs.get(query["_id"])
        return None if doc is None else dict(doc)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stores:
    """A repository over three fake regions under the default map."""

    def __init__(self) -> None:
        self.regions = {name: FakeCollection() for name in NAMES}
        self.clock = Clock()
        self.suspicion = Suspicion(3.0, clock=self.clock)
        self.repository = CustomerRepository(
            cast("Mapping[str, Collection]", self.regions),
            RegionMap(DEFAULT_REGIONS),
            self.suspicion,
            read_deadline_s=DEADLINE_S,
        )

    def live(self, region: str, version: int, home: str) -> None:
        self.regions[region].docs[CUSTOMER] = {
            "_id": CUSTOMER,
            "_v": version,
            "_deleted": False,
            "_home": home,
            "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
            "customer_zip_code_prefix": 14409,
            "customer_city": f"from {region}",
            "customer_state": "SP",
        }

    def stall(self, *regions: str) -> list[Stall]:
        """Make every read of ``regions`` wait for ever (or until the deadline cancels it)."""
        stalls = []
        for region in regions:
            stall = self.regions[region].stall = Stall()
            stalls.append(stall)
        return stalls

    def tombstone(self, region: str, version: int, home: str | None = None) -> None:
        """A delete's tombstone, or with ``home`` an upsert's (the customer lives there)."""
        doc: Document = {"_id": CUSTOMER, "_v": version, "_deleted": True}
        if home is not None:
            doc["_home"] = home
        self.regions[region].docs[CUSTOMER] = doc


def live(version: int, served_by: str, home: str = "region_1") -> Found:
    return Found({"_id": CUSTOMER, "_v": version, "_deleted": False, "_home": home}, served_by)


def tombstone(version: int, served_by: str, home: str | None = None) -> Found:
    doc: Document = {"_id": CUSTOMER, "_v": version, "_deleted": True}
    if home is not None:
        doc["_home"] = home
    return Found(doc, served_by)


@pytest.fixture
def stores() -> Stores:
    return Stores()


def repository_over(regions: RegionMap) -> CustomerRepository:
    return CustomerRepository({}, regions, Suspicion(3.0), read_deadline_s=DEADLINE_S)


@pytest.fixture
def repository() -> CustomerRepository:
    return repository_over(RegionMap(DEFAULT_REGIONS))


class TestCovered:
    def test_nothing_unreachable(self, repository: CustomerRepository) -> None:
        assert repository.covered(set())

    @pytest.mark.parametrize("down", ["region_1", "region_2", "region_3"])
    def test_one_region_down_is_covered_by_its_replica(
        self, repository: CustomerRepository, down: str
    ) -> None:
        assert repository.covered({down})

    @pytest.mark.parametrize(
        "down",
        [
            {"region_1", "region_3"},  # region_1's replica is region_3
            {"region_2", "region_1"},  # region_2's replica is region_1
            {"region_3", "region_2"},  # region_3's replica is region_2
            {"region_1", "region_2", "region_3"},
        ],
    )
    def test_a_region_and_its_replica_down_is_not_covered(
        self, repository: CustomerRepository, down: set[str]
    ) -> None:
        assert not repository.covered(down)

    def test_a_region_without_replicas_is_not_covered_when_down(self) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="a", zip_min=0, zip_max=10, replicas=()),
                RegionSpec(name="b", zip_min=11, zip_max=20, replicas=("a",)),
            ]
        )
        repository = repository_over(regions)
        assert not repository.covered({"a"})
        assert repository.covered({"b"})

    def test_two_replicas_cover_a_home_and_one_replica_down(self) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="a", zip_min=0, zip_max=24999, replicas=("b", "c")),
                RegionSpec(name="b", zip_min=25000, zip_max=49999, replicas=("c", "d")),
                RegionSpec(name="c", zip_min=50000, zip_max=74999, replicas=("d", "a")),
                RegionSpec(name="d", zip_min=75000, zip_max=99999, replicas=("a", "b")),
            ]
        )
        repository = repository_over(regions)
        assert repository.covered({"a", "b"})
        assert not repository.covered({"a", "b", "c"})


class TestFound:
    def test_live_document(self) -> None:
        found = Found({"_id": "c", "_v": 7, "_deleted": False, "_home": "region_2"}, "region_1")
        assert (found.version, found.deleted, found.home) == (7, False, "region_2")

    def test_a_deletes_tombstone_has_no_home_and_did_not_move(self) -> None:
        found = Found({"_id": "c", "_v": 8, "_deleted": True}, "region_1")
        assert (found.deleted, found.home, found.moved) == (True, None, False)

    def test_an_upserts_tombstone_points_to_where_the_customer_moved(self) -> None:
        found = Found({"_id": "c", "_v": 8, "_deleted": True, "_home": "region_2"}, "region_3")
        assert (found.deleted, found.home, found.moved) == (True, "region_2", True)

    def test_a_live_document_did_not_move(self) -> None:
        found = Found({"_id": "c", "_v": 7, "_deleted": False, "_home": "region_2"}, "region_3")
        assert found.moved is False


class TestFilterQuery:
    def test_every_share_is_one_homes_live_documents(self) -> None:
        assert CustomerFilter().mongo("region_2", None) == {"_home": "region_2", "_deleted": False}

    def test_all_conditions(self) -> None:
        query = CustomerFilter(zip_min=1000, zip_max=2000, city="São", state="SP")
        assert query.mongo("region_1", "c-9") == {
            "_home": "region_1",
            "_deleted": False,
            "_id": {"$gt": "c-9"},
            "customer_zip_code_prefix": {"$gte": 1000, "$lte": 2000},
            "_city_key": {"$regex": "^sao"},
            "customer_state": "SP",
        }

    @pytest.mark.parametrize(
        ("query", "by_field"),
        [
            (CustomerFilter(), False),
            (CustomerFilter(region="region_2"), False),
            (CustomerFilter(city=""), False),
            (CustomerFilter(zip_min=0), True),
            (CustomerFilter(zip_max=5000), True),
            (CustomerFilter(city="sa"), True),
            (CustomerFilter(state="SP"), True),
        ],
    )
    def test_by_field_means_a_zip_city_or_state_condition(
        self, query: CustomerFilter, by_field: bool
    ) -> None:
        assert query.by_field is by_field

    @pytest.mark.parametrize("city", [".*", "a+b", "(x|y)", "[a-z]", "^$", "\\d"])
    def test_city_text_is_an_escaped_prefix_never_a_pattern(self, city: str) -> None:
        pattern = CustomerFilter(city=city).mongo("region_1", None)["_city_key"]["$regex"]
        assert re.fullmatch(pattern + ".*", city, flags=re.DOTALL)
        assert not re.match(pattern, "zzz")


class TestFresher:
    @pytest.mark.parametrize(
        ("newer", "older"),
        [
            (live(6, "region_2"), live(5, "region_1")),  # even over the home copy
            (tombstone(6, "region_2"), live(5, "region_1")),  # a newer delete wins
            (live(6, "region_2"), tombstone(5, "region_1")),  # a newer recreate wins
            (tombstone(6, "region_1"), tombstone(5, "region_2")),
        ],
    )
    def test_a_newer_version_wins_whatever_it_is(self, newer: Found, older: Found) -> None:
        assert _fresher(newer, older)
        assert not _fresher(older, newer)

    @pytest.mark.parametrize("served_by", NAMES)
    @pytest.mark.parametrize("home", [None, "region_1"])
    def test_at_one_version_a_live_copy_wins_over_a_tombstone(
        self, served_by: str, home: str | None
    ) -> None:
        copy, gone = live(5, served_by), tombstone(5, "region_2", home)
        assert _fresher(copy, gone)
        assert not _fresher(gone, copy)

    def test_at_one_version_the_home_copy_wins_over_a_replica(self) -> None:
        home, replica = live(5, "region_1"), live(5, "region_3")
        assert _fresher(home, replica)
        assert not _fresher(replica, home)

    def test_two_replica_copies_keep_the_one_held(self) -> None:
        # A home with two replicas, itself unreadable: neither copy outranks the other.
        first, second = live(5, "b", home="a"), live(5, "c", home="a")
        assert not _fresher(second, first)
        assert not _fresher(first, second)

    def test_two_tombstones_keep_the_one_held(self) -> None:
        assert not _fresher(tombstone(5, "region_1"), tombstone(5, "region_2"))
        assert not _fresher(tombstone(5, "region_2"), tombstone(5, "region_1"))


class TestLookup:
    async def test_one_point_read_per_region(self, stores: Stores) -> None:
        await stores.repository.lookup(CUSTOMER, {})
        for store in stores.regions.values():
            assert store.queries == [{"_id": CUSTOMER}]

    async def test_nobody_anywhere(self, stores: Stores) -> None:
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert (lookup.newest, lookup.unreachable) == ({}, set())

    @pytest.mark.parametrize("home", NAMES)
    async def test_the_live_home_copy_beats_same_version_tombstones_and_replicas(
        self, stores: Stores, home: str
    ) -> None:
        placement = RegionMap(DEFAULT_REGIONS).placement_of_home(home)
        for region in NAMES:
            if region in placement:
                stores.live(region, 5, home)
            else:
                stores.tombstone(region, 5, home)
        found = (await stores.repository.lookup(CUSTOMER, {})).newest[CUSTOMER]
        assert (found.served_by, found.deleted, found.version) == (home, False, 5)
        assert found.document["customer_city"] == f"from {home}"

    async def test_the_newest_version_wins_over_the_home_copy(self, stores: Stores) -> None:
        stores.live("region_1", 5, "region_1")
        stores.live("region_3", 6, "region_1")  # home not yet caught up
        stores.tombstone("region_2", 5)
        found = (await stores.repository.lookup(CUSTOMER, {})).newest[CUSTOMER]
        assert (found.served_by, found.version) == ("region_3", 6)

    async def test_a_newer_tombstone_is_the_answer(self, stores: Stores) -> None:
        stores.live("region_1", 5, "region_1")
        stores.tombstone("region_2", 7)
        stores.live("region_3", 5, "region_1")
        found = (await stores.repository.lookup(CUSTOMER, {})).newest[CUSTOMER]
        assert (found.served_by, found.deleted, found.version) == ("region_2", True, 7)

    async def test_a_replica_answers_when_home_is_marked_unavailable(self, stores: Stores) -> None:
        stores.live("region_1", 5, "region_1")
        stores.tombstone("region_2", 5)
        stores.live("region_3", 5, "region_1")
        statuses = {"region_1": NodeStatus.UNAVAILABLE}
        lookup = await stores.repository.lookup(CUSTOMER, statuses)
        assert lookup.newest[CUSTOMER].served_by == "region_3"
        assert not lookup.newest[CUSTOMER].deleted
        assert lookup.unreachable == {"region_1"}
        assert stores.regions["region_1"].queries == []

    async def test_only_a_moved_tombstone_readable_says_where_the_customer_lives(
        self, stores: Stores
    ) -> None:
        stores.live("region_2", 5, "region_2")
        stores.live("region_1", 5, "region_2")
        stores.tombstone("region_3", 5, "region_2")
        statuses = {"region_1": NodeStatus.UNAVAILABLE, "region_2": NodeStatus.UNAVAILABLE}
        lookup = await stores.repository.lookup(CUSTOMER, statuses)
        found = lookup.newest[CUSTOMER]
        assert (found.served_by, found.moved, found.home) == ("region_3", True, "region_2")
        assert lookup.unreachable == {"region_1", "region_2"}

    async def test_a_suspect_region_is_not_read(self, stores: Stores) -> None:
        stores.suspicion.suspect("region_2")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_2"}
        assert stores.regions["region_2"].queries == []

    async def test_a_failing_region_is_unreachable_and_held_suspect(self, stores: Stores) -> None:
        stores.live("region_1", 5, "region_1")
        stores.live("region_3", 5, "region_1")
        stores.regions["region_1"].fail_with = AutoReconnect("connection refused")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_1"}
        assert lookup.newest[CUSTOMER].served_by == "region_3"
        assert stores.suspicion.is_suspect("region_1")
        assert not stores.suspicion.is_suspect("region_3")

        stores.regions["region_1"].fail_with = None
        again = await stores.repository.lookup(CUSTOMER, {})
        assert again.unreachable == {"region_1"}  # held down: not read again
        assert len(stores.regions["region_1"].queries) == 1

        stores.clock.now += 3.0
        recovered = await stores.repository.lookup(CUSTOMER, {})
        assert recovered.unreachable == set()
        assert recovered.newest[CUSTOMER].served_by == "region_1"

    async def test_every_region_failing_finds_nothing(self, stores: Stores) -> None:
        for store in stores.regions.values():
            store.fail_with = AutoReconnect("down")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert (lookup.newest, lookup.unreachable) == ({}, set(NAMES))
        assert not stores.repository.covered(lookup.unreachable)

    async def test_an_error_that_is_not_the_stores_propagates(self, stores: Stores) -> None:
        stores.regions["region_2"].fail_with = RuntimeError("a bug, not an outage")
        with pytest.raises(RuntimeError, match="a bug"):
            await stores.repository.lookup(CUSTOMER, {})
        assert not stores.suspicion.is_suspect("region_2")


class TestHolds:
    @pytest.mark.parametrize(
        ("command_id", "position", "expected"),
        [
            ("mine", 9, True),  # its own write, wherever it stands
            ("other", 4, True),  # a write the partition took after it
            ("other", 6, False),  # an earlier write: this one not applied (yet)
        ],
    )
    async def test_its_own_write_or_a_later_one(
        self, stores: Stores, command_id: str, position: int, expected: bool
    ) -> None:
        stores.live("region_1", 5, "region_1")
        stores.regions["region_1"].docs[CUSTOMER] |= {"_cmd": "mine", "_pos": 5}
        held = await stores.repository.holds("region_1", CUSTOMER, command_id, position)
        assert held is expected

    async def test_a_document_without_a_position_holds_only_its_own_write(
        self, stores: Stores
    ) -> None:
        stores.live("region_1", 5, "region_1")
        stores.regions["region_1"].docs[CUSTOMER] |= {"_cmd": "mine"}
        assert await stores.repository.holds("region_1", CUSTOMER, "mine", 3)
        assert not await stores.repository.holds("region_1", CUSTOMER, "other", 0)

    async def test_a_missing_customer_is_not_there(self, stores: Stores) -> None:
        assert not await stores.repository.holds("region_1", CUSTOMER, "mine", 1)

    async def test_a_store_error_propagates(self, stores: Stores) -> None:
        stores.regions["region_1"].fail_with = AutoReconnect("down")
        with pytest.raises(PyMongoError):
            await stores.repository.holds("region_1", CUSTOMER, "mine", 1)


class TestPage:
    async def test_a_query_without_field_filters_walks_the_id_index(self, stores: Stores) -> None:
        stores.live("region_1", 3, "region_1")
        page = await stores.repository.page(CustomerFilter(), {}, after=None, limit=10)
        assert [found.document["_id"] for found in page.rows] == [CUSTOMER]
        for region in NAMES:
            (cursor,) = stores.regions[region].cursors
            assert (cursor.sorted_by, cursor.limited_to, cursor.hinted) == (("_id", 1), 11, "_id_")

    async def test_a_field_filter_leaves_the_index_to_the_store(self, stores: Stores) -> None:
        await stores.repository.page(CustomerFilter(state="SP"), {}, after=None, limit=10)
        cursors = [c for region in NAMES for c in stores.regions[region].cursors]
        assert len(cursors) == 3
        assert all(cursor.hinted is None for cursor in cursors)


def deadline_misses(region: str) -> float:
    sample = REGISTRY.get_sample_value(
        "regionstore_store_errors_total", {"region": region, "kind": "DeadlineExceeded"}
    )
    return sample or 0.0


class FakeWrites:
    """What the read route needs of Writes: the repository and the statuses."""

    def __init__(self, stores: Stores) -> None:
        self.repository = stores.repository

    async def statuses(self) -> dict[str, NodeStatus]:
        return {}


class EmptyBoard:
    """No status known for any region, as FakeWrites says."""

    async def all(self) -> dict[str, NodeStatus]:
        return {}


async def get_customer(customer_id: str, writes: Writes) -> CustomerOut:
    """The read route's answer: the service's read, shaped as the route shapes it."""
    service = CustomerService(
        settings=cast(Any, None),
        writes=writes,
        repository=writes.repository,
        board=cast(Any, EmptyBoard()),
        keys=cast(Any, None),
        audit=cast(Any, None),
        backpressure=cast(Any, None),
    )
    return customer_out(await service.get(customer_id))


def place(stores: Stores, version: int = 5) -> None:
    """The customer where an upsert puts it: home region_1, replica region_3, moved pointer."""
    stores.live("region_1", version, "region_1")
    stores.tombstone("region_2", version, "region_1")
    stores.live("region_3", version, "region_1")


# A read the deadline did not end would wait for ever: fail fast instead.
@pytest.mark.timeout(10)
class TestReadDeadline:
    async def test_a_share_whose_home_misses_it_is_read_from_the_replica(
        self, stores: Stores
    ) -> None:
        place(stores)
        (stall,) = stores.stall("region_1")
        before = deadline_misses("region_1")
        page = await stores.repository.page(CustomerFilter(), {}, after=None, limit=10)
        assert [(f.document["_id"], f.served_by) for f in page.rows] == [(CUSTOMER, "region_3")]
        assert (page.degraded, page.unreachable) == (["region_1"], [])
        assert (stall.held, stall.cancelled) == (1, 1)  # ended, not left running
        assert deadline_misses("region_1") == before + 1

    async def test_a_share_whose_home_and_replica_miss_it_is_unreachable(
        self, stores: Stores
    ) -> None:
        place(stores)
        stalls = stores.stall("region_1", "region_3")
        page = await stores.repository.page(CustomerFilter(), {}, after=None, limit=10)
        assert page.rows == []
        # region_1's customers: home and replica (region_3) late; region_3's: from region_2.
        assert (page.unreachable, page.degraded) == (["region_1"], ["region_3"])
        assert [(s.held, s.cancelled) for s in stalls] == [(1, 1), (2, 2)]

    async def test_a_lookup_whose_home_misses_it_answers_from_the_replica(
        self, stores: Stores
    ) -> None:
        place(stores)
        (stall,) = stores.stall("region_1")
        answer = await get_customer(CUSTOMER, cast(Writes, FakeWrites(stores)))
        assert (answer.served_by, answer.region, answer.fallback) == ("region_3", "region_1", True)
        assert stall.cancelled == 1

    async def test_a_lookup_whose_home_and_replica_miss_it_is_a_503(self, stores: Stores) -> None:
        place(stores)
        stores.stall("region_1", "region_3")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_1", "region_3"}
        assert lookup.newest[CUSTOMER].moved  # only region_2's pointer was read
        with pytest.raises(RegionsUnreachable) as caught:
            await get_customer(CUSTOMER, cast(Writes, FakeWrites(stores)))
        assert refusal(caught.value, retry_after_s=1).status_code == 503

    async def test_an_unknown_customer_behind_two_late_regions_is_a_503_not_a_404(
        self, stores: Stores
    ) -> None:
        stores.stall("region_1", "region_3")
        with pytest.raises(RegionsUnreachable) as caught:
            await get_customer(CUSTOMER, cast(Writes, FakeWrites(stores)))
        assert refusal(caught.value, retry_after_s=1).status_code == 503

    async def test_a_late_region_is_not_held_suspect_and_is_read_again(
        self, stores: Stores
    ) -> None:
        place(stores)
        stores.stall("region_1")
        first = await stores.repository.lookup(CUSTOMER, {})
        assert first.unreachable == {"region_1"}
        assert not stores.suspicion.is_suspect("region_1")
        stores.regions["region_1"].stall = None
        again = await stores.repository.lookup(CUSTOMER, {})  # no time has passed
        assert again.unreachable == set()
        assert again.newest[CUSTOMER].served_by == "region_1"

    async def test_holds_has_not_seen_a_write_it_could_not_read_in_time(
        self, stores: Stores
    ) -> None:
        stores.live("region_1", 5, "region_1")
        stores.regions["region_1"].docs[CUSTOMER] |= {"_cmd": "mine"}
        stores.stall("region_1")
        assert not await stores.repository.holds("region_1", CUSTOMER, "mine", 5)

    @pytest.mark.parametrize(
        "error",
        [
            ExecutionTimeout("operation exceeded time limit", 50),
            NetworkTimeout("timed out"),
            WaitQueueTimeoutError("no connection free in time"),
        ],
    )
    async def test_the_drivers_own_deadline_is_a_miss_too(
        self, stores: Stores, error: PyMongoError
    ) -> None:
        place(stores)
        stores.regions["region_1"].fail_with = error
        before = deadline_misses("region_1")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_1"}
        assert lookup.newest[CUSTOMER].served_by == "region_3"
        page = await stores.repository.page(CustomerFilter(), {}, after=None, limit=10)
        assert page.degraded == ["region_1"]
        assert not stores.suspicion.is_suspect("region_1")
        assert deadline_misses("region_1") == before + 2

    async def test_no_server_within_the_deadline_is_an_outage_held_suspect(
        self, stores: Stores
    ) -> None:
        place(stores)
        stores.regions["region_1"].fail_with = ServerSelectionTimeoutError("no servers")
        before = deadline_misses("region_1")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_1"}
        assert stores.suspicion.is_suspect("region_1")
        assert deadline_misses("region_1") == before


class TestMissedDeadline:
    @pytest.mark.parametrize(
        ("error", "missed"),
        [
            (TimeoutError(), True),
            (ExecutionTimeout("operation exceeded time limit", 50), True),
            (NetworkTimeout("timed out"), True),
            (ServerSelectionTimeoutError("no servers"), False),
            (AutoReconnect("connection refused"), False),
            (RuntimeError("a bug"), False),
        ],
    )
    def test_only_running_out_of_time_is_a_miss(self, error: BaseException, missed: bool) -> None:
        assert missed_deadline(error) is missed


class TestReadDeadlineSetting:
    @pytest.fixture(autouse=True)
    def clean_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in list(os.environ):
            if name.upper().startswith("REGIONSTORE_"):
                monkeypatch.delenv(name)

    def test_half_a_second_by_default(self) -> None:
        assert GatewaySettings().api.read_deadline_ms == 500

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_API__READ_DEADLINE_MS", "250")
        assert GatewaySettings().api.read_deadline_ms == 250

    def test_must_be_positive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_API__READ_DEADLINE_MS", "0")
        with pytest.raises(ValidationError):
            GatewaySettings()
