"""Optional sampling profiles of the services while a scenario runs (py-spy, from PyPI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("regionstore_bench")

RATE_HZ = 67
TOP = 25


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize(raw: Path, top: int = TOP) -> dict[str, Any]:
    """Self and inclusive sample shares of the busiest frames in py-spy's raw (folded) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        leaf = frames[-1]
        if "select" in leaf and ("selectors.py" in leaf or "epoll" in leaf):
            idle += count
        own[leaf] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = 100 / samples if samples else 0.0
    return {
        "samples": samples,
        "idle_pct": idle * share,
        "self_pct": [[frame, n * share] for frame, n in own.most_common(top)],
        "inclusive_pct": [[frame, n * share] for frame, n in inclusive.most_common(top)],
    }


@contextlib.asynccontextmanager
async def profiled(
    pids: Mapping[str, int], directory: Path, label: str, results: dict[str, Any]
) -> AsyncIterator[None]:
    """Record each pid with ``py-spy record`` while the body runs; summaries go to ``results``."""
    py_spy = _py_spy()
    if py_spy is None:
        log.warning("py-spy not found: no profile of %s", label)
        yield
        return
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    running: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
    for name, pid in pids.items():
        raw = directory / f"{label}-{name}.txt"
        process = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
            "--nonblocking", "--output", str(raw),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        running[name] = (process, raw)
    try:
        yield
    finally:
        for process, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        for name, (process, raw) in running.items():
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
            if await asyncio.to_thread(raw.exists):
                summary = await asyncio.to_thread(summarize, raw)
                results[f"{label}.{name}"] = {"file": str(raw), **summary}
