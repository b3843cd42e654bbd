"""Keeps exactly one drainer running for each available region, and none for the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from regionstore_shared.status import NodeStatus

log = logging.getLogger(__name__)

DrainFactory = Callable[[str, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class _Running:
    stop: asyncio.Event
    task: asyncio.Task[None]


class DrainSupervisor:
    """Starts a drainer when a region is available and stops it when it is not."""

    def __init__(self, start_drain: DrainFactory) -> None:
        self._start_drain = start_drain
        self._running: dict[str, _Running] = {}

    @property
    def draining(self) -> list[str]:
        """Regions with a live drainer."""
        return sorted(r for r, run in self._running.items() if not run.task.done())

    def reconcile(self, statuses: dict[str, NodeStatus]) -> None:
        """Bring the drainers in line with the statuses."""
        for region, status in statuses.items():
            running = self._running.get(region)
            if running is not None and running.task.done():
                self._report(region, running.task)
                running = None
                del self._running[region]
            if status is NodeStatus.AVAILABLE and (running is None or running.stop.is_set()):
                stop = asyncio.Event()
                previous = running.task if running is not None else None
                task = asyncio.create_task(
                    self._drain_after(previous, region, stop), name=f"drain-{region}"
                )
                self._running[region] = _Running(stop, task)
            elif status is NodeStatus.UNAVAILABLE and running is not None:
                running.stop.set()

    async def _drain_after(
        self, previous: asyncio.Task[None] | None, region: str, stop: asyncio.Event
    ) -> None:
        # A region that flips back while its last drainer is still finishing a batch gets a
        # new drainer only once the old one is gone: one drainer per region at a time.
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await self._start_drain(region, stop)

    async def stop_all(self) -> None:
        """Stop every drainer and wait for each to finish its batch."""
        for running in self._running.values():
            running.stop.set()
        await asyncio.gather(*(r.task for r in self._running.values()), return_exceptions=True)
        self._running.clear()

    @staticmethod
    def _report(region: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "drainer failed; restarting",
                extra={"region": region, "error": repr(task.exception())},
            )
