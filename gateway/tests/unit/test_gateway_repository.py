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
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
)

from regionstore_gateway.adapters.command_topic import CommandTopic
from regionstore_gateway.adapters.list_order import Order
from regionstore_gateway.adapters.repository import (
    CustomerFilter,
    CustomerRepository,
    Found,
    Page,
    _fresher,
    missed_deadline,
)
from regionstore_gateway.api.customers import customer_out
from regionstore_gateway.api.errors import refusal
from regionstore_gateway.bodies import CustomerOut
from regionstore_gateway.services.customers import CustomerService
from regionstore_gateway.services.errors import RegionsUnreachable
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared import indexes
from regionstore_shared.apply import Suspicion
from regionstore_shared.documents import Collection
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec
from regionstore_shared.status import NodeStatus

Document = dict[str, Any]
CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
NAMES = ("region_1", "region_2", "region_3")
DEADLINE_S = 0.01
NO_INDEX = "hint provided does not correspond to an existing index"


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


def matches(doc: Document, query: Document) -> bool:
    """The few operators the repository's walks use, as MongoDB reads them."""
    for name, condition in query.items():
        value = doc.get(name)
        if not isinstance(condition, dict):
            if value != condition:
                return False
            continue
        for op, operand in condition.items():
            ok = {
                "$gt": lambda v, o: v is not None and v > o,
                "$gte": lambda v, o: v is not None and v >= o,
                "$lt": lambda v, o: v is not None and v < o,
                "$lte": lambda v, o: v is not None and v <= o,
                "$regex": lambda v, o: isinstance(v, str) and re.search(o, v) is not None,
            }[op](value, operand)
            if not ok:
                return False
    return True


def ordered(docs: list[Document], sort: list[tuple[str, int]]) -> list[Document]:
    return sorted(docs, key=lambda d: tuple(d[name] for name, _ in sort))


class FakeCursor:
    """The find cursor of a fake store: records the sort, limit, skip and index hint asked for."""

    def __init__(self, docs: list[Document], store: FakeCollection) -> None:
        self.docs = docs
        self.store = store
        self.sorted_by: list[tuple[str, int]] = []
        self.limited_to: int | None = None
        self.skipped = 0
        self.hinted: str | None = None

    def sort(self, keys: list[tuple[str, int]]) -> FakeCursor:
        self.sorted_by = keys
        return self

    def limit(self, count: int) -> FakeCursor:
        self.limited_to = count
        return self

    def skip(self, count: int) -> FakeCursor:
        self.skipped = count
        return self

    def hint(self, index: str) -> FakeCursor:
        self.hinted = index
        return self

    def __aiter__(self) -> AsyncIterator[Document]:
        async def rows() -> AsyncIterator[Document]:
            await self.store.answer()
            if self.hinted in self.store.missing_indexes:
                raise OperationFailure(NO_INDEX, code=2)
            end = None if self.limited_to is None else self.skipped + self.limited_to
            for doc in ordered(self.docs, self.sorted_by)[self.skipped : end]:
                yield doc

        return rows()


class FakeCollection:
    """A regional store in a dict that answers reads and records them.

    ``fail_with`` fails every read; ``stall`` holds every read until it is cancelled; a hint
    naming one of ``missing_indexes`` fails as a store without that index does.
    """

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.queries: list[Document] = []
        self.cursors: list[FakeCursor] = []
        self.pipelines: list[tuple[list[Document], str | None]] = []
        self.fail_with: BaseException | None = None
        self.stall: Stall | None = None
        self.missing_indexes: set[str] = set()
        self.fail_on: str | None = None

    async def answer(self) -> None:
        if self.stall is not None:
            await self.stall()
        if self.fail_with is not None:
            raise self.fail_with

    def find(self, query: Document, projection: Document | None = None) -> FakeCursor:
        self.queries.append(query)
        cursor = FakeCursor([d for d in self.docs.values() if matches(d, query)], self)
        self.cursors.append(cursor)
        return cursor

    async def aggregate(self, pipeline: list[Document], hint: str | None = None) -> FakeCursor:
        self.pipelines.append((pipeline, hint))
        if hint is not None and hint == self.fail_on:
            raise AutoReconnect("this index's reads fail")
        if hint in self.missing_indexes:
            raise OperationFailure(NO_INDEX, code=2)
        docs = list(self.docs.values())
        for stage in pipeline:
            if "$match" in stage:
                docs = [d for d in docs if matches(d, stage["$match"])]
            elif "$sort" in stage:
                docs = ordered(docs, list(stage["$sort"].items()))
            else:
                docs = docs[: stage["$limit"]]
        return FakeCursor(docs, self)

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


