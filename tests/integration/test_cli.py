"""The ``regionstore`` command line against the real stack.

Commands run in-process through Typer's runner, except ``drain --watch``, which runs as the
installed program so the test can bring the region back while it watches. They find the gateway
and the API key as a user's shell would: REGIONSTORE_GATEWAY_URL, then the key lookup order
(``make test`` exports RUN_DIR, where ``make up`` leaves the operator key).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_tools.cli import app
from regionstore_tools.dataset.loader import BATCH_PATH
from regionstore_tools.dataset.olist import generate
from regionstore_tools.dataset.olist_csv import COLUMNS
from regionstore_tools.settings import ToolSettings
from tests.keys import new_key

pytestmark = pytest.mark.integration

READ_WITHIN_S = 60.0
DRAIN_WITHIN_S = 180.0
POLL_S = 0.25
REGIONS = RegionMap(DEFAULT_REGIONS)
runner = CliRunner()


def cli(*args: str) -> Result:
    """Run a command as a user would, wide enough that table rows stay on one line."""
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    return result.stderr.removeprefix("error: ").strip()


@pytest.fixture(scope="module")
def http(stack: Any) -> Iterator[httpx.Client]:
    """The gateway, with the key the command line would send."""
    settings = ToolSettings()
    key = settings.key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=settings.gateway_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def written(http: httpx.Client) -> Iterator[list[str]]:
    """Ids a test wrote; deleted afterwards."""
    ids: list[str] = []
    yield ids
    for start in range(0, len(ids), 1000):
        items = [{"op": "delete", "customer_id": i} for i in ids[start : start + 1000]]
        response = http.post(BATCH_PATH, json={"items": items})
        assert response.status_code == 202, response.text


def read_back(customer_id: str) -> dict[str, Any]:
    """``regionstore get --json`` once the write is applied; fails after READ_WITHIN_S."""
    deadline = time.monotonic() + READ_WITHIN_S
    while True:
        result = cli("get", customer_id, "--json")
        if result.exit_code == 0:
            body: dict[str, Any] = json.loads(result.stdout)
            return body
        assert "(HTTP 404)" in result.stderr or "(HTTP 503)" in result.stderr, result.stderr
        if time.monotonic() > deadline:
            raise AssertionError(f"{customer_id} unreadable after {READ_WITHIN_S}s: {result}")
        time.sleep(POLL_S)


def pending(http: httpx.Client) -> dict[str, int | None]:
    response = http.get("/v1/regions")
    assert response.status_code == 200, response.text
    return {region["name"]: region["pending"] for region in response.json()["regions"]}


def test_status_shows_every_region_and_the_lag() -> None:
    result = cli("status")
    assert result.exit_code == 0, result.output
    rows = {cells[1].strip(): cells for line in result.stdout.splitlines()
            if len(cells := line.split("│")) > 2}  # fmt: skip
    for spec in DEFAULT_REGIONS:
        assert rows[spec.name][2].strip() == "available"
        assert rows[spec.name][3].strip() == f"{spec.zip_min:05d}-{spec.zip_max:05d}"
    assert re.search(r"Consumer lag: writer \d+, replicator \d+", result.stdout), result.stdout

    as_json = cli("status", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert [r["name"] for r in json.loads(as_json.stdout)["regions"]] == list(REGIONS.names)


def test_region_down_then_up() -> None:
    try:
        down = cli("region", "down", "region_3")
        assert down.exit_code == 0, down.output
        assert down.stdout.startswith("region_3 is now unavailable")
        regions = json.loads(cli("status", "--json").stdout)["regions"]
        assert {r["name"]: r["status"] for r in regions}["region_3"] == "unavailable"
    finally:
        up = cli("region", "up", "region_3")
    assert up.exit_code == 0, up.output
    assert up.stdout.startswith("region_3 is now available")
    regions = json.loads(cli("status", "--json").stdout)["regions"]
    assert {r["name"]: r["status"] for r in regions}["region_3"] == "available"


def test_seed_then_get_and_list_with_a_filter(written: list[str]) -> None:
    seed = random.randrange(2**32)
    customers = list(generate(300, seed=seed))
    written.extend(c.customer_id for c in customers)

    result = cli("seed", "300", "--seed", str(seed), "--batch-size", "100", "--no-progress")

    assert result.exit_code == 0, result.output
    assert "accepted         300" in result.stdout
    assert "unknown" not in result.stdout
    assert "failed             0" in result.stdout
    chosen = customers[0].model_dump()
    got = read_back(chosen["customer_id"])
    assert {name: got[name] for name in COLUMNS} == chosen
    assert got["region"] == REGIONS.home_of(chosen["customer_zip_code_prefix"])

    shown = cli("get", chosen["customer_id"])
    assert shown.exit_code == 0, shown.output
    assert f"{chosen['customer_zip_code_prefix']:05d}" in shown.stdout

    zip_prefix, state = chosen["customer_zip_code_prefix"], chosen["customer_state"]
    expected = {
        c.customer_id
        for c in customers
        if c.customer_zip_code_prefix == zip_prefix and c.customer_state == state
    }
    deadline = time.monotonic() + READ_WITHIN_S
    while True:
        listed = cli("list", "--zip", str(zip_prefix), "--state", state, "--limit", "500", "--json")
        assert listed.exit_code == 0, listed.output
        page = json.loads(listed.stdout)
        found = {item["customer_id"] for item in page["items"]}
        if expected <= found or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert expected <= found, f"{expected - found} not listed"
    assert all(item["customer_zip_code_prefix"] == zip_prefix for item in page["items"])
    assert all(item["customer_state"] == state for item in page["items"])

    table = cli("list", "--zip", str(zip_prefix), "--state", state, "--limit", "500")
    assert table.exit_code == 0, table.output
    assert chosen["customer_id"] in table.stdout


def test_import_a_small_csv(written: list[str], tmp_path: Path) -> None:
    ids = [uuid.uuid4().hex for _ in range(4)]
    written.extend(ids)
    path = tmp_path / "olist_customers_dataset.csv"
    path.write_text(
        ",".join(f'"{column}"' for column in COLUMNS)
        + "\n"
        + f"{ids[0]},{uuid.uuid4().hex},1310,sao paulo,SP\n"
        + f"{ids[1]},{uuid.uuid4().hex},40015,salvador,BA\n"
        + f"{ids[2]},{uuid.uuid4().hex},80010,curitiba,PR\n"
        + f"{ids[3]},{uuid.uuid4().hex},500,nowhere,SP\n",
        encoding="utf-8",
    )

    result = cli("import", str(path), "--no-progress")

    assert result.exit_code == 0, result.output
    assert "accepted           3" in result.stdout
    assert "rejected           1" in result.stdout
    assert f"e.g. line 5 ({ids[3]}): customer_zip_code_prefix: zip prefix 500" in result.stdout
    assert read_back(ids[1])["customer_city"] == "salvador"
    assert read_back(ids[2])["region"] == "region_3"


def test_drain_watch_ends_when_parked_writes_are_replayed(
    http: httpx.Client, written: list[str]
) -> None:
    home = "region_2"
    ids = [uuid.uuid4().hex for _ in range(30)]
    written.extend(ids)
    items = [
        {
            "customer": {
                "customer_id": customer_id,
                "customer_unique_id": uuid.uuid4().hex,
                "customer_zip_code_prefix": 40015,
                "customer_city": "salvador",
                "customer_state": "BA",
            },
            "idempotency_key": customer_id,
        }
        for customer_id in ids
    ]
    watch_drain = [
        sys.executable, "-m", "regionstore_tools", "drain", "--watch", "--every", "0.2",
        "--timeout", str(DRAIN_WITHIN_S),
    ]  # fmt: skip
    assert cli("region", "down", home).exit_code == 0
    try:
        response = http.post(BATCH_PATH, json={"items": items})
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(ids)
        deadline = time.monotonic() + READ_WITHIN_S
        while (pending(http)[home] or 0) < len(ids) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert (pending(http)[home] or 0) >= len(ids)
        # Watching from before the region is back: the watch sees the backlog, then its end.
        with subprocess.Popen(
            watch_drain, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as watch:
            assert watch.stdout is not None
            # Piped, it prints a line per region whenever that region's backlog changes.
            seen = watch.stdout.readline()
            while seen and not seen.startswith(f"{home} "):
                seen = watch.stdout.readline()
            assert re.match(rf"{home}\s+unavailable\s+pending [\d,]+$", seen.strip()), seen
            up = cli("region", "up", home)
            assert up.exit_code == 0, up.output
            out, err = watch.communicate(timeout=DRAIN_WITHIN_S + 30)
    finally:
        cli("region", "up", home)

    assert watch.returncode == 0, err
    assert err == ""
    replayed = re.search(rf"replayed: .*{home} ([\d,]+)", out)
    assert replayed, out
    assert int(replayed.group(1).replace(",", "")) >= len(ids)
    assert set(pending(http).values()) == {0}
    for customer_id in ids[:3]:
        assert read_back(customer_id)["region"] == home


def test_audit_of_the_stores_is_clean() -> None:
    # Other tests' writes and deletes may still be on their way to a replica: wait for them.
    result = cli("audit", "--within", "120")
    assert result.exit_code == 0, result.output
    assert "clean" in result.stdout
    as_json = cli("audit", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["clean"] is True
    assert report["checked"] > 0
    assert report["lost"] == report["duplicated"] == report["resurrected"] == 0


def test_unknown_id_is_one_line_and_nonzero() -> None:
    missing = uuid.uuid4().hex
    result = cli("get", missing)
    assert one_line_error(result) == f"customer {missing} not found (HTTP 404)"
    assert result.stdout == ""


def test_a_bad_filter_names_the_parameter() -> None:
    result = cli("list", "--state", "XX")
    assert one_line_error(result).startswith("state: must be one of")


def test_a_reader_key_is_told_which_role_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_API_KEY", asyncio.run(new_key("reader")))

    down = cli("region", "down", "region_1")
    assert one_line_error(down) == (
        "the API key's role may not do this (403): it needs the operator role"
    )
    seeded = cli("seed", "5", "--no-progress")
    assert one_line_error(seeded).startswith("stopped: the API key's role may not write (HTTP 403")
    assert one_line_error(seeded).endswith("it needs the writer role")
    assert "accepted           0" in seeded.stdout

    monkeypatch.setenv("REGIONSTORE_API_KEY", "rsk_000000000000_not-a-key")
    assert one_line_error(cli("status")) == (
        "the gateway refused the API key (401): this needs a valid reader key"
    )
