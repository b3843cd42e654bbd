"""A process's data directory on a small filesystem that fills, for a fault test.

The directory is copied onto a tmpfs sized to what it holds plus a little headroom and mounted
over its own path, so the process finds its data where it always does, with almost no room
left. Growing the tmpfs (``remount,size=``) gives the space back without stopping anything.
Afterwards the data, with everything written meanwhile, goes back onto the disk. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.stack import Stack

KIB = 1024


class DiskError(AssertionError):
    """The small filesystem could not be set up or taken down."""


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DiskError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def used_kib(path: Path) -> int:
    """What a directory holds, in KiB (du)."""
    return int(_run("du", "-sk", str(path)).split()[0])


@dataclass(frozen=True, slots=True)
class SmallDisk:
    """The tmpfs over a data directory."""

    path: Path

    def grow(self, room_kib: int) -> None:
        """Give the filesystem ``room_kib`` more room than it has (a size in all would be
        refused as too small once the data outgrew it, as it does on a stack a whole suite
        has loaded: "tmpfs: Too small a size for current use")."""
        size_kib = self.size_kib() + room_kib
        _run("mount", "-o", f"remount,size={size_kib}k", str(self.path))

    def size_kib(self) -> int:
        """Its size, used or not."""
        stats = os.statvfs(self.path)
        return stats.f_blocks * stats.f_frsize // KIB

    def free_kib(self) -> int:
        """Room left on it."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize // KIB


@contextlib.asynccontextmanager
async def small_disk(
    stack: Stack, process: str, data: Path, headroom_kib: int
) -> AsyncIterator[SmallDisk]:
    """Run ``process`` with ``data`` on a tmpfs of its size plus ``headroom_kib`` for the
    block; the process is stopped for the moves and started (ready) again after each."""
    if os.geteuid() != 0:
        raise DiskError("a small filesystem needs root (mount)")
    fresh = data.with_name(f"{data.name}.fresh")
    shutil.rmtree(fresh, ignore_errors=True)
    await stack.stop(process)
    stats = os.stat(data)
    size = used_kib(data) + headroom_kib
    mounted = filled = False
    try:
        _run("cp", "-a", str(data), str(fresh))
        _run(
            "mount", "-t", "tmpfs", "-o",
            f"size={size}k,mode={stats.st_mode & 0o7777:o},uid={stats.st_uid},gid={stats.st_gid}",
            "tmpfs", str(data),
        )  # fmt: skip
        mounted = True
        _run("cp", "-a", f"{fresh}/.", str(data))
        filled = True
        shutil.rmtree(fresh)
        await stack.start(process)
        yield SmallDisk(data)
    finally:
        await _stop_if_running(stack, process)
        if mounted and not filled:
            # The copy onto the tmpfs failed: the data under it is untouched.
            _run("umount", str(data))
        elif mounted:
            # What the tmpfs holds now is the data: written meanwhile, it goes back on disk.
            shutil.rmtree(fresh, ignore_errors=True)
            _run("cp", "-a", str(data), str(fresh))
            _run("umount", str(data))
            shutil.rmtree(data)
            fresh.rename(data)
        shutil.rmtree(fresh, ignore_errors=True)
        if (await stack.state(process))["status"] != "Running":
            await stack.start(process)
        await stack.wait_ready(process)


async def _stop_if_running(stack: Stack, process: str) -> None:
    if (await stack.state(process))["status"] == "Running":
        await stack.stop(process)
