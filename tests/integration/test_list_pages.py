"""List pages on the real stores: every shape's plan walks its index in order and stops after
the page (no sort of the matches), and paging stays exact while writes go on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from regionstore_gateway.adapters.list_order import Key, Order, Plan, plans
from regionstore_shared.schemas import fold_text
from tests.regionstore_env import Env, customer, env

pytestmark = pytest.mark.integration
__all__ = ["env"]

# Every list shape of the API (the region filter only picks the homes walked).
SHAPES: dict[str, dict[str, Any]] = {
    "no filter": {},
    "state": {"state": "SP"},
    "city": {"city": "sao"},
    "state and city": {"state": "SP", "city": "campinas"},
    "zip range": {"zip_min": 1000, "zip_max": 39999},
    "zip floor": {"zip_min": 20000},
    "zip and state": {"zip_min": 40000, "zip_max": 45000, "state": "BA"},
    "zip and city": {"zip_min": 1000, "zip_max": 99999, "city": "rio"},
    "zip, state and city": {"zip_max": 30000, "state": "SP", "city": "sao"},
    "unique id": {"unique_id": "861eff4711a542e4b93843c6dd7febb0", "city": "sao"},
}
# What a plan must not hold: a sort of what the walk read (DocumentDB's PostgreSQL plan, and
# MongoDB's), a bitmap of every match, a scan of the collection.
SORTS = {"Sort", "Incremental Sort", "SORT", "SORT_KEY_GENERATOR"}
READ_ALL = {"Bitmap Heap Scan", "Bitmap Index Scan", "Seq Scan", "COLLSCAN"}
FOLLOWING_PAGE_LIMIT = 51
BUDGET = 510


def nodes(plan_part: Any, kinds: set[str], index_names: set[str]) -> None:
    """Every plan node's kind and every index it names, in either store's explain format."""
    if isinstance(plan_part, list):
        for item in plan_part:
            nodes(item, kinds, index_names)
        return
    if not isinstance(plan_part, dict):
        return
    for field in ("Node Type", "stage"):
        if isinstance(plan_part.get(field), str):
            kinds.add(plan_part[field])
    for field in ("Index Name", "indexName"):
        if isinstance(plan_part.get(field), str):
            index_names.add(plan_part[field])
    for value in plan_part.values():
        nodes(value, kinds, index_names)


def winning(explained: dict[str, Any]) -> Any:
    planner = explained.get("queryPlanner", explained)
    # MongoDB lists the plans it rejected too: only the one it runs counts.
    return planner.get("winningPlan", planner)


def after_key(walk: Plan) -> Key:
    """A key inside the filter, as a next page's cursor carries."""
    if walk.order is Order.ID:
        return ("8",)
    if walk.order is Order.CITY:
        return (f"{walk.city_prefix} a", "8")
    return ((walk.zip_min or 0) + 5, "8")


def commands(walk: Plan, segment: dict[str, Any], collection: str) -> list[dict[str, Any]]:
    """The store commands the repository sends for one segment of a walk."""
    find = {
        "find": collection,
        "filter": segment,
        "sort": dict(walk.sort()),
        "limit": FOLLOWING_PAGE_LIMIT,
        "hint": walk.index,
    }
    if walk.residual is None:
        return [find]
    scan = {
        "aggregate": collection,
        "pipeline": walk.pipeline(segment, BUDGET, FOLLOWING_PAGE_LIMIT),
        "hint": walk.index,
        "cursor": {},
    }
    budget_end = {**find, "skip": BUDGET - 1, "limit": 1}
    return [scan, budget_end]


@pytest.mark.parametrize("page", ["first", "following"])
@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_walks_its_index_in_order_without_sorting_the_matches(
    env: Env, shape: str, page: str
) -> None:
    filters = {
        "zip_min": None,
        "zip_max": None,
        "city": None,
        "state": None,
        "unique_id": None,
        **SHAPES[shape],
    }
    for walk in plans(**filters):
        after = after_key(walk) if page == "following" else None
        for home, collection in env.collections.items():
            for segment in walk.segments(home, after):
                for command in commands(walk, segment, collection.name):
                    explained = await collection.database.command({"explain": command})
                    kinds: set[str] = set()
                    index_names: set[str] = set()
                    nodes(winning(explained), kinds, index_names)
                    where = (shape, walk.order, home, command)
                    assert not kinds & SORTS, (where, kinds)
                    assert not kinds & READ_ALL, (where, kinds)
                    assert walk.index in index_names, (where, index_names)
                    assert {"Limit", "LIMIT"} & kinds or "limitAmount" in str(explained)


def _matches(row: dict[str, Any], params: dict[str, Any]) -> bool:
    zip_prefix = row["customer_zip_code_prefix"]
    return (
        params.get("zip_min", 0) <= zip_prefix <= params.get("zip_max", 99999)
        and row["customer_state"] == params.get("state", row["customer_state"])
        and fold_text(row["customer_city"]).startswith(fold_text(params.get("city", "")))
    )


def _order_key(row: dict[str, Any], order: list[str]) -> tuple[Any, ...]:
    values = {**row, "customer_city": fold_text(row["customer_city"])}
    return tuple(values[name] for name in order)