def add(
    stores: Stores, home: str, customer_id: str, zip_prefix: int, city: str, state: str
) -> None:
    """A live customer in its home region's store."""
    stores.regions[home].docs[customer_id] = {
        "_id": customer_id,
        "_v": 1,
        "_deleted": False,
        "_home": home,
        "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
        "customer_zip_code_prefix": zip_prefix,
        "customer_city": city,
        "_city_key": city,
        "customer_state": state,
    }


def ids(page: Page) -> list[str]:
    return [found.document["_id"] for found in page.rows]


class TestPage:
    async def test_a_query_without_field_filters_walks_each_homes_id_index(
        self, stores: Stores
    ) -> None:
        stores.live("region_1", 3, "region_1")
        page = await stores.repository.page(CustomerFilter(), {}, after=None, limit=10)
        assert ids(page) == [CUSTOMER]
        assert (page.order, page.next_after) == (Order.ID, None)
        for region in NAMES:
            (cursor,) = stores.regions[region].cursors
            assert (cursor.sorted_by, cursor.limited_to) == ([("_id", 1)], 11)
            assert cursor.hinted == indexes.HOME_ID

    async def test_every_share_is_read_on_its_filters_index(self, stores: Stores) -> None:
        await stores.repository.page(CustomerFilter(state="SP"), {}, after=None, limit=10)
        cursors = [c for region in NAMES for c in stores.regions[region].cursors]
        assert [c.hinted for c in cursors] == [indexes.STATE_ID] * 3

    async def test_shares_merge_in_the_filters_order_and_a_full_page_says_where_next(
        self, stores: Stores
    ) -> None:
        add(stores, "region_1", "c", 1000, "sao paulo", "SP")
        add(stores, "region_2", "a", 40000, "salvador", "BA")
        add(stores, "region_3", "b", 70000, "brasilia", "DF")
        add(stores, "region_1", "d", 1000, "sao paulo", "SP")
        query = CustomerFilter(city="S")
        first = await stores.repository.page(query, {}, after=None, limit=2)
        assert (ids(first), first.order, first.next_after) == (
            ["a", "c"],
            Order.CITY,
            ("sao paulo", "c"),
        )
        second = await stores.repository.page(query, {}, after=first.next_after, limit=2)
        assert (ids(second), second.next_after) == (["d"], None)

    async def test_a_page_inside_a_value_walks_the_rest_of_it_then_the_values_above(
        self, stores: Stores
    ) -> None:
        for customer_id, zip_prefix in (("a", 1000), ("b", 1000), ("c", 1000), ("a2", 1001)):
            add(stores, "region_1", customer_id, zip_prefix, "sao paulo", "SP")
        query = CustomerFilter(zip_min=1000, zip_max=1001)
        page = await stores.repository.page(query, {}, after=(1000, "a"), limit=10)
        assert ids(page) == ["b", "c", "a2"]
        assert stores.regions["region_1"].queries[-2:] == [
            {"_home": "region_1", "_deleted": False, "customer_zip_code_prefix": 1000,
             "_id": {"$gt": "a"}},
            {"_home": "region_1", "_deleted": False,
             "customer_zip_code_prefix": {"$gte": 1001, "$lte": 1001}},
        ]  # fmt: skip

    async def test_a_zip_range_with_a_city_stops_on_its_budget_with_a_short_page(
        self, stores: Stores
    ) -> None:
        # budget_factor 10, limit 1: at most 20 zip-index entries are tested per walk.
        for n in range(30):
            add(stores, "region_1", f"x{n:02d}", 1000 + n, "campinas", "SP")
        add(stores, "region_1", "match", 1029, "sao paulo", "SP")
        query = CustomerFilter(zip_min=1000, zip_max=1100, city="sao")
        first = await stores.repository.page(query, {}, after=None, limit=1, order=Order.ZIP)
        assert (ids(first), first.next_after) == ([], (1019, "x19"))
        second = await stores.repository.page(
            query, {}, after=first.next_after, limit=1, order=Order.ZIP
        )
        assert (ids(second), second.next_after) == (["match"], None)

    async def test_a_zip_range_with_a_city_keeps_the_walk_that_found_the_better_page(
        self, stores: Stores
    ) -> None:
        for n in range(30):
            add(stores, "region_1", f"x{n:02d}", 1000 + n, "campinas", "SP")
        add(stores, "region_1", "match", 1029, "sao paulo", "SP")
        query = CustomerFilter(zip_min=1000, zip_max=1100, city="sao")
        first = await stores.repository.page(query, {}, after=None, limit=1)
        assert (ids(first), first.order, first.next_after) == (["match"], Order.CITY, None)
        walked = [hint for _, hint in stores.regions["region_1"].pipelines]
        assert walked == [indexes.ZIP_ID, indexes.CITY_ID]
        by_zip = await stores.repository.page(query, {}, after=None, limit=1, order=Order.ZIP)
        assert (ids(by_zip), by_zip.order) == ([], Order.ZIP)

    async def test_a_trial_walk_that_could_not_read_a_region_loses(self, stores: Stores) -> None:
        # The city walk alone would end the list at once; its region_1 cannot be read.
        for n in range(30):
            add(stores, "region_1", f"x{n:02d}", 1000 + n, "campinas", "SP")
        add(stores, "region_1", "match", 1029, "sao paulo", "SP")
        stores.regions["region_1"].fail_on = indexes.CITY_ID
        stores.regions["region_3"].fail_with = AutoReconnect("down")  # its replica
        query = CustomerFilter(zip_min=1000, zip_max=1100, city="sao")
        page = await stores.repository.page(query, {}, after=None, limit=1)
        assert (page.order, page.unreachable) == (Order.ZIP, [])

    async def test_a_store_without_the_index_is_read_without_the_hint(self, stores: Stores) -> None:
        add(stores, "region_1", "a", 1000, "sao paulo", "SP")
        stores.regions["region_1"].missing_indexes = {indexes.STATE_ID}
        page = await stores.repository.page(CustomerFilter(state="SP"), {}, after=None, limit=5)
        assert (ids(page), page.degraded) == (["a"], [])
        assert not stores.suspicion.is_suspect("region_1")
        assert [c.hinted for c in stores.regions["region_1"].cursors] == [indexes.STATE_ID, None]


