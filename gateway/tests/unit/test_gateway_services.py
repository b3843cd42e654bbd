"""The gateway's services without HTTP: the decisions the routes used to make inline."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError
from audit_fakes import AckingProducer, audit_trail, recent_changes
from backpressure_fakes import idle_backpressure
from prometheus_client import REGISTRY

from regionstore_gateway.adapters.audit_trail import AuditUnavailableError
from regionstore_gateway.adapters.command_topic import CommandTopic
from regionstore_gateway.adapters.list_order import Key, Order
from regionstore_gateway.adapters.repository import CustomerFilter, Found, Lookup, Page
from regionstore_gateway.api.errors import refusal
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.services.customers import CustomerService, validate_filter
from regionstore_gateway.services.errors import (
    CustomerExistsError,
    CustomerNotFound,
    InvalidInput,
    RegionNotFound,
    RegionsUnreachable,
    TooManyMatches,
)
from regionstore_gateway.services.paging import decode_cursor, encode_cursor, fingerprint
from regionstore_gateway.services.publishing import Answer, WriteRequest
from regionstore_gateway.services.regions import RegionService
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_shared.clock import HybridClock
from regionstore_shared.schemas import Customer, UpsertCustomer, decode_command
from regionstore_shared.status import NodeStatus, RegionStatus, SetBy, StatusRecord
from regionstore_testing.keys import MemoryKeyring, customer_of

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
ALICE = Principal(key_id="alice", role=Role.OPERATOR)


def live(customer_id: str = CUSTOMER, *, zip_code: int = 14409, region: str = "region_1") -> Found:
    document = {
        "_id": customer_id,
        "_v": 5,
        "_deleted": False,
        "_home": region,
        "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
        "customer_zip_code_prefix": zip_code,
        "customer_city": "franca",
        "customer_state": "SP",
    }
    return Found(document, served_by=region)


def moved_pointer(home: str) -> Found:
    return Found({"_id": CUSTOMER, "_v": 5, "_deleted": True, "_home": home}, "region_2")


def customer(zip_code: int = 14409) -> Customer:
    return Customer(
        customer_id=CUSTOMER,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_code,
        customer_city="franca",
        customer_state="SP",
    )


class FakeRepository:
    """Answers lookups with ``lookup`` and pages from ``pages`` in turn, recording each ask."""

    def __init__(self) -> None:
        self.lookup_result = Lookup()
        self.pages: list[Page] = []
        self.asked: list[tuple[Key | None, int]] = []
        self.orders: list[Order | None] = []
        self.covers = True

    async def lookup(self, customer_id: str, statuses: object) -> Lookup:
        return self.lookup_result

    def covered(self, unreachable: set[str]) -> bool:
        return self.covers

    async def page(
        self,
        query: CustomerFilter,
        statuses: object,
        *,
        after: Key | None,
        limit: int,
        order: Order | None = None,
    ) -> Page:
        self.asked.append((after, limit))
        self.orders.append(order)
        return self.pages.pop(0)


class FakeBoard:
    def __init__(self) -> None:
        self.statuses = dict.fromkeys(("region_1", "region_2", "region_3"), NodeStatus.AVAILABLE)
        self.set_records = {r: StatusRecord(RegionStatus.AVAILABLE) for r in self.statuses}
        self.reachable = True

    async def all(self) -> dict[str, NodeStatus]:
        return dict(self.statuses)

    async def records(self) -> dict[str, StatusRecord]:
        return dict(self.set_records)

    async def set(self, region: str, status: NodeStatus, *, key_id: str | None = None) -> None:
        self.statuses[region] = status
        self.set_records[region] = StatusRecord(
            RegionStatus(status.value), SetBy.OPERATOR, key_id, datetime.now(UTC)
        )


class FakeBacklog:
    async def backlog(self, regions: Any) -> dict[str, int | None]:
        return dict.fromkeys(regions, 3)

    async def command_lag(self, groups: Any) -> dict[str, int | None]:
        return dict.fromkeys(groups, 0)


class FakeApplied:
    async def read(self, regions: Any) -> dict[str, int]:
        return dict.fromkeys(regions, 7)


class Rig:
    """A CustomerService over a real CommandTopic, a fake repository and acking producers."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.repository = FakeRepository()
        self.producer = AckingProducer()
        self.audit_producer = AckingProducer()
        self.board = FakeBoard()
        self.keyring = MemoryKeyring()
        self.writes = CommandTopic(
            settings=settings,
            producer=cast(Any, self.producer),
            board=cast(Any, self.board),
            repository=cast(Any, self.repository),
            clock=HybridClock(1),
            keyring=self.keyring,
        )
        self.audit = audit_trail(settings, self.audit_producer)
        self.customers = CustomerService(
            settings=settings,
            topic=self.writes,
            repository=cast(Any, self.repository),
            board=cast(Any, self.board),
            keys=cast(Any, None),
            audit=self.audit,
            backpressure=idle_backpressure(settings),
        )
        self.regions = RegionService(
            settings=settings,
            board=cast(Any, self.board),
            backlog=cast(Any, FakeBacklog()),
            applied=cast(Any, FakeApplied()),
            recent=recent_changes(),
            changes=cast(Any, None),
            audit=self.audit,
        )

    def sent(self) -> list[dict[str, Any]]:
        return self.producer.events()


