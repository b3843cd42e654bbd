"""A region's store disk that fills in a chaos round, and the room given back.

The region's data directory goes onto a tmpfs with a little room to spare (:mod:`tests.disks`),
and the round's own load fills it: the store then refuses what it cannot write, and the
appliers park the region's share. After the fault's hold the tmpfs grows, the parked writes
drain, and the data goes back onto the disk. Kafka's full log directory is not a nemesis fault:
the gateway refuses writes for as long as it lasts (``tests/integration/test_kafka_disk_full.py``).
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.chaos import wipe
from tests.disks import SmallDisk, small_disk
from tests.stack import Stack

HEADROOM_KIB = 2 * 1024
"""Room left on the store's disk: the round's load fills it within seconds to a minute."""
ROOM_KIB = 512 * 1024
"""Room given back beyond what the disk holds by then."""
FULL_BELOW_KIB = 256
"""Less room than this is a full disk: a PostgreSQL page and its WAL no longer fit."""
BACK_WITHIN_S = 300.0
"""As long as the store may take to run again once it has room (crash recovery included)."""
FILL_WITHIN_S = 120.0
"""As long as the load is given to fill the disk before the hold starts anyway."""
WATCH_EVERY_S = 0.5


class DiskFaultError(AssertionError):
    """A disk fault could not be set up."""


async def fill(stack: Stack, region: str, hold_s: float) -> str:
    """Run ``region``'s store on a small disk until the load has filled it (or for
    :data:`FILL_WITHIN_S`), hold it full ``hold_s``, then give room back and move the data home."""
    if os.geteuid() != 0:
        raise DiskFaultError("a disk fault needs root (mount): run make chaos without disk")
    postgres = f"{region}_pg"
    with_postgres = postgres in await stack.processes()
    process = postgres if with_postgres else region
    data = wipe.data_dir(region, with_postgres)
    async with small_disk(stack, process, data, HEADROOM_KIB) as disk:
        filled_s = await _until_full(disk)
        await asyncio.sleep(hold_s)
        left_kib = disk.free_kib()
        disk.grow(ROOM_KIB)
        # A PostgreSQL whose WAL could not be written stopped, and process-compose restarts it
        # until it finds room: the data moves home only once it runs again (and is stopped).
        await stack.wait_ready(process, within_s=BACK_WITHIN_S)
    how = f"not full within {FILL_WITHIN_S:.0f}s" if filled_s is None else f"full after {filled_s}s"
    return f"{region}'s disk {how}, held {hold_s:.1f}s ({left_kib} KiB free), then grown"


async def _until_full(disk: SmallDisk) -> float | None:
    """Seconds until the load filled the disk, or None if it did not within the bound."""
    started = time.monotonic()
    while (took_s := time.monotonic() - started) < FILL_WITHIN_S:
        if disk.free_kib() < FULL_BELOW_KIB:
            return round(took_s, 1)
        await asyncio.sleep(WATCH_EVERY_S)
    return None
