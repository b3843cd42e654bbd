"""Deadlines for slow clients: the request head (uvicorn protocol) and the body (ASGI)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from uvicorn.server import ServerState

from regionstore_gateway.edge.timeouts import BodyTimeout, head_timeout_protocol

# Short deadlines keep the tests quick; nothing asserts how fast anything happens.
DEADLINE_S = 0.05
WAIT_S = 10.0


class ReadingApp:
    """Reads the whole body, then answers 200; or answers at once without reading it."""

    def __init__(self, *, read: bool = True, listen_after: bool = False) -> None:
        self.read = read
        self.listen_after = listen_after
        self.after: Message | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while self.read:
            message = await receive()
            if not message.get("more_body"):
                break
        if self.listen_after:
            self.after = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """One request: body chunks handed out on demand, then silence (``stall``) or more."""

    def __init__(
        self, chunks: list[bytes], *, stall: bool, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": headers if headers is not None else [(b"transfer-encoding", b"chunked")],
        }
        self.chunks = chunks
        self.stall = stall
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {
                "type": "http.request",
                "body": chunk,
                "more_body": self.stall or bool(self.chunks),
            }
        if self.stall:
            await asyncio.Event().wait()
        await asyncio.sleep(DEADLINE_S * 4)  # longer than the deadline: the body is in already
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(self, app: BodyTimeout) -> Client:
        async with asyncio.timeout(WAIT_S):
            await app(self.scope, self.receive, self.send)
        return self

    @property
    def start(self) -> Message:
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]
        return start

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


class TestBodyTimeout:
    async def test_a_body_that_stops_arriving_is_408_and_closes(self) -> None:
        client = await Client([b'{"a": '], stall=True).run(BodyTimeout(ReadingApp(), DEADLINE_S))
        assert client.start["status"] == 408
        assert client.headers[b"connection"] == b"close"
        assert json.loads(client.body) == {
            "detail": [
                {
                    "loc": ["body"],
                    "msg": "request body not received within 0.05 s",
                    "type": "timeout",
                }
            ]
        }

    async def test_a_whole_body_is_not_bounded_afterwards(self) -> None:
        # An event stream, say, listens for the client leaving for as long as it runs.
        app = ReadingApp(listen_after=True)
        client = await Client([b"{}"], stall=False).run(BodyTimeout(app, DEADLINE_S))
        assert client.start["status"] == 200
        assert app.after == {"type": "http.disconnect"}
        assert b"connection" not in client.headers

    async def test_a_request_without_a_body_keeps_its_connection(self) -> None:
        client = Client([], stall=False, headers=[])
        await client.run(BodyTimeout(ReadingApp(read=False), DEADLINE_S))
        assert client.start["status"] == 200
        assert b"connection" not in client.headers


class FakeTransport(asyncio.Transport):
    """What uvicorn's protocol needs of a transport; records writes and the close."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()
        self.answered = asyncio.Event()
        self.written = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        if b"\r\n\r\n" in self.written:
            self.answered.set()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        self.closed.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def connect(deadline_s: float) -> tuple[asyncio.Protocol, FakeTransport]:
    config = uvicorn.Config(answer, log_config=None, lifespan="off")
    config.load()
    protocol = head_timeout_protocol(deadline_s)(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


@pytest.fixture
def connection() -> tuple[asyncio.Protocol, FakeTransport]:
    return connect(DEADLINE_S)


async def ask_whole(protocol: asyncio.Protocol, transport: FakeTransport) -> None:
    """Send a whole request head at once and wait for its answer."""
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
    async with asyncio.timeout(WAIT_S):
        await transport.answered.wait()


class TestHeadTimeout:
    async def test_a_silent_connection_is_closed(
        self, connection: tuple[asyncio.Protocol, FakeTransport]
    ) -> None:
        _, transport = connection
        async with asyncio.timeout(WAIT_S):
            await transport.closed.wait()
        assert transport.written == b""

    async def test_half_a_head_is_closed(
        self, connection: tuple[asyncio.Protocol, FakeTransport]
    ) -> None:
        protocol, transport = connection
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: gateway\r\n")
        async with asyncio.timeout(WAIT_S):
            await transport.closed.wait()
        assert transport.written == b""

    async def test_a_whole_head_is_answered_and_not_cut_off(
        self, connection: tuple[asyncio.Protocol, FakeTransport]
    ) -> None:
        protocol, transport = connection
        await ask_whole(protocol, transport)
        assert transport.written.startswith(b"HTTP/1.1 204 ")
        # Waits past the head deadline (the keep-alive timeout of 5 s is longer): still open.
        await asyncio.sleep(DEADLINE_S * 4)
        assert not transport.closed.is_set()
        protocol.connection_lost(None)

    async def test_a_later_heads_deadline_runs_from_its_first_byte(
        self, connection: tuple[asyncio.Protocol, FakeTransport]
    ) -> None:
        protocol, transport = connection
        await ask_whole(protocol, transport)
        # Idle between requests longer than the head deadline: keep-alive's business, not its.
        await asyncio.sleep(DEADLINE_S * 2)
        assert not transport.closed.is_set()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: gate")
        async with asyncio.timeout(WAIT_S):
            await transport.closed.wait()
        assert transport.written.count(b"HTTP/1.1 204 ") == 1

    async def test_heads_in_time_one_after_another_are_never_cut_off(self) -> None:
        # Each head is whole within a tenth of the deadline; the series outlasts the deadline.
        deadline_s = 0.5
        protocol, transport = connect(deadline_s)
        for _ in range(12):
            transport.answered.clear()
            protocol.data_received(b"GET / HTTP/1.1\r\nHost: ")
            await asyncio.sleep(deadline_s / 10)
            protocol.data_received(b"gateway\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                await transport.answered.wait()
        assert transport.written.count(b"HTTP/1.1 204 ") == 12
        assert not transport.closed.is_set()
        protocol.connection_lost(None)
