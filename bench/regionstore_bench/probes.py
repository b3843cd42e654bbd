"""What the bench reads from the running stack besides the API: /metrics and /proc."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    """Every sample of a service's /metrics, keyed by (name, sorted labels)."""
    response = await http.get(f"{url}/metrics", timeout=10, follow_redirects=True)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def buckets(samples: Samples, name: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts (upper bound -> count), summed over other labels."""
    wanted = set(labels.items())
    result: dict[float, float] = {}
    for (n, ls), value in samples.items():
        if n != f"{name}_bucket" or not wanted <= set(ls):
            continue
        bound = float(dict(ls)["le"])
        result[bound] = result.get(bound, 0.0) + value
    return result


def bucket_delta(before: Mapping[float, float], after: Mapping[float, float]) -> dict[float, float]:
    """Bucket counts observed between two scrapes."""
    return {bound: after[bound] - before.get(bound, 0.0) for bound in after}


def listener_pid(port: int) -> int | None:
    """The pid owning a listening TCP socket on ``port`` (from /proc, like ``make status``)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cells = line.split()
            if cells[3] == "0A" and int(cells[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cells[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None


def rss_mb(pid: int) -> float:
    """Resident set size in MiB; NaN when the process is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return math.nan
    return pages * PAGE_BYTES / 2**20


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far; NaN when it is gone."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    # Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name and state.
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


@dataclass
class PhaseUsage:
    """Peak RSS and CPU time of each process during one phase."""

    seconds: float = 0.0
    # The machine's 1-minute load average when the phase began and ended: on a shared machine
    # it says how much else competed for the cores.
    load_start: float = 0.0
    load_end: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    median_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def cpu_share(self) -> dict[str, float]:
        """CPU seconds per wall second of each process (1.0 = one core busy)."""
        if self.seconds <= 0:
            return dict.fromkeys(self.cpu_s, math.nan)
        return {name: cpu / self.seconds for name, cpu in self.cpu_s.items()}


class ProcessSampler:
    """Samples the RSS of the stack's processes while phases run, and their CPU time per phase.

    Processes are found by the port they listen on, so the sampler works however the stack was
    started; the bench's own process is included as ``bench``.
    """

    def __init__(self, ports: Mapping[str, int], every_s: float = 0.5) -> None:
        self._ports = dict(ports)
        self._every_s = every_s
        self.pids: dict[str, int] = {}
        self.phases: dict[str, PhaseUsage] = {}

    def resolve(self) -> dict[str, int]:
        """Find the current pid of every process (they may have restarted)."""
        pids = {name: listener_pid(port) for name, port in self._ports.items()}
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.pids["bench"] = os.getpid()
        return self.pids

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[PhaseUsage]:
        """Sample while the body runs; the usage is filled in when it exits."""
        pids = self.resolve()
        usage = PhaseUsage()
        samples: dict[str, list[float]] = {n: [] for n in pids}
        cpu_start = {n: cpu_seconds(pid) for n, pid in pids.items()}
        usage.load_start = os.getloadavg()[0]
        started = time.monotonic()

        async def sample() -> None:
            while True:
                for n, pid in pids.items():
                    samples[n].append(rss_mb(pid))
                await asyncio.sleep(self._every_s)

        task = asyncio.create_task(sample(), name=f"rss-{name}")
        try:
            yield usage
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            usage.seconds = time.monotonic() - started
            usage.load_end = os.getloadavg()[0]
            for n, pid in pids.items():
                values = [v for v in samples[n] if not math.isnan(v)] or [rss_mb(pid)]
                usage.peak_rss_mb[n] = max(values)
                usage.median_rss_mb[n] = sorted(values)[len(values) // 2]
                usage.cpu_s[n] = cpu_seconds(pid) - cpu_start[n]
            self.phases[name] = usage


def service_pids(sampler: ProcessSampler, names: Iterable[str]) -> dict[str, int]:
    """The pids of the named processes the sampler knows."""
    pids = sampler.resolve()
    return {name: pids[name] for name in names if name in pids}
