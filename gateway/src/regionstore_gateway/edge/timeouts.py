"""Slow clients cannot hold a connection: a deadline for the request head, one for the body.

uvicorn's ``timeout_keep_alive`` covers only the idle time between requests, and any byte
received cancels it, so a client that sends a request head a byte at a time holds its connection
for ever; ASGI middleware cannot help there, as the app is called only once the head is complete.
``head_timeout_protocol`` is uvicorn's httptools protocol with a deadline from the connection's
start (or from the first byte of each later request) to the end of the head: it closes the
connection when the head has not arrived in time. ``BodyTimeout`` then bounds the body: the
whole body must arrive within its deadline of the app being called, else 408 and the connection
is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from regionstore_gateway.edge.started import StartedSend

log = logging.getLogger(__name__)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is late."""

    head_timeout_s: float = 10.0

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The first request's deadline runs from the connection's start, not its first byte.
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.info(
                "request head not received in time; connection closed",
                extra={"client": self.client, "timeout_s": self.head_timeout_s},
            )
            self.transport.close()


def head_timeout_protocol(timeout_s: float) -> type[HeadTimeoutProtocol]:
    """The protocol class to pass as ``uvicorn.run(http=...)``, with its head deadline."""

    class Configured(HeadTimeoutProtocol):
        head_timeout_s = timeout_s

    return Configured


class _BodyLateError(HTTPException):
    # An HTTPException, because FastAPI turns any other error raised while it reads the body
    # into a 400.
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, detail=_late(timeout_s), headers={"Connection": "close"})


def _late(timeout_s: float) -> list[dict[str, object]]:
    return [
        {
            "loc": ["body"],
            "msg": f"request body not received within {timeout_s:g} s",
            "type": "timeout",
        }
    ]


class BodyTimeout:
    """Answers 408 and closes the connection when a request body is not in within the deadline.

    The deadline covers the body only: once the last chunk is in, ``receive`` waits without
    one, as the app then only listens for the client going away (an event stream does so for as
    long as it runs).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = False

        async def bounded() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyLateError(self.timeout_s) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        tracking = StartedSend(send)
        try:
            await self.app(scope, bounded, tracking)
        except _BodyLateError as error:
            if tracking.started:
                raise
            await _answer_late(send, error)


async def _answer_late(send: Send, error: _BodyLateError) -> None:
    body = json.dumps({"detail": error.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
