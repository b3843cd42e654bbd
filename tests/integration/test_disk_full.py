"""A region whose store's disk is full parks its writes, never dead-letters them, and is drained
once there is room again.

Region 3's PostgreSQL runs with its data directory on a tmpfs with a few MiB to spare
(:mod:`tests.disks`); writes come until it cannot write any more. A full disk is the region's
fault, not the commands': every write is still acknowledged, region 3's share is parked, the
dead-letter topic gains nothing, and when the tmpfs grows the backlog drains and every region
holds every write.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.chaos.verify import end_offsets
from tests.disks import small_disk
from tests.regionstore_env import Env, customer, env
from tests.stack import Stack

# With the mixed chaos round in `make test-links`, on a stack with its Toxiproxy links.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.links,
    pytest.mark.timeout(900),
]
__all__ = ["env"]

REGION = "region_3"
HEADROOM_KIB = 4 * 1024
ROOM_KIB = 512 * 1024
"""Room given back once the disk is full, beyond what the data holds by then."""
BATCH = 100
MOST_WRITES = 100_000
FULL = "No space left on device"


APPLIERS = ("writer", "replicator", "recovery")


def run_dir() -> Path:
    return Path(os.environ.get("RUN_DIR", ".run")).resolve()


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _since(log: Path, offset: int) -> str:
    """What a log gained after ``offset`` (all of it if it was started anew meanwhile)."""
    text = log.read_bytes() if log.exists() else b""
    return text[offset if len(text) >= offset else 0 :].decode(errors="replace")


@pytest.mark.skipif(os.geteuid() != 0, reason="a small filesystem needs root (mount)")
async def test_a_store_with_a_full_disk_parks_and_is_drained_when_room_returns(
    env: Env, stack: Stack
) -> None:
    kafka = env.settings.kafka
    dead_before = await end_offsets(kafka, kafka.deadletter_topic)
    logs = {name: _size(run_dir() / "logs" / f"{name}.log") for name in APPLIERS}
    data = run_dir() / "stores" / REGION / "pg"
    async with small_disk(stack, f"{REGION}_pg", data, HEADROOM_KIB) as disk:
        written = 0
        parked = 0
        while not parked and written < MOST_WRITES:
            items = [{"customer": customer()} for _ in range(BATCH)]
            response = await env.http.post("/v1/customers:batch", json={"items": items})
            assert response.status_code == 202, response.text[:500]
            for result in response.json()["results"]:
                # A full disk in one region refuses nothing: the write is accepted.
                assert result["status"] == "accepted", result
                env.remember(result)
            written += BATCH
            parked = (await env.pending())[REGION] or 0
        assert parked, f"{written} writes and {REGION} never parked; {disk.free_kib()} KiB free"
        # Parked because the store said its disk is full, not for some other trouble.
        said = "".join(_since(run_dir() / "logs" / f"{name}.log", logs[name]) for name in logs)
        assert FULL in said, f"no applier was told {REGION}'s disk is full:\n{said[-2000:]}"
        disk.grow(ROOM_KIB)
        grown = time.monotonic()
        report = await env.settle(within_s=300)
        assert report.clean, report
        print(
            f"{REGION} full after {written} writes ({parked} parked); every region held every "
            f"write {time.monotonic() - grown:.1f}s after the room came back"
        )
    assert (await env.pending())[REGION] == 0
    assert await end_offsets(kafka, kafka.deadletter_topic) == dead_before
