"""Seeding and importing through the real gateway, then reading the customers back.

Writes are asynchronous (gateway -> Kafka -> writer -> store), so reads poll until a deadline.
Each test uses fresh ids (a random seed, uuid4 ids) and deletes what it wrote.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_testing.ports import free_port
from regionstore_tools.dataset.loader import BATCH_PATH, LoadOptions, load, open_client
from regionstore_tools.dataset.olist import generate
from regionstore_tools.dataset.olist_csv import COLUMNS, read_customers
from regionstore_tools.settings import ToolSettings

pytestmark = pytest.mark.integration

READ_WITHIN_S = 60.0
POLL_S = 0.2
CLI_WITHIN_S = 120.0
SETTINGS = ToolSettings()  # REGIONSTORE_GATEWAY_URL and the API key, as the CLI reads them
GATEWAY_URL = SETTINGS.gateway_url


@pytest.fixture
async def gateway(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(GATEWAY_URL, LoadOptions(), SETTINGS.key()) as client:
        yield client


@pytest.fixture
async def written(gateway: httpx.AsyncClient) -> AsyncIterator[list[str]]:
    """Ids a test wrote; deleted afterwards."""
    ids: list[str] = []
    yield ids
    for start in range(0, len(ids), 1000):
        items = [{"op": "delete", "customer_id": i} for i in ids[start : start + 1000]]
        response = await gateway.post(BATCH_PATH, json={"items": items})
        assert response.status_code == 202, response.text


async def read_back(client: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    """The customer once the write has been applied; fails after READ_WITHIN_S."""
    deadline = time.monotonic() + READ_WITHIN_S
    while True:
        response = await client.get(f"/v1/customers/{customer_id}")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert response.status_code in (404, 503), response.text
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{customer_id} unreadable {READ_WITHIN_S}s after it was accepted: "
                f"{response.status_code} {response.text}"
            )
        await asyncio.sleep(POLL_S)


async def search(client: httpx.AsyncClient, query: dict[str, Any], expect: str) -> set[str]:
    """Ids a complete answer to a list query holds once ``expect`` is among them.

    A point read may already be served by the replica while the home region, the one a list
    query reads, has yet to apply the write. Fails after READ_WITHIN_S.
    """
    deadline = time.monotonic() + READ_WITHIN_S
    while True:
        response = await client.get("/v1/customers", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        found = {item["customer_id"] for item in page["items"]}
        if not page["incomplete"] and expect in found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{expect} not in {query} after {READ_WITHIN_S}s: {page}")
        await asyncio.sleep(POLL_S)


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "regionstore_tools",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_WITHIN_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def fields(customer: dict[str, Any]) -> dict[str, Any]:
    return {name: customer[name] for name in COLUMNS}


async def test_seed_300_through_the_cli(gateway: httpx.AsyncClient, written: list[str]) -> None:
    seed = random.randrange(2**32)
    customers = list(generate(300, seed=seed))
    written.extend(c.customer_id for c in customers)

    code, out, err = await run_cli(
        "seed", "300", "--seed", str(seed), "--url", GATEWAY_URL,
        "--batch-size", "100", "--no-progress",
    )  # fmt: skip

    assert code == 0, err
    assert "accepted         300" in out
    assert "rejected           0" in out
    assert "failed             0" in out
    assert "records/s" in out
    # The same seed gave the CLI the same customers: a few from every region read back equal.
    regions = RegionMap(DEFAULT_REGIONS)
    by_region: dict[str, list[dict[str, Any]]] = {}
    for customer in customers:
        home = regions.home_of(customer.customer_zip_code_prefix)
        by_region.setdefault(home, []).append(customer.model_dump())
    assert set(by_region) == set(regions.names)
    for home, sample in by_region.items():
        for expected in sample[:3]:
            got = await read_back(gateway, expected["customer_id"])
            assert fields(got) == expected
            assert got["region"] == home


async def test_import_reports_good_and_bad_rows(
    gateway: httpx.AsyncClient, written: list[str], tmp_path: Path
) -> None:
    def new_id() -> str:
        return uuid.uuid4().hex

    good = [
        (new_id(), new_id(), 1310, "sao paulo", "SP"),
        (new_id(), new_id(), 1311, "São Paulo", "SP"),
        (new_id(), new_id(), 40015, "salvador", "BA"),
        (new_id(), new_id(), 30130, "belo horizonte", "MG"),
        (new_id(), new_id(), 80010, "curitiba", "PR"),
    ]
    bad_zip, outside = (new_id(), new_id(), "abc", "x", "SP"), (new_id(), new_id(), 500, "x", "SP")
    rows = [good[0], good[1], bad_zip, good[2], good[3], outside, good[4]]
    path = tmp_path / "olist_customers_dataset.csv"
    lines = [",".join(f'"{c}"' for c in COLUMNS)] + [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.extend(str(row[0]) for row in rows)

    with path.open(encoding="utf-8", newline="") as stream:
        summary = await load(read_customers(stream), gateway, options=LoadOptions(batch_size=3))

    assert (summary.accepted, summary.rejected, summary.failed) == (5, 2, 0)
    assert {(e.number, e.customer_id) for e in summary.examples} == {
        (4, bad_zip[0]),
        (7, outside[0]),
    }
    reasons = {e.number: e.reason for e in summary.examples}
    assert reasons[4] == "customer_zip_code_prefix: 'abc' is not a number"
    assert reasons[7].startswith("customer_zip_code_prefix: zip prefix 500 is outside every region")
    for customer_id, unique_id, zip_prefix, city, state in good:
        got = await read_back(gateway, customer_id)
        assert fields(got) == {
            "customer_id": customer_id,
            "customer_unique_id": unique_id,
            "customer_zip_code_prefix": zip_prefix,
            "customer_city": city,
            "customer_state": state,
        }
    for rejected_id in (bad_zip[0], outside[0]):
        assert (await gateway.get(f"/v1/customers/{rejected_id}")).status_code == 404
    # The accented spelling is found by the plain one, as Olist's users would type it.
    query = {"city": "sao paulo", "state": "sp", "zip_min": 1311, "zip_max": 1311, "limit": 500}
    found = await search(gateway, query, expect=good[1][0])
    assert good[0][0] not in found  # zip 1310 is outside the range


async def test_import_through_the_cli_prints_grouped_reasons(
    gateway: httpx.AsyncClient, written: list[str], tmp_path: Path
) -> None:
    ids = [uuid.uuid4().hex for _ in range(4)]
    written.extend(ids)
    path = tmp_path / "customers.csv"
    path.write_text(
        ",".join(f'"{c}"' for c in COLUMNS)
        + "\n"
        + f"{ids[0]},{uuid.uuid4().hex},500,x,SP\n"
        + f"{ids[1]},{uuid.uuid4().hex},500,x,SP\n"
        + f"{ids[2]},{uuid.uuid4().hex},20040,rio de janeiro,RJ\n"
        + f"{ids[3]},{uuid.uuid4().hex},20040,rio de janeiro,XX\n",
        encoding="utf-8",
    )

    code, out, err = await run_cli("import", str(path), "--url", GATEWAY_URL, "--no-progress")

    assert code == 0, err
    assert "accepted           1" in out
    assert "rejected           3" in out
    assert "       2 x customer_zip_code_prefix: zip prefix 500 is outside every region" in out
    assert "       1 x customer_state: must be one of the 27 Brazilian UF codes" in out
    assert f"e.g. line 2 ({ids[0]})" in out


async def test_unreachable_gateway_is_one_line_and_nonzero() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run_cli("seed", "10", "--url", url, "--no-progress")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: cannot reach the gateway at {url}: ConnectError")


async def test_not_an_olist_csv_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text('"order_id","customer_id"\n1,2\n', encoding="utf-8")
    code, out, err = await run_cli("import", str(path), "--url", "http://127.0.0.1:1")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "missing column(s) customer_unique_id, customer_zip_code_prefix" in err
