"""The bare comparison endpoint validates like the gateway; the ratio is gateway over bare."""

from __future__ import annotations

import httpx
import pytest

from regionstore_bench.bare import bare_command, create_app, ratio_to_bare
from regionstore_bench.ingest import CountedOnly
from regionstore_shared.schemas import Customer


def valid_body() -> dict[str, object]:
    return dict(Customer.model_config["json_schema_extra"]["examples"][0])  # type: ignore[index,arg-type]


async def post(body: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
        return await client.post("/v1/customers", json=body)


async def test_valid_body_is_accepted() -> None:
    answer = await post(valid_body())
    assert answer.status_code == 202
    assert answer.json()["customer_id"] == valid_body()["customer_id"]


async def test_invalid_body_is_refused() -> None:
    answer = await post({"customer_id": ""})
    assert answer.status_code == 422


def test_ratio_is_gateway_over_bare() -> None:
    assert ratio_to_bare(800.0, 1000.0) == pytest.approx(0.8)
    assert ratio_to_bare(5.0, 0.0) == 0.0


def test_bare_command_serves_the_module_on_the_port() -> None:
    command = bare_command(25123)
    assert command[1:] == ["-m", "regionstore_bench.bare", "25123"]


def test_counted_only_expects_nothing() -> None:
    counted = CountedOnly("")
    counted.accept({"customer_id": "c"}, 1.0)
    assert counted.expected == {}
