"""The key command line against the stack's Redis: create, list, revoke, and ``ensure``, which
``make up`` runs to keep the operator key file working (Redis wiped, key revoked)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clients import redis_client
from tests.keys import headers, server_secret
from tests.stack import Stack

pytestmark = pytest.mark.integration


async def keys_cli(*arguments: str) -> tuple[int, str, str]:
    """Run ``python -m regionstore_gateway.keys`` as ``make key`` does."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "regionstore_gateway.keys",
        *arguments,
        env={**os.environ, "REGIONSTORE_AUTH__SECRET": server_secret()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[Redis]:
    client = redis_client(GatewaySettings().redis, "tests")
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        yield client


async def _whoami(http: httpx.AsyncClient, key: str) -> tuple[int, str | None]:
    answer = await http.get("/v1/session", headers=headers(key))
    return answer.status_code, answer.json().get("role") if answer.status_code == 200 else None


async def test_ensure_keeps_the_key_file_working(
    http: httpx.AsyncClient, redis: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "operator.key"
    code, out, _ = await keys_cli("ensure", "--file", str(path), "--role", "operator")
    assert code == 0
    assert "created" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    key_id = key[4:16]
    assert await _whoami(http, key) == (200, "operator")

    record = f"{GatewaySettings().auth.key_prefix}{key_id}"
    stored = await redis.hgetall(record)
    assert key.split("_", 2)[2] not in str(stored), "Redis must hold a digest, not the secret"
    await redis.delete(record)  # as if Redis had been wiped
    code, out, _ = await keys_cli("ensure", "--file", str(path))
    assert (code, out.strip()) == (0, f"{path}: registered {key_id} again")
    registered = await redis.hgetall(record)
    # The same key again (its creation time is lost with Redis).
    assert {**registered, "created_at": ""} == {**stored, "created_at": ""}
    code, out, _ = await keys_cli("ensure", "--file", str(path))
    assert (code, out.strip()) == (0, f"{path}: kept {key_id}")
    assert path.read_text().strip() == key

    code, out, _ = await keys_cli("revoke", key_id)
    assert code == 0
    assert f"revoked {key_id}" in out
    code, out, _ = await keys_cli("ensure", "--file", str(path))
    assert code == 0
    assert f"replaced revoked {key_id}" in out
    replacement = path.read_text().strip()
    assert replacement != key
    assert await _whoami(http, replacement) == (200, "operator")


async def test_create_list_and_revoke(http: httpx.AsyncClient) -> None:
    code, out, err = await keys_cli(
        "create", "--role", "reader", "--name", "cli test", "--rate", "50", "--burst", "60"
    )
    assert code == 0, err
    key = out.strip()
    key_id = key[4:16]
    assert f"key id: {key_id}" in err
    assert await _whoami(http, key) == (200, "reader")
    refused = await http.post("/v1/customers", json={}, headers=headers(key))
    assert refused.status_code == 403

    code, listed, _ = await keys_cli("list")
    assert code == 0
    line = next(line for line in listed.splitlines() if line.startswith(key_id))
    assert "reader" in line
    assert "cli test" in line
    assert "50.0/s burst 60" in line
    assert key.split("_", 2)[2] not in listed

    assert (await keys_cli("revoke", key_id))[0] == 0
    code, listed, _ = await keys_cli("list")
    assert "revoked" in next(line for line in listed.splitlines() if line.startswith(key_id))
    assert (await keys_cli("revoke", "000000000000"))[0] == 1
