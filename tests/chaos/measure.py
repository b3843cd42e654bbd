"""What each fault of a chaos round did to users: writes and reads while it lasted, and the
time until writes flowed cleanly again after it was healed (docs/faults.md's table)."""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from tests.chaos.load import Ledger
from tests.chaos.nemesis import Happened

READ_EVERY_S = 0.1
READ_TIMEOUT_S = 2.0
CLEAN_FOR_S = 1.0
"""Writes count as recovered once a second passes with answers, every one of them accepted."""

Timeline = Sequence[tuple[float, str]]


class Reader:
    """Reads acknowledged customers through the clients' gateway, one at a time, and notes each
    answer: ``ok`` (its home region answered, or not found yet: the write is not applied
    everywhere), ``degraded`` (another region answered), ``failed`` (an error or no answer)."""

    def __init__(self, http: httpx.AsyncClient, ledger: Ledger) -> None:
        self._http = http
        self._ledger = ledger
        self._rng = random.Random(ledger.prefix)
        self.timeline: list[tuple[float, str]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop`` is set."""
        while not stop.is_set():
            live = [cid for cid, final in self._ledger.finals.items() if not final.deleted]
            if live:
                self.timeline.append((time.monotonic(), await self._read(self._rng.choice(live))))
            await asyncio.sleep(READ_EVERY_S)

    async def _read(self, customer_id: str) -> str:
        try:
            response = await self._http.get(f"/v1/customers/{customer_id}", timeout=READ_TIMEOUT_S)
        except httpx.TransportError:
            return "failed"
        if response.status_code == 404:
            return "ok"
        if response.status_code != 200:
            return "failed"
        body = response.json()
        return "ok" if body.get("served_by") == body.get("region") else "degraded"


@dataclass(frozen=True, slots=True)
class FaultRow:
    """One fault's effect: answers while it was on, and the recovery after it was healed."""

    label: str
    began_s: float
    held_s: float
    accepted: int
    refused: int
    unknown: int
    reads_ok: int
    reads_degraded: int
    reads_failed: int
    recover_s: float | None
    note: str

    @property
    def reads_available(self) -> float | None:
        """The share of reads answered while the fault was on."""
        reads = self.reads_ok + self.reads_degraded + self.reads_failed
        return None if not reads else (self.reads_ok + self.reads_degraded) / reads


def measure(
    happened: Sequence[Happened], writes: Timeline, reads: Timeline, began: float
) -> list[FaultRow]:
    """One row per fault, from the round's write and read timelines (monotonic times)."""
    writes = sorted((t - began, outcome) for t, outcome in writes)
    reads = sorted((t - began, outcome) for t, outcome in reads)
    rows = []
    for h in happened:
        during = Counter(_between(writes, h.began_s, h.healed_s))
        seen = Counter(_between(reads, h.began_s, h.healed_s))
        rows.append(
            FaultRow(
                label=h.fault.label,
                began_s=h.began_s,
                held_s=round(h.healed_s - h.began_s, 1),
                accepted=during["accepted"],
                refused=during["refused"],
                unknown=during["unknown"],
                reads_ok=seen["ok"],
                reads_degraded=seen["degraded"],
                reads_failed=seen["failed"],
                recover_s=recovered_after(writes, h.healed_s),
                note=h.note,
            )
        )
    return rows


def _between(timeline: Timeline, start: float, end: float) -> list[str]:
    times = [t for t, _ in timeline]
    return [
        o for _, o in timeline[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]
    ]


def recovered_after(writes: Timeline, healed: float) -> float | None:
    """Seconds from ``healed`` until the first answer that opens :data:`CLEAN_FOR_S` of
    answers all accepted; None if that never happened in the round."""
    times = [t for t, _ in writes]
    first = bisect.bisect_left(times, healed)
    for i in range(first, len(writes)):
        start = writes[i][0]
        end = bisect.bisect_right(times, start + CLEAN_FOR_S)
        window = [o for _, o in writes[i:end]]
        if end < len(writes) and all(o == "accepted" for o in window):
            return round(start - healed, 2)
    return None