def deadline_misses(region: str) -> float:
    sample = REGISTRY.get_sample_value(
        "regionstore_store_errors_total", {"region": region, "kind": "DeadlineExceeded"}
    )
    return sample or 0.0


class FakeWrites:
    """What the read route needs of CommandTopic: the repository and the statuses."""

    def __init__(self, stores: Stores) -> None:
        self.repository = stores.repository

    async def statuses(self) -> dict[str, NodeStatus]:
        return {}


class EmptyBoard:
    """No status known for any region, as FakeWrites says."""

    async def all(self) -> dict[str, NodeStatus]:
        return {}


async def get_customer(customer_id: str, writes: CommandTopic) -> CustomerOut:
    """The read route's answer: the service's read, shaped as the route shapes it."""
    service = CustomerService(
        settings=cast(Any, None),
        topic=writes,
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
        answer = await get_customer(CUSTOMER, cast(CommandTopic, FakeWrites(stores)))
        assert (answer.served_by, answer.region, answer.fallback) == ("region_3", "region_1", True)
        assert stall.cancelled == 1

    async def test_a_lookup_whose_home_and_replica_miss_it_is_a_503(self, stores: Stores) -> None:
        place(stores)
        stores.stall("region_1", "region_3")
        lookup = await stores.repository.lookup(CUSTOMER, {})
        assert lookup.unreachable == {"region_1", "region_3"}
        assert lookup.newest[CUSTOMER].moved  # only region_2's pointer was read
        with pytest.raises(RegionsUnreachable) as caught:
            await get_customer(CUSTOMER, cast(CommandTopic, FakeWrites(stores)))
        assert refusal(caught.value, retry_after_s=1).status_code == 503

    async def test_an_unknown_customer_behind_two_late_regions_is_a_503_not_a_404(
        self, stores: Stores
    ) -> None:
        stores.stall("region_1", "region_3")
        with pytest.raises(RegionsUnreachable) as caught:
            await get_customer(CUSTOMER, cast(CommandTopic, FakeWrites(stores)))
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