class Town:
    """Customers in a city no other test uses, and the writes that go on while it is paged."""

    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.name = name
        self.ids: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.changed: set[str] = set()

    async def add(self, zip_prefix: int, state: str) -> str:
        body = customer(zip_prefix=zip_prefix, state=state, city=self.name)
        await self.env.write("POST", "/v1/customers?wait=applied", json=body)
        self.ids[body["customer_id"]] = body
        return str(body["customer_id"])

    async def churn(self, step: int) -> None:
        """One round of writes between two pages: a new customer, a deleted one, a changed one
        (a field no order uses), each applied before the next page is read."""
        zip_prefix, state = TOWN_ZIPS[step % len(TOWN_ZIPS)]
        await self.add(zip_prefix + 7, state)
        stable = sorted(set(self.ids) - self.deleted - self.changed)
        gone, touched = stable[step % len(stable)], stable[(step * 7 + 3) % len(stable)]
        await self.env.write("DELETE", f"/v1/customers/{gone}?wait=applied")
        self.deleted.add(gone)
        if touched != gone:
            body = {**self.ids[touched], "customer_unique_id": uuid.uuid4().hex}
            await self.env.write("PUT", f"/v1/customers/{touched}?wait=applied", json=body)
            self.changed.add(touched)


TOWN_ZIPS = [(1310, "SP"), (22000, "RJ"), (30100, "MG"), (40100, "BA"), (70100, "DF")]


@pytest_asyncio.fixture(loop_scope="session")
async def town(env: Env) -> AsyncIterator[Town]:
    """30 customers of one new town over every region."""
    town = Town(env, f"Vila Página {uuid.uuid4().hex[:8]}")
    bodies = [
        customer(zip_prefix=zip_prefix + n, state=state, city=town.name)
        for n in range(6)
        for zip_prefix, state in TOWN_ZIPS
    ]
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.json()["accepted"] == len(bodies)
    for result in response.json()["results"]:
        env.remember(result)
    town.ids = {b["customer_id"]: b for b in bodies}
    assert (await env.settle()).clean
    yield town


@pytest.mark.parametrize(
    "extra",
    # A zip range with a city walks the zip range's customers, a bounded number a page: the
    # ranges stay narrow so that the pages end at any size of the stores.
    [
        {},
        {"state": "SP"},
        {"zip_min": 1300, "zip_max": 1320},
        {"zip_min": 22000, "zip_max": 22010, "state": "RJ"},
    ],
    ids=["city", "state and city", "zip range and city", "zip, state and city"],
)
async def test_pages_while_writes_go_on_hold_every_untouched_match_once_in_order(
    env: Env, town: Town, extra: dict[str, Any]
) -> None:
    params = {"city": town.name.upper(), **extra}
    before = {i for i, body in town.ids.items() if _matches(body, params)} - town.deleted
    rows: list[dict[str, Any]] = []
    cursor = None
    for step in range(200):
        query = {**params, "limit": 4, **({"cursor": cursor} if cursor else {})}
        response = await env.http.get("/v1/customers", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        await town.churn(step)
    else:
        raise AssertionError("paging did not end")
    order = page["order"]
    keys = [_order_key(row, order) for row in rows]
    assert keys == sorted(keys), "out of order"
    assert len(set(keys)) == len(keys), "repeated"
    assert all(_matches(row, {**params, "city": town.name}) for row in rows)
    seen = {row["customer_id"] for row in rows}
    assert seen <= set(town.ids)
    untouched = before - town.deleted - town.changed
    assert untouched <= seen, f"missed {sorted(untouched - seen)}"


async def test_a_zip_range_with_a_city_it_holds_few_of_pages_short_but_misses_none(
    env: Env,
) -> None:
    # Two targets among 60 fillers of the zip window, and among 60 namesakes outside it:
    # both indexes hold more entries in range than a page may test, so either walk has pages
    # that find nothing.
    tag = uuid.uuid4().hex[:8]
    window = 55500
    fillers = [
        customer(zip_prefix=window + n, state="PE", city=f"Filler {tag}") for n in range(60)
    ] + [customer(zip_prefix=56000 + n, state="PE", city=f"Alvo {tag}") for n in range(60)]
    targets = [customer(zip_prefix=window + n, state="PE", city=f"Alvo {tag}") for n in (2, 58)]
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in fillers + targets]}
    )
    assert response.json()["accepted"] == len(fillers) + len(targets)
    for result in response.json()["results"]:
        env.remember(result)
    assert (await env.settle()).clean
    params: dict[str, Any] = {
        "zip_min": window,
        "zip_max": window + 60,
        "city": f"alvo {tag}",
        "limit": 1,
    }
    rows: list[dict[str, Any]] = []
    short = 0
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await env.http.get("/v1/customers", params=query)).json()
        rows += page["items"]
        cursor = page["next_cursor"]
        short += cursor is not None and not page["items"]
        if cursor is None:
            break
    assert sorted(row["customer_id"] for row in rows) == sorted(b["customer_id"] for b in targets)
    # With limit 1 a walk tests at most 20 zip entries: the fillers between the two make
    # some pages empty, with a cursor that goes on.
    assert short > 0
