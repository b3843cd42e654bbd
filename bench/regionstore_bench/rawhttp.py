"""A minimal keep-alive HTTP/1.1 JSON client for the single-request scenario.

httpx spends a few milliseconds of CPU per request in its connection pool; at 32 concurrent
requests on a 2-core machine that made the bench, not the gateway, the limit (two bench
processes together got 35 % more through the same gateway). One plain connection per worker
costs almost nothing, so the figures are the gateway's.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import httpx


class RawHttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 as expected."""


class RawConnection:
    """One persistent connection; requests on it go one after the other."""

    def __init__(self, base_url: str, api_key: str) -> None:
        url = httpx.URL(base_url)
        self._host = url.host
        self._port = url.port or 80
        self._authorization = f"Authorization: Bearer {api_key}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection if open."""
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None

    async def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        """POST a JSON body; return (status, decoded JSON body)."""
        return await self.send_json("POST", path, payload)

    async def send_json(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
        """Send a JSON body with ``method``; return (status, decoded JSON body)."""
        body = json.dumps(payload).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{self._authorization}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
            assert self._reader is not None
            self._writer.write(head + body)
            status_line = await self._reader.readline()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise RawHttpError(f"not an HTTP answer: {status_line!r}")
            length = None
            while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is None:
                raise RawHttpError("answer without Content-Length")
            data = await self._reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, RawHttpError) as error:
            await self.close()
            raise RawHttpError(repr(error)) from error
        return int(parts[1]), json.loads(data) if data else None
