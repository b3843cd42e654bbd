"""Service processes a test or the bench starts itself: until they serve, and until they stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import httpx


async def wait_serving(
    url: str,
    process: asyncio.subprocess.Process,
    *,
    within_s: float,
    path: str = "/readyz",
    every_s: float = 0.2,
    why: Callable[[], str] = str,
) -> None:
    """Return once ``url`` + ``path`` answers 200; raise RuntimeError if the process exits
    first and TimeoutError when ``within_s`` runs out (``why()`` adds, say, a log's tail)."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=url, timeout=max(1.0, every_s)) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{url}: exited with {process.returncode} {why()}".rstrip())
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(path)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not serving {path} within {within_s}s {why()}".rstrip())
            await asyncio.sleep(every_s)  # a poll interval, not a wait for readiness


async def stop(processes: Iterable[asyncio.subprocess.Process], *, within_s: float = 30) -> None:
    """SIGTERM every process still running, wait for them, SIGKILL those that do not stop."""
    running = [p for p in processes if p.returncode is None]
    for process in running:
        process.terminate()
    for process in running:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), within_s)
        if process.returncode is None:
            process.kill()
            await process.wait()