def command_of(answer: Answer) -> dict[str, Any]:
    command = answer.command
    home = command.home_region if isinstance(command, UpsertCustomer) else None
    return {"kind": command.kind, "key": command.key, "home": home}


WRITE = WriteRequest(request="r")


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return Rig(GatewaySettings(api=ApiSettings(default_page_size=2, max_page_size=3)))


@pytest.fixture
def capped(rig: Rig) -> Rig:
    """A rig whose filter answers carry at most 4 records, read 3 at a time."""
    return Rig(
        GatewaySettings(api=ApiSettings(max_page_size=3, max_filter_records=4, max_filter_scan=50))
    )


class TestRead:
    async def test_a_live_customer_is_found(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(newest={CUSTOMER: live()})
        assert (await rig.customers.get(CUSTOMER)).document["_id"] == CUSTOMER

    async def test_a_deleted_customer_is_not_found(self, rig: Rig) -> None:
        tombstone = Found({"_id": CUSTOMER, "_v": 9, "_deleted": True}, "region_1")
        rig.repository.lookup_result = Lookup(newest={CUSTOMER: tombstone})
        with pytest.raises(CustomerNotFound):
            await rig.customers.get(CUSTOMER)

    async def test_only_a_pointer_to_an_unread_home_is_unreachable(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(
            newest={CUSTOMER: moved_pointer("region_1")}, unreachable={"region_1", "region_3"}
        )
        with pytest.raises(RegionsUnreachable, match="lives in region_1"):
            await rig.customers.get(CUSTOMER)

    async def test_nothing_found_with_a_region_uncovered_is_unreachable_not_absent(
        self, rig: Rig
    ) -> None:
        rig.repository.lookup_result = Lookup(unreachable={"region_1", "region_3"})
        rig.repository.covers = False
        with pytest.raises(RegionsUnreachable):
            await rig.customers.get(CUSTOMER)

    async def test_nothing_found_with_every_region_covered_is_absent(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(unreachable={"region_1"})
        with pytest.raises(CustomerNotFound):
            await rig.customers.get(CUSTOMER)


def page_of(
    rows: list[Found],
    next_after: Key | None,
    degraded: list[str] | None = None,
    unreachable: list[str] | None = None,
    *,
    order: Order = Order.ID,
    examined: int | None = None,
) -> Page:
    return Page(
        rows,
        next_after,
        order,
        degraded or [],
        unreachable or [],
        len(rows) if examined is None else examined,
    )


# Cursors the first release issued (after "b"), for state=SP and for city=sao.
FIRST_RELEASE_SP = "eyJhZnRlciI6ICJiIiwgInEiOiAiYTc5YTNkZWI1NmFmIn0"
FIRST_RELEASE_SAO = "eyJhZnRlciI6ICJiIiwgInEiOiAiMWI0MTE5M2MyYzc1In0"


def raw_cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class TestPaging:
    async def test_a_page_with_more_carries_a_cursor_to_the_next(self, rig: Rig) -> None:
        query = CustomerFilter(state="SP")
        rig.repository.pages = [page_of([live("a"), live("b")], ("b",), ["region_3"])]
        page = await rig.customers.page(query)
        assert rig.repository.asked == [(None, 2)]  # the default page size
        assert page.next_cursor is not None
        assert decode_cursor(page.next_cursor, [Order.ID], query) == (Order.ID, ("b",))
        assert (page.degraded, page.order) == (["region_3"], Order.ID)

    async def test_the_cursor_continues_after_its_key(self, rig: Rig) -> None:
        query = CustomerFilter(zip_min=1000)
        rig.repository.pages = [page_of([live("c")], None, [], ["region_2"], order=Order.ZIP)]
        cursor = encode_cursor((1000, "b"), Order.ZIP, query)
        page = await rig.customers.page(query, limit=3, cursor=cursor)
        assert rig.repository.asked == [((1000, "b"), 3)]
        assert (page.next_cursor, page.unreachable) == (None, ["region_2"])

    async def test_each_answer_is_counted_by_what_it_could_see(self, rig: Rig) -> None:
        def answers() -> list[float]:
            return [
                REGISTRY.get_sample_value("regionstore_list_answers_total", {"result": r}) or 0.0
                for r in ("complete", "degraded", "incomplete")
            ]

        before = answers()
        rig.repository.pages = [
            Page([live("a")], None, Order.ID, [], []),
            Page([live("a")], None, Order.ID, ["region_3"], []),
            Page([live("a")], None, Order.ID, ["region_3"], ["region_2"]),
            Page([live("a")], None, Order.ID, [], ["region_2"]),
        ]
        for _ in range(3):
            await rig.customers.page(CustomerFilter())
        await rig.customers.every(CustomerFilter())
        assert [b - a for a, b in zip(before, answers(), strict=True)] == [1, 1, 2]

    async def test_a_limit_over_the_maximum_is_a_422_on_the_limit(self, rig: Rig) -> None:
        with pytest.raises(InvalidInput) as caught:
            await rig.customers.page(CustomerFilter(), limit=4)
        (error,) = caught.value.errors()
        assert (error["loc"], error["type"]) == (("query", "limit"), "less_than_equal")

    @pytest.mark.parametrize(
        ("cursor", "query", "says"),
        [
            (encode_cursor(("b",), Order.ID, CustomerFilter(state="SP")),
             CustomerFilter(state="RJ"), "belongs to a different query"),
            (FIRST_RELEASE_SP, CustomerFilter(state="RJ"), "belongs to a different query"),
            (FIRST_RELEASE_SAO, CustomerFilter(city="sao"), "earlier release"),
            (raw_cursor({"v": 3, "o": "id", "k": ["b"], "q": "x"}), CustomerFilter(),
             "another release"),
            (raw_cursor({"v": 2, "o": "zip", "k": ["1000", "b"],
                         "q": fingerprint(CustomerFilter(zip_min=1))}),
             CustomerFilter(zip_min=1), "not a cursor this API issued"),
            (raw_cursor(["b"]), CustomerFilter(), "not a cursor this API issued"),
            ("%%%not-base64", CustomerFilter(), "not a cursor this API issued"),
        ],
    )  # fmt: skip
    async def test_a_cursor_it_cannot_continue_is_a_422_saying_why(
        self, rig: Rig, cursor: str, query: CustomerFilter, says: str
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            await rig.customers.page(query, cursor=cursor)
        (error,) = caught.value.errors()
        assert error["loc"] == ("query", "cursor")
        assert says in error["msg"]
        assert rig.repository.asked == []

    async def test_a_first_release_cursor_still_pages_a_filter_ordered_by_id(
        self, rig: Rig
    ) -> None:
        rig.repository.pages = [page_of([live("c")], None)]
        await rig.customers.page(CustomerFilter(state="SP"), cursor=FIRST_RELEASE_SP)
        assert rig.repository.asked == [(("b",), 2)]

    async def test_the_order_a_first_page_took_is_kept_by_the_next(self, rig: Rig) -> None:
        query = CustomerFilter(zip_min=1000, city="sao")
        rig.repository.pages = [page_of([], None, order=Order.CITY)]
        cursor = encode_cursor(("sao paulo", "b"), Order.CITY, query)
        await rig.customers.page(query, cursor=cursor)
        assert rig.repository.orders == [Order.CITY]

    async def test_a_city_spelled_another_way_keeps_its_cursor(self, rig: Rig) -> None:
        rig.repository.pages = [page_of([], None, order=Order.CITY)]
        cursor = encode_cursor(("sao paulo", "b"), Order.CITY, CustomerFilter(city="São"))
        await rig.customers.page(CustomerFilter(city="sao"), cursor=cursor)
        assert rig.repository.asked == [(("sao paulo", "b"), 2)]

    async def test_every_reads_all_pages_and_every_region_missed_and_sorts_by_id(
        self, rig: Rig
    ) -> None:
        rig.repository.pages = [
            page_of([live("c"), live("a"), live("d")], (5, "d"), ["region_3"], order=Order.ZIP),
            page_of([live("b")], None, ["region_1"], ["region_2"], order=Order.ZIP),
        ]
        listing = await rig.customers.every(CustomerFilter(zip_min=1))
        assert [row.document["_id"] for row in listing.rows] == ["a", "b", "c", "d"]
        assert rig.repository.asked == [(None, 3), ((5, "d"), 3)]
        assert rig.repository.orders == [None, Order.ZIP]
        assert (listing.degraded, listing.unreachable) == (["region_1", "region_3"], ["region_2"])

    async def test_every_stops_reading_one_record_past_the_most_it_may_answer(
        self, capped: Rig
    ) -> None:
        capped.repository.pages = [
            page_of([live("a"), live("b"), live("c")], ("c",)),
            page_of([live("d"), live("e")], ("e",)),
        ]
        with pytest.raises(TooManyMatches) as caught:
            await capped.customers.every(CustomerFilter())
        assert caught.value.limit == 4
        assert capped.repository.asked == [(None, 3), (("c",), 2)]

    async def test_every_answers_exactly_the_most_it_may(self, capped: Rig) -> None:
        capped.repository.pages = [
            page_of([live("a"), live("b"), live("c")], ("c",)),
            page_of([live("d")], None),
        ]
        listing = await capped.customers.every(CustomerFilter())
        assert [row.document["_id"] for row in listing.rows] == ["a", "b", "c", "d"]

    async def test_every_stops_once_its_walks_read_more_than_it_may(self, capped: Rig) -> None:
        # Short pages of a zip range and a city the range holds few of.
        capped.repository.pages = [
            page_of([], (10, "x"), order=Order.ZIP, examined=40),
            page_of([live("a")], (20, "y"), order=Order.ZIP, examined=40),
        ]
        with pytest.raises(TooManyMatches, match="index entries"):
            await capped.customers.every(CustomerFilter(zip_min=1, city="sao"))
        assert len(capped.repository.asked) == 2


class TestWrites:
    async def test_an_upsert_is_published_to_its_home(self, rig: Rig) -> None:
        answer = await rig.customers.upsert(customer(), WRITE)
        assert command_of(answer) == {"kind": "upsert", "key": CUSTOMER, "home": "region_1"}
        assert [event["sealed"]["customer_id"] for event in rig.sent()] == [CUSTOMER]
        assert "customer" not in rig.sent()[0]  # never in clear on the wire

    async def test_a_zip_no_region_takes_is_a_422_on_the_zip(self, rig: Rig) -> None:
        with pytest.raises(InvalidInput) as caught:
            await rig.customers.upsert(customer(999), WRITE)
        (error,) = caught.value.errors()
        assert error["loc"] == ("body", "customer_zip_code_prefix")
        assert rig.sent() == []

    async def test_create_only_refuses_a_live_customer(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(newest={CUSTOMER: live()})
        with pytest.raises(CustomerExistsError) as caught:
            await rig.customers.upsert(customer(), WRITE, create_only=True)
        assert refusal(caught.value, retry_after_s=1).status_code == 409
        assert rig.sent() == []

    async def test_a_patch_merges_into_the_live_customer(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(newest={CUSTOMER: live()})
        changes = {"customer_zip_code_prefix": 90000, "customer_city": "porto alegre"}
        answer = await rig.customers.patch(CUSTOMER, changes, WRITE)
        (sent,) = rig.sent()
        merged = await customer_of(decode_command(json.dumps(sent).encode()), rig.keyring)
        assert merged.customer_city == "porto alegre"
        assert merged.customer_unique_id == "861eff4711a542e4b93843c6dd7febb0"
        assert command_of(answer)["home"] != "region_1"  # the new zip moved it

    async def test_a_patch_of_an_unknown_customer_is_not_found(self, rig: Rig) -> None:
        with pytest.raises(CustomerNotFound):
            await rig.customers.patch(CUSTOMER, {"customer_city": "x"}, WRITE)
        assert rig.sent() == []

    async def test_a_patch_making_the_customer_invalid_is_a_422_on_the_body(self, rig: Rig) -> None:
        rig.repository.lookup_result = Lookup(newest={CUSTOMER: live()})
        with pytest.raises(InvalidInput) as caught:
            await rig.customers.patch(CUSTOMER, {"customer_state": "XX"}, WRITE)
        assert caught.value.errors()[0]["loc"][0] == "body"
        assert rig.sent() == []

    async def test_a_delete_is_audited_then_published(self, rig: Rig) -> None:
        answer = await rig.customers.delete(CUSTOMER, ALICE, WRITE)
        assert command_of(answer)["kind"] == "delete"
        (event,) = rig.audit_producer.events()
        assert (event["target"], event["key_id"]) == (CUSTOMER, "alice")
        assert len(rig.sent()) == 1

    async def test_a_delete_the_trail_cannot_take_is_not_published(self, rig: Rig) -> None:
        rig.audit_producer.send = _refuse  # type: ignore[method-assign]
        with pytest.raises(AuditUnavailableError):
            await rig.customers.delete(CUSTOMER, ALICE, WRITE)
        assert rig.sent() == []


async def _refuse(*_: object, **__: object) -> None:
    raise KafkaConnectionError("no broker")


class TestFilter:
    def test_a_region_not_configured_is_a_422_on_the_region(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            validate_filter(("region_1",), None, None, None, None, "region_9")
        assert caught.value.errors()[0]["loc"] == ("query", "region")


class TestRegions:
    async def test_the_list_has_every_region_with_its_figures(self, rig: Rig) -> None:
        listed = await rig.regions.regions()
        assert [(r.name, r.pending, r.applied) for r in listed.regions] == [
            ("region_1", 3, 7),
            ("region_2", 3, 7),
            ("region_3", 3, 7),
        ]

    async def test_a_status_change_is_audited_then_made(self, rig: Rig) -> None:
        await rig.regions.set_status("region_2", NodeStatus.UNAVAILABLE, ALICE)
        assert rig.board.statuses["region_2"] is NodeStatus.UNAVAILABLE
        (event,) = rig.audit_producer.events()
        assert event["target"] == "region_2"
        region = await rig.regions.region("region_2")
        assert region.status is RegionStatus.UNAVAILABLE
        assert (region.set_by, region.set_by_key) == (SetBy.OPERATOR, ALICE.key_id)

    @pytest.mark.parametrize(
        ("noun", "detail"), [("region", "unknown region"), ("node", "unknown node")]
    )
    async def test_an_unknown_region_is_not_found_and_nothing_changes(
        self, rig: Rig, noun: str, detail: str
    ) -> None:
        with pytest.raises(RegionNotFound) as caught:
            await rig.regions.set_status("region_9", NodeStatus.UNAVAILABLE, ALICE, noun=noun)
        answer = refusal(caught.value, retry_after_s=1)
        assert answer.status_code == 404
        assert detail.encode() in answer.body
        assert rig.audit_producer.events() == []
