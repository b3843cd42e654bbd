"""A request body over the limit is refused with 413, whether declared or streamed."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regionstore_gateway.edge.started import StartedSend


class _TooLargeError(HTTPException):
    # An HTTPException, because FastAPI turns any other error raised while it reads the body
    # into a 400.
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=_too_large(max_bytes))


def _too_large(max_bytes: int) -> list[dict[str, object]]:
    return [{"loc": ["body"], "msg": f"request body over {max_bytes} bytes", "type": "too_large"}]


class BodyLimit:
    """Answers 413 for a request body over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError(self.max_bytes)
            return message

        tracking = StartedSend(send)
        try:
            await self.app(scope, limited, tracking)
        except _TooLargeError:
            if not tracking.started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"request body over {self.max_bytes} bytes",
                        "type": "too_large",
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
