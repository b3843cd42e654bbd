"""The original routes' answers, through the app: here, a filter matching too many records."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from app_fakes import Gateway

from regionstore_gateway.adapters.repository import CustomerFilter
from regionstore_gateway.deps import _customers
from regionstore_gateway.services.errors import TooManyMatches
from regionstore_gateway.settings import GatewaySettings


class Broad:
    """A customer service whose every() finds more than 3 matches, as the real one says."""

    def __init__(self) -> None:
        self.asked: list[CustomerFilter] = []

    async def every(self, query: CustomerFilter) -> Any:
        self.asked.append(query)
        raise TooManyMatches(3)


@pytest.fixture
def broad() -> Broad:
    return Broad()


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch, broad: Broad) -> AsyncIterator[httpx.AsyncClient]:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    gateway = Gateway(GatewaySettings())

    async def customers() -> Broad:
        return broad

    gateway.app.dependency_overrides[_customers] = customers
    async with gateway.client() as client:
        yield client


@pytest.mark.parametrize(
    ("method", "options", "given_in"),
    [
        ("GET", {"params": {"zipRangeMin": 0, "state": "sp"}}, "query"),
        ("POST", {"json": {"zipRangeMin": 0, "state": "sp"}}, "body"),
    ],
)
async def test_a_filter_matching_too_many_records_is_a_422_saying_what_to_do(
    client: httpx.AsyncClient,
    broad: Broad,
    method: str,
    options: dict[str, Any],
    given_in: str,
) -> None:
    response = await client.request(method, "/filter-records", **options)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == [given_in]
    assert error["type"] == "too_many_records"
    assert error["msg"].startswith("matches more than 3 records: narrow zipRangeMin")
    assert "GET /v1/customers" in error["msg"]
    assert [(q.zip_min, q.state) for q in broad.asked] == [(0, "SP")]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/filter-records", "state=XX&state="),
        ("/filter-records", "city=sao&zipRangeMin=1&city=rio"),
        ("/v1/customers", "limit=5&limit=6"),
    ],
)
async def test_a_query_parameter_given_twice_is_a_422_naming_it(
    client: httpx.AsyncClient, broad: Broad, path: str, query: str
) -> None:
    response = await client.get(f"{path}?{query}")
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    repeated = "limit" if "limit" in query else query.split("=")[0]
    assert error["loc"] == ["query", repeated]
    assert error["type"] == "repeated_parameter"
    assert broad.asked == []
