"""What the bench reads from the running stack besides the API: /metrics, /proc and
process-compose's process list."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Samples between two full passes over /proc that find each tree's processes again; in between
# only the known ones are read. A full pass takes milliseconds, and the event loop, with any
# request the bench is timing, waits for it.
RESCAN_EVERY = 10

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


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the name (state first); None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User plus system CPU time a process used so far; NaN when it is gone.

    With ``reaped``, also that of its children that exited and were waited for.
    """
    after_name = _stat(pid)
    if after_name is None:
        return math.nan
    # Fields 14-17 of stat (utime, stime, cutime, cstime) are 12-15 after the name and state.
    used = int(after_name[11]) + int(after_name[12])
    if reaped:
        used += int(after_name[13]) + int(after_name[14])
    return used / CLOCK_TICKS


def parents() -> dict[int, int]:
    """Every process's parent pid, from one pass over /proc."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (after_name := _stat(int(entry))) is not None:
            found[int(entry)] = int(after_name[1])
    return found


def descendants(root: int, parent_of: Mapping[int, int]) -> list[int]:
    """``root`` and every process below it; empty when ``root`` is gone."""
    if root not in parent_of:
        return []
    children: dict[int, list[int]] = {}
    for pid, parent in parent_of.items():
        children.setdefault(parent, []).append(pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def total_rss_mb(pids: Iterable[int]) -> float:
    """The RSS of these processes summed, in MiB (pages they share count in each); NaN when
    none is running."""
    values = [value for value in map(rss_mb, pids) if not math.isnan(value)]
    return sum(values) if values else math.nan


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time these processes and the children they reaped used so far.

    A process that exits between two readings moves into its parent's reaped time, so the
    difference of two readings over a whole tree loses nothing.
    """
    values = [cpu_seconds(pid, reaped=True) for pid in pids]
    running = [value for value in values if not math.isnan(value)]
    return sum(running) if running else math.nan


def pss_mb(pids: Iterable[int]) -> float:
    """The proportional set size of these processes summed, in MiB: a page shared by n
    processes counts 1/n in each, so shared memory counts once. NaN when none can be read."""
    kib: list[int] = []
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        kib += [int(line.split()[1]) for line in lines if line.startswith("Pss:")]
    return sum(kib) / 1024 if kib else math.nan


def compose_pids(url: str, timeout_s: float = 3.0) -> dict[str, int]:
    """The pid of every running process process-compose supervises, by name; empty when its
    API does not answer (a stack started some other way)."""
    try:
        response = httpx.get(f"{url}/processes", timeout=timeout_s)
        response.raise_for_status()
        rows = response.json()["data"]
        return {
            str(row["name"]): int(row["pid"])
            for row in rows
            if row.get("status") == "Running" and row.get("pid")
        }
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}


@dataclass
class PhaseUsage:
    """Peak RSS and CPU time of each process (and group of processes) during one phase."""

    seconds: float = 0.0
    # The machine's 1-minute load average when the phase began and ended: on a shared machine
    # it says how much else competed for the cores.
    load_start: float = 0.0
    load_end: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    median_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Of each tree: the most processes it had at once; of each group: its PSS as the phase ended.
    processes: dict[str, int] = field(default_factory=dict)
    end_pss_mb: dict[str, float] = field(default_factory=dict)

    def cpu_share(self) -> dict[str, float]:
        """CPU seconds per wall second of each process (1.0 = one core busy)."""
        if self.seconds <= 0:
            return dict.fromkeys(self.cpu_s, math.nan)
        return {name: cpu / self.seconds for name, cpu in self.cpu_s.items()}


class ProcessSampler:
    """Samples the RSS of the stack's processes while phases run, and their CPU time per phase.

    Processes are found by the port they listen on, so the sampler works however the stack was
    started; the bench's own process is included as ``bench``. The ``trees`` are found by name
    in process-compose's API at ``compose_url`` and measured with every process below them
    (PostgreSQL forks one per connection and per background worker). Each of ``groups`` is the
    sum of its members (those found) at the same instant, so its peak is the peak of the sum.
    """

    def __init__(
        self,
        ports: Mapping[str, int],
        every_s: float = 0.5,
        *,
        compose_url: str | None = None,
        trees: Iterable[str] = (),
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._ports = dict(ports)
        self._every_s = every_s
        self._compose_url = compose_url
        self._tree_names = frozenset(trees)
        self._groups = {name: tuple(members) for name, members in (groups or {}).items()}
        self.pids: dict[str, int] = {}
        self.trees: dict[str, int] = {}
        self.phases: dict[str, PhaseUsage] = {}

    def resolve(self) -> dict[str, int]:
        """Find the current pid of every process (they may have restarted)."""
        pids = {name: listener_pid(port) for name, port in self._ports.items()}
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.trees = {}
        if self._tree_names and self._compose_url:
            found = compose_pids(self._compose_url)
            self.trees = {name: found[name] for name in sorted(self._tree_names) if name in found}
        self.pids.update(self.trees)
        self.pids["bench"] = os.getpid()
        return self.pids

    def _members(self) -> dict[str, list[int]]:
        """The processes of each tree now."""
        if not self.trees:
            return {}
        parent_of = parents()
        return {name: descendants(root, parent_of) for name, root in self.trees.items()}

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[PhaseUsage]:
        """Sample while the body runs; the usage is filled in when it exits."""
        pids = self.resolve()
        members = self._members()
        groups = {group: [m for m in names if m in pids] for group, names in self._groups.items()}
        groups = {group: names for group, names in groups.items() if names}
        usage = PhaseUsage()
        samples: dict[str, list[float]] = {n: [] for n in [*pids, *groups]}

        def processes_of(n: str) -> list[int]:
            return members[n] if n in members else [pids[n]]

        def cpu_now() -> dict[str, float]:
            return {
                n: total_cpu_seconds(members[n]) if n in members else cpu_seconds(pid)
                for n, pid in pids.items()
            }

        def measure() -> None:
            values = {n: total_rss_mb(processes_of(n)) for n in pids}
            values |= {group: sum(values[m] for m in names) for group, names in groups.items()}
            for n, value in values.items():
                samples[n].append(value)
            for n, tree in members.items():
                usage.processes[n] = max(usage.processes.get(n, 0), len(tree))

        cpu_start = cpu_now()
        usage.load_start = os.getloadavg()[0]
        started = time.monotonic()

        async def sample() -> None:
            for count in itertools.count(1):
                measure()
                await asyncio.sleep(self._every_s)
                if count % RESCAN_EVERY == 0:
                    members.update(self._members())

        task = asyncio.create_task(sample(), name=f"rss-{name}")
        try:
            yield usage
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            usage.seconds = time.monotonic() - started
            usage.load_end = os.getloadavg()[0]
            members.update(self._members())
            measure()
            cpu_end = cpu_now()
            for n, values in samples.items():
                present = sorted(v for v in values if not math.isnan(v)) or [math.nan]
                usage.peak_rss_mb[n] = max(present)
                usage.median_rss_mb[n] = present[len(present) // 2]
            for n in pids:
                usage.cpu_s[n] = cpu_end[n] - cpu_start[n]
            for group, names in groups.items():
                usage.end_pss_mb[group] = pss_mb(p for m in names for p in processes_of(m))
            self.phases[name] = usage
