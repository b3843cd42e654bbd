"""The on-call commands against the real stack: ``pending`` reads a region's parked commands
from Kafka, ``audit-log`` the audit trail, ``keys`` the gateway's Redis.

Commands run in-process through Typer's runner, except ``audit-log --follow``, which runs as the
installed program so the test can change a status while it follows and stop it with Ctrl-C.
They find Kafka, Redis and the server secret as the services do (``make test`` exports the
stack's ``REGIONSTORE_*`` and ``RUN_DIR``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from regionstore_testing.ports import free_port
from regionstore_tools.cli import app
from regionstore_tools.dataset.loader import BATCH_PATH
from regionstore_tools.settings import ToolSettings
from tests.gateways import extra_gateway, skew
from tests.keys import headers, new_key
from tests.stack import Stack

pytestmark = pytest.mark.integration

WITHIN_S = 60.0
POLL_S = 0.25
HOME = "region_2"  # zip 40015
KEY_CACHE_S = 2.0
# Clock ids 0 and 1 are the stack's gateways', 62 and 63 other tests' (at most 63).
KEYS_NODE_ID = 61
runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def json_of(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def http(stack: Any) -> Iterator[httpx.Client]:
    """The gateway, with the stack's operator key."""
    with httpx.Client(base_url=ToolSettings().gateway_url, headers=headers(), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def prompt_gateway(stack: Stack) -> AsyncIterator[str]:
    """A second gateway of the stack's program that reads a verified key again after
    KEY_CACHE_S (the stack's keeps one 30 s, which the revocation test would wait out)."""
    async with extra_gateway(
        stack,
        port=free_port(),
        node_id=KEYS_NODE_ID,
        offset=skew("0"),
        log=Path(".run/logs/gateway-oncall-keys.log"),
        settings={"REGIONSTORE_AUTH__CACHE_REFRESH_S": str(KEY_CACHE_S)},
    ) as url:
        yield url


def customers(count: int) -> list[dict[str, Any]]:
    return [
        {
            "customer": {
                "customer_id": uuid.uuid4().hex,
                "customer_unique_id": uuid.uuid4().hex,
                "customer_zip_code_prefix": 40015,
                "customer_city": "salvador",
                "customer_state": "BA",
            }
        }
        for _ in range(count)
    ]


def set_status(http: httpx.Client, region: str, status: str, key: str | None = None) -> None:
    response = http.put(
        f"/v1/regions/{region}/status", json={"status": status}, headers=headers(key)
    )
    assert response.status_code == 200, response.text


def eventually(read: Any, done: Any) -> Any:
    """``read()`` once ``done`` holds of it; fails after WITHIN_S."""
    deadline = time.monotonic() + WITHIN_S
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {WITHIN_S} s")
        time.sleep(POLL_S)


def oldest_age(stack: Stack, region: str) -> float:
    """Recovery's gauge of how long the region's oldest parked command has waited."""
    exposition = httpx.get(f"{stack.endpoints.services['recovery']}/metrics", timeout=10).text
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "regionstore_pending_oldest_age_seconds":
                if sample.labels == {"region": region}:
                    return float(sample.value)
    raise AssertionError(f"recovery exports no oldest age for {region}")


def test_pending_shows_what_waits_for_a_region_then_nothing(
    stack: Stack, http: httpx.Client
) -> None:
    items = customers(12)
    ids = {item["customer"]["customer_id"] for item in items}
    set_status(http, HOME, "unavailable")
    try:
        response = http.post(BATCH_PATH, json={"items": items})
        assert response.status_code == 202, response.text
        parked = eventually(
            lambda: json_of(cli("pending", HOME, "--sample", "1000", "--json")),
            lambda body: ids <= {c["customer_id"] for c in body["sample"]},
        )
        assert parked["pending"] >= len(ids)
        assert parked["topic"] == f"pending.{HOME}"
        assert parked["oldest_age_s"] >= 0
        ours = [c for c in parked["sample"] if c["customer_id"] in ids]
        assert {c["kind"] for c in ours} == {"upsert"}
        ages = [c["age_s"] for c in parked["sample"]]
        assert ages == sorted(ages, reverse=True), "the oldest first"
        text = cli("pending", HOME, "--sample", "3")
        assert text.exit_code == 0, text.output
        assert text.stdout.startswith(f"{HOME}: ")
        assert "parked command" in text.stdout.splitlines()[0]
        # Recovery samples the same age at its next resync, for the backlog alerts.
        assert eventually(lambda: oldest_age(stack, HOME), lambda age: age > 0) > 0
    finally:
        set_status(http, HOME, "available")
    drained = eventually(
        lambda: json_of(cli("pending", HOME, "--json")), lambda body: body["pending"] == 0
    )
    assert (drained["sample"], drained["oldest_age_s"]) == ([], None)
    assert eventually(lambda: oldest_age(stack, HOME), lambda age: age == 0) == 0
    assert cli("pending", HOME).stdout.strip() == f"{HOME}: nothing parked in pending.{HOME}"
    deletes = [{"op": "delete", "customer_id": customer_id} for customer_id in ids]
    assert http.post(BATCH_PATH, json={"items": deletes}).status_code == 202


def test_pending_of_an_unknown_region_is_one_line() -> None:
    result = cli("pending", "region_9")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no region 'region_9'")
    assert result.stderr.count("\n") == 1


def test_the_audit_log_names_the_key_and_says_each_change_was_done(http: httpx.Client) -> None:
    name = f"on-call {uuid.uuid4().hex[:8]}"
    key = asyncio.run(new_key("operator", name=name))
    key_id = key.split("_")[1]
    set_status(http, "region_3", "unavailable", key)
    set_status(http, "region_3", "available", key)

    def ours() -> list[dict[str, Any]]:
        result = cli("audit-log", "--region", "region_3", "--since", "10m", "--json")
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        return [e for e in lines if e["key_id"] == key_id]

    changes = eventually(ours, lambda found: len(found) == 2)
    assert [(e["detail"]["status"], e["outcome"]) for e in changes] == [
        ("unavailable", "done"),
        ("available", "done"),
    ]
    assert {e["key_name"] for e in changes} == {name}
    text = cli("audit-log", "--region", "region_3", "--since", "10m")
    line = next(line for line in text.stdout.splitlines() if key_id in line)
    assert f"region_3 set unavailable  by {name} ({key_id}, operator)  done" in line


def test_the_audit_log_follows_until_ctrl_c(http: httpx.Client) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    follow = [
        sys.executable, "-m", "regionstore_tools", "audit-log", "--follow", "--json",
        "--region", "region_1", "--since", since,
    ]  # fmt: skip
    with subprocess.Popen(
        follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        try:
            set_status(http, "region_1", "available")
            # Read before the follow began, the change is history (with its outcome); after,
            # a live line: one line either way.
            line = process.stdout.readline()
        finally:
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise AssertionError("audit-log --follow still ran 30 s after Ctrl-C") from None
    assert line, err
    event = json.loads(line)
    assert (event["action"], event["target"]) == ("region.status", "region_1")
    assert event["detail"]["status"] == "available"
    assert process.returncode == 0, err
    assert err == ""


def test_keys_create_list_and_revoke_as_the_gateway_sees_them(prompt_gateway: str) -> None:
    with httpx.Client(base_url=prompt_gateway, timeout=30) as http:
        name = f"cli test {uuid.uuid4().hex[:8]}"
        created = json_of(cli("keys", "create", "--role", "reader", "--name", name, "--json"))
        key, key_id = created["key"], created["key_id"]
        assert (created["role"], created["name"]) == ("reader", name)
        answer = http.get("/v1/session", headers=headers(key))
        assert (answer.status_code, answer.json()["role"]) == (200, "reader")

        listed = {k["key_id"]: k for k in json_of(cli("keys", "list", "--json"))}
        assert listed[key_id]["name"] == name
        assert listed[key_id]["revoked_at"] is None
        assert key.split("_", 2)[2] not in cli("keys", "list").stdout
        # The gateway's own key command sees the same record.
        gateway_list = subprocess.run(
            [sys.executable, "-m", "regionstore_gateway.keys", "list"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert key_id in gateway_list.stdout

        revoked = json_of(cli("keys", "revoke", key_id, "--json"))
        assert revoked["revoked_at"] is not None
        # A verified key is trusted for the gateway's cache refresh time (KEY_CACHE_S here).
        refused = eventually(
            lambda: http.get("/v1/session", headers=headers(key)).status_code,
            lambda code: code == 401,
        )
        assert refused == 401
        unknown = cli("keys", "revoke", "ffffffffffff")
        assert (unknown.exit_code, unknown.stderr) == (1, "error: no key ffffffffffff\n")


def test_kafka_out_of_reach_is_one_line() -> None:
    result = runner.invoke(
        app,
        ["pending", HOME],
        env={
            "REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "REGIONSTORE_KAFKA__REQUEST_TIMEOUT_MS": "3000",
        },
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Kafka did not answer: ")
    assert result.stderr.count("\n") == 1
