"""Slow clients on the real gateway: a stalled request head is closed, a stalled body is a 408.

The gateway is the stack's program with the stack's settings but shorter deadlines (a second
gateway beside the stack's): the tests wait for the deadlines to pass, and the defaults' 10 and
30 seconds would be waited for, not tested.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from regionstore_testing.ports import free_port
from tests.gateways import extra_gateway, skew
from tests.keys import headers
from tests.stack import Stack

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
# Clock ids 0 and 1 are the stack's gateways', 62 the backpressure test's.
NODE_ID = 63
LOGS = Path(".run/logs")
# How long past its deadline the gateway may take to act: a readiness bound on a busy machine,
# not a speed claim.
GRACE_S = 30.0


@pytest.fixture(scope="module")
async def gateway_url(stack: Stack) -> AsyncIterator[str]:
    settings = {
        "REGIONSTORE_API__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "REGIONSTORE_API__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    async with extra_gateway(
        stack,
        port=free_port(),
        node_id=NODE_ID,
        offset=skew("0"),
        log=LOGS / "gateway-slow-clients.log",
        settings=settings,
    ) as url:
        yield url


async def _connect(gateway_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(gateway_url)
    assert url.hostname is not None
    return await asyncio.open_connection(url.hostname, url.port or 80)


async def _read_until_closed(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    async with asyncio.timeout(within_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


async def _dribble(writer: asyncio.StreamWriter, byte: bytes) -> None:
    """Send one byte a second until the server stops listening."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(byte)
            await writer.drain()
            await asyncio.sleep(1)


def _head(method: str, path: str, *, content_length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers().items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _stalled_head(gateway_url: str, sent: bytes, dribble: bytes | None) -> bytes:
    reader, writer = await _connect(gateway_url)
    writer.write(sent)
    await writer.drain()
    slow = asyncio.create_task(_dribble(writer, dribble)) if dribble else None
    try:
        return await _read_until_closed(reader, HEADER_TIMEOUT_S + GRACE_S)
    finally:
        if slow is not None:
            slow.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_connection_whose_request_head_stalls_is_closed(gateway_url: str) -> None:
    half_head = _head("GET", "/v1/customers")[:30]
    stalls = {
        "silent": (b"", None),
        "half a head": (half_head, None),
        "a head one byte a second": (b"GET /v1/customers HTTP/1.1\r\nX-Slow: ", b"a"),
    }
    answers = await asyncio.gather(
        *(_stalled_head(gateway_url, sent, dribble) for sent, dribble in stalls.values())
    )
    # Closed without an answer: the head never completed, so there is no request to answer.
    assert dict(zip(stalls, answers, strict=True)) == dict.fromkeys(stalls, b"")


async def test_a_request_whose_body_stalls_gets_408_and_is_closed(gateway_url: str) -> None:
    reader, writer = await _connect(gateway_url)
    writer.write(_head("POST", "/v1/customers", content_length=10_000) + b'{"customer_id": "')
    await writer.drain()
    slow = asyncio.create_task(_dribble(writer, b"a"))
    try:
        answer = await _read_until_closed(reader, BODY_TIMEOUT_S + GRACE_S)
    finally:
        slow.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    head, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b'"loc":["body"]' in body
    assert b'"type":"timeout"' in body
