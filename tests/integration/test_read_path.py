"""The read path on the real stack: filters, paging, replica fallback, incompleteness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.regionstore_env import Env, customer, env

pytestmark = pytest.mark.integration
__all__ = ["env"]

ZIPS = [(1310, "SP"), (22000, "RJ"), (30100, "MG"), (40100, "BA"), (60100, "CE"), (70100, "DF"),
        (80100, "PR"), (90100, "RS")]  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def town(env: Env) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """32 customers in a city name no other test uses, spread over every region."""
    tag = uuid.uuid4().hex[:10]
    city = f"São Tomé {tag}"
    bodies = [
        customer(zip_prefix=zip_prefix + i, state=state, city=city)
        for i in range(4)
        for zip_prefix, state in ZIPS
    ]
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.json()["accepted"] == len(bodies)
    for result in response.json()["results"]:
        env.remember(result)
    assert (await env.settle()).clean
    yield f"sao tome {tag}", bodies


async def _all_pages(env: Env, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await env.http.get("/v1/customers", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("paging did not end")


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["customer_id"] for row in rows]


async def test_city_matches_without_case_or_accents(env: Env, town: Any) -> None:
    city, bodies = town
    rows = await _all_pages(env, {"city": city.upper(), "limit": 500})
    assert sorted(_ids(rows)) == sorted(b["customer_id"] for b in bodies)
    assert all(row["customer_city"].startswith("São Tomé") for row in rows)


@pytest.mark.parametrize(
    "params",
    [
        {"zip_min": 30000, "zip_max": 70000},
        {"zip_min": 80101},
        {"zip_max": 22001},
        {"state": "ba"},
        {"state": "SP", "zip_max": 1311},
        {"region": "region_2"},
        {"region": "region_3", "zip_min": 85000},
    ],
)
async def test_every_filter_selects_exactly_the_matching_customers(
    env: Env, town: Any, params: dict[str, Any]
) -> None:
    city, bodies = town
    regions = env.regions

    def matches(body: dict[str, Any]) -> bool:
        zip_prefix = body["customer_zip_code_prefix"]
        return (
            zip_prefix >= params.get("zip_min", 0)
            and zip_prefix <= params.get("zip_max", 99999)
            and body["customer_state"] == params.get("state", body["customer_state"]).upper()
            and regions.home_of(zip_prefix) == params.get("region", regions.home_of(zip_prefix))
        )

    rows = await _all_pages(env, {"city": city, **params})
    assert sorted(_ids(rows)) == sorted(b["customer_id"] for b in bodies if matches(b))
    assert all(not row["fallback"] for row in rows)


async def test_paging_visits_every_customer_once_in_the_order_it_states(
    env: Env, town: Any
) -> None:
    city, bodies = town
    first = (await env.http.get("/v1/customers", params={"city": city, "limit": 7})).json()
    assert first["order"] == ["customer_city", "customer_id"]
    rows = await _all_pages(env, {"city": city, "limit": 7})
    ids = _ids(rows)
    assert ids == sorted(ids)  # one city: by id within it
    assert len(ids) == len(set(ids)) == len(bodies)


async def test_a_region_marked_down_is_read_from_its_replica(env: Env, town: Any) -> None:
    city, bodies = town
    await env.set_status("region_2", "unavailable")
    response = await env.http.get("/v1/customers", params={"city": city, "limit": 500})
    page = response.json()
    assert page["degraded_regions"] == ["region_2"]
    assert page["incomplete"] is False
    assert len(page["items"]) == len(bodies)
    region_2_rows = [row for row in page["items"] if row["region"] == "region_2"]
    assert region_2_rows
    assert all(row["served_by"] == "region_1" and row["fallback"] for row in region_2_rows)
    one = await env.http.get(f"/v1/customers/{region_2_rows[0]['customer_id']}")
    assert one.json()["served_by"] == "region_1"
    assert one.json()["fallback"] is True


async def test_a_region_and_its_replica_down_is_marked_incomplete(env: Env, town: Any) -> None:
    city, bodies = town
    await env.set_status("region_2", "unavailable")
    await env.set_status("region_1", "unavailable")
    page = (await env.http.get("/v1/customers", params={"city": city, "limit": 500})).json()
    assert page["incomplete"] is True
    assert page["unreachable_regions"] == ["region_2"]
    assert page["degraded_regions"] == ["region_1"]
    expected = [
        b for b in bodies if env.regions.home_of(b["customer_zip_code_prefix"]) != "region_2"
    ]
    assert sorted(_ids(page["items"])) == sorted(b["customer_id"] for b in expected)
    unreachable = next(b for b in bodies if b["customer_zip_code_prefix"] == 40100)
    one = await env.http.get(f"/v1/customers/{unreachable['customer_id']}")
    assert one.status_code == 503


async def test_a_stopped_store_is_read_from_its_replica(env: Env, town: Any, stack: Any) -> None:
    city, bodies = town
    await stack.stop("region_3")
    try:
        page = (await env.http.get("/v1/customers", params={"city": city, "limit": 500})).json()
    finally:
        await stack.start("region_3")
    assert page["degraded_regions"] == ["region_3"]
    assert page["incomplete"] is False
    assert len(page["items"]) == len(bodies)
    assert all(
        row["served_by"] == "region_2" for row in page["items"] if row["region"] == "region_3"
    )


@pytest.mark.parametrize(
    "text", [".*", "(", "[a-z]+", "\\", "$where", "^São", "a|b", "%00", "' OR 1=1 --", "🙂", "{}"]
)
async def test_hostile_filter_text_is_only_text(env: Env, town: Any, text: str) -> None:
    response = await env.http.get("/v1/customers", params={"city": text})
    assert response.status_code == 200
    assert all(
        row["customer_city"].lower().startswith(text.lower()) for row in response.json()["items"]
    )


async def test_unknown_and_deleted_customers_are_404(env: Env, town: Any) -> None:
    _, bodies = town
    assert (await env.http.get(f"/v1/customers/{uuid.uuid4().hex}")).status_code == 404
    victim = bodies[0]["customer_id"]
    await env.write("DELETE", f"/v1/customers/{victim}?wait=applied")
    assert (await env.http.get(f"/v1/customers/{victim}")).status_code == 404


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"zip_min": 5000, "zip_max": 10}, "zip_max"),
        ({"state": "ZZ"}, "state"),
        ({"region": "region_9"}, "region"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"zip_min": "abc"}, "zip_min"),
    ],
)
async def test_bad_query_parameters_are_a_422_naming_them(
    env: Env, params: dict[str, Any], loc: str
) -> None:
    response = await env.http.get("/v1/customers", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", loc]


async def test_a_cursor_only_pages_its_own_query(env: Env, town: Any) -> None:
    city, _ = town
    first = (await env.http.get("/v1/customers", params={"city": city, "limit": 2})).json()
    other = await env.http.get(
        "/v1/customers", params={"city": city, "state": "SP", "cursor": first["next_cursor"]}
    )
    assert other.status_code == 422
    assert "different query" in other.json()["detail"][0]["msg"]


async def test_original_filter_routes_answer_the_same_records(env: Env, town: Any) -> None:
    city, bodies = town
    expected = sorted(
        b["customer_id"] for b in bodies if 20000 <= b["customer_zip_code_prefix"] <= 60000
    )
    via_get = await env.http.get(
        "/filter-records", params={"zipRangeMin": 20000, "zipRangeMax": 60000, "city": city}
    )
    via_post = await env.http.post(
        "/filter-records", json={"zipRangeMin": 20000, "zipRangeMax": 60000, "city": city}
    )
    for response in (via_get, via_post):
        assert response.status_code == 200
        body = response.json()
        assert sorted(r["customer_id"] for r in body["records"]) == expected
        assert body["count"] == len(expected)
        assert body["incomplete"] is False
