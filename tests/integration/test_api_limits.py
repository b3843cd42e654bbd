"""The API's limits over HTTP on the real gateway: body size on every route that takes a body,
batch size, and page size, each refused with the field and the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from regionstore_gateway.settings import GatewaySettings
from tests.keys import headers
from tests.regionstore_env import customer, new_id
from tests.stack import Stack

pytestmark = pytest.mark.integration

API = GatewaySettings().api
TOO_LARGE_MSG = f"request body over {API.max_body_bytes} bytes"
TOO_LARGE = {"detail": [{"loc": ["body"], "msg": TOO_LARGE_MSG, "type": "too_large"}]}
# Every route that takes a request body: each write, the batch, the original routes, the status
# changes (refused before anything changes) and the filter body.
BODY_ROUTES = [
    ("POST", "/v1/customers"),
    ("PUT", "/v1/customers/{id}"),
    ("PATCH", "/v1/customers/{id}"),
    ("DELETE", "/v1/customers/{id}"),
    ("POST", "/v1/customers:batch"),
    ("POST", "/create-customer"),
    ("PUT", "/v1/regions/region_1/status"),
    ("POST", "/node-status"),
    ("POST", "/filter-records"),
]


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway, authenticated as operator."""
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers=headers(), timeout=60
    ) as client:
        yield client


def _oversized() -> bytes:
    # Valid JSON up to the end, so only its size is wrong.
    padding = API.max_body_bytes
    return b'{"customer_city": "' + b"a" * padding + b'"}'


async def _chunks(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES)
async def test_a_declared_body_over_the_limit_is_413(
    http: httpx.AsyncClient, method: str, route: str
) -> None:
    response = await http.request(
        method,
        route.format(id=new_id()),
        content=_oversized(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json() == TOO_LARGE


# A DELETE reads no body: of a streamed one nothing is read, over the limit or not.
@pytest.mark.parametrize(("method", "route"), [(m, r) for m, r in BODY_ROUTES if m != "DELETE"])
async def test_a_streamed_body_over_the_limit_is_413(
    http: httpx.AsyncClient, method: str, route: str
) -> None:
    # Chunked, with no Content-Length: the limit counts what arrives.
    response = await http.request(
        method,
        route.format(id=new_id()),
        content=_chunks(_oversized()),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json() == TOO_LARGE


def _detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail: list[dict[str, Any]] = response.json()["detail"]
    return detail


async def test_a_batch_over_the_item_limit_is_422_on_items(http: httpx.AsyncClient) -> None:
    items = [{"op": "delete", "customer_id": new_id()} for _ in range(API.max_batch_items + 1)]
    (error,) = _detail(await http.post("/v1/customers:batch", json={"items": items}))
    assert error["loc"] == ["body", "items"]
    assert error["type"] == "too_long"
    assert f"at most {API.max_batch_items} items" in error["msg"]


async def test_a_batch_at_the_item_limit_is_taken(http: httpx.AsyncClient) -> None:
    # Items that are each invalid (an unknown zip), so the full batch is read and answered
    # item by item without writing anything.
    items = [
        {"op": "upsert", "customer": {**customer(), "customer_zip_code_prefix": 0}}
        for _ in range(API.max_batch_items)
    ]
    response = await http.post("/v1/customers:batch", json={"items": items})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["rejected"] == API.max_batch_items
    assert body["results"][0]["errors"][0]["loc"][-1] == "customer_zip_code_prefix"


@pytest.mark.parametrize(
    ("limit", "kind"),
    [
        (API.max_page_size + 1, "less_than_equal"),
        (0, "greater_than_equal"),
        (-1, "greater_than_equal"),
        ("ten", "int_parsing"),
    ],
)
@pytest.mark.parametrize(
    "filters",
    [{}, {"state": "SP"}, {"zip_min": 1000, "zip_max": 2000}, {"region": "region_2"}],
    ids=["all", "state", "zip", "region"],
)
async def test_a_page_size_out_of_bounds_is_422_on_limit(
    http: httpx.AsyncClient, limit: object, kind: str, filters: dict[str, object]
) -> None:
    (error,) = _detail(await http.get("/v1/customers", params={**filters, "limit": limit}))
    assert error["loc"] == ["query", "limit"]
    assert error["type"] == kind


async def test_the_largest_page_size_is_taken(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/customers", params={"limit": API.max_page_size})
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) <= API.max_page_size


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "customer_id",
    ["a b", "a.b", "caf%C3%A9", "x" * 65, "a%00b", "%20"],
    ids=["space", "dot", "accent", "too-long", "nul", "blank"],
)
async def test_a_malformed_customer_id_is_422_on_the_path(
    http: httpx.AsyncClient, method: str, customer_id: str
) -> None:
    # Refused while the path is validated, before any route code (and so any store) runs.
    body = customer() if method == "PUT" else {} if method == "PATCH" else None
    response = await http.request(method, f"/v1/customers/{customer_id}", json=body)
    (error,) = _detail(response)
    assert error["loc"] == ["path", "customer_id"]
