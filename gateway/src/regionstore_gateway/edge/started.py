"""The ``send`` of a request wrapped to tell whether its response has begun."""

from __future__ import annotations

from starlette.types import Message, Send


class StartedSend:
    """Passes every message on, noting the response's start: once it has gone out, a
    middleware can no longer answer in the app's place."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)
