"""The nemesis of `make chaos FAULTS=...`: random faults beyond kills, from a printed seed.

Like Jepsen's combined nemesis, a round mixes the kills of :mod:`tests.chaos.faults` with faults
picked at random from the enabled kinds, one at a time, each held for a while under load and then
healed:

- ``partition``: a link of ``make up FAULTS=...`` (Toxiproxy, deploy/local/links.yaml) between
  the services and Kafka, a Redis, a store, or the clients and the gateway, gets latency and
  jitter, loss, a two-way or one-way cut, connection resets, a bandwidth limit, or goes down;
- ``pause``: SIGSTOP of a process (and its children: a store's PostgreSQL backends), past the
  consumers' Kafka session timeout, or past the clock-id lease of the gateway that leases one;
- ``clock``: steps of the wall clock of a gateway, a writer or a replicator that run with
  libfaketime,
  ahead or behind, by milliseconds, seconds or a day;
- ``disk``: one region's store data directory on a small filesystem that the load fills, once
  a round; held full, then grown (:mod:`tests.chaos.disk`);
- ``wipe``: one region's store processes stopped, its data directory deleted, and started again
  empty, once a round (a second region wiped would lose customers for good: docs/repair.md);
  the round runs ``regionstore repair`` before its audit;
- ``kill``: SIGKILL of every process kind once (recovery in the middle of a drain).

The same seed and kinds give the same schedule; what the stack does in between does not change
which faults come. The wipe, the full disk and the clock's target draw from streams of their
own, so a seed that replayed a round before they existed still gives that round's other faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from regionstore_shared.ports import port, service_url
from tests.chaos import disk, faults, wipe
from tests.stack import Stack

KINDS = ("partition", "pause", "clock", "disk", "wipe", "kill")
"""Every kind the nemesis can do."""
ONCE_A_ROUND = ("disk", "wipe")
"""The kinds done once a round, at a place of their own, rather than drawn among the others."""
REGIONS = ("region_1", "region_2", "region_3")

LINKS = ("kafka", "redis", "redis_idempotency", "region_1", "region_2", "region_3", "gateway")
LINK_FAULTS = ("latency", "loss", "cut", "cut_one_way", "reset", "bandwidth", "down")
PAUSABLE = (
    "writer",
    "replicator",
    "recovery",
    "gateway",
    "kafka",
    "redis",
    "region_1",
    "region_1_pg",
    "region_2_pg",
)
CONSUMERS = ("writer", "replicator", "recovery")
KAFKA_SESSION_TIMEOUT_S = 10.0
"""The consumers' ``session_timeout_ms`` (regionstore_shared.clients)."""
NODE_LEASE_TTL_S = 15.0
"""The gateways' ``node_lease_ttl_s``: a leased clock id lapses after it."""
CLOCK_STEPS = ("-0.005", "-0.03", "+0.05", "-10", "+10", "-1d", "+1d")
CLOCK_GATEWAY = "gateway-clock"
"""The extra gateway whose clock the nemesis steps (and which leases its clock id)."""
CLOCK_WRITER = "writer-clock"
"""The extra writer, in the writer group beside the stack's, whose clock the nemesis steps."""
CLOCK_REPLICATOR = "replicator-clock"
"""The extra replicator, in the replicator group beside the stack's, whose clock is stepped."""
CLOCK_CONSUMERS = {CLOCK_WRITER: "writer", CLOCK_REPLICATOR: "replicator"}
"""Each extra consumer whose clock the nemesis steps, and the service it is one more of."""
CLOCKED = (CLOCK_GATEWAY, *CLOCK_CONSUMERS)
HOLD_S = (4.0, 12.0)
READY_WITHIN_S = 300.0
"""As long as a killed process may take to be back (faults.RESTART_WITHIN_S)."""


class NemesisError(AssertionError):
    """The nemesis could not do what it planned (a link or process missing)."""


def kinds_of(text: str) -> tuple[str, ...]:
    """The enabled kinds from ``FAULTS``: a comma list of :data:`KINDS`, or ``all`` (``1``)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or names in (["all"], ["1"]):
        return KINDS if names else ("kill",)
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise NemesisError(f"unknown fault kinds {unknown}: pick from {', '.join(KINDS)}, all")
    return tuple(kind for kind in KINDS if kind in names)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its kind, what it hits, how, and for how long."""

    kind: str
    target: str
    how: str = ""
    hold_s: float = 0.0

    @property
    def label(self) -> str:
        """The row of the fault table this fault belongs to."""
        if self.kind == "partition":
            return f"link {self.target}: {self.how}"
        if self.kind == "pause":
            return f"pause {self.target} ({self.how})"
        if self.kind == "clock":
            # The gateway's rows keep the label they had before a writer's clock was stepped.
            on = "" if self.target == CLOCK_GATEWAY else f" ({self.target})"
            return f"clock step {self.how}{on}"
        if self.kind == "wipe":
            return f"wipe {self.target}"
        if self.kind == "disk":
            return f"disk full {self.target}"
        return f"kill {self.target}"


@dataclass
class Happened:
    """A fault as it went: when (seconds into the round), and what it noted."""

    fault: Fault
    began_s: float
    healed_s: float
    ready_s: float
    note: str = ""


@dataclass
class Nemesis:
    """The round's faults: planned from the seed, then done one after another."""

    seed: int
    kinds: tuple[str, ...]
    steps: list[Fault] = field(default_factory=list)
    happened: list[Happened] = field(default_factory=list)
    clock_files: dict[str, Path] = field(default_factory=dict)
    """The ``FAKETIME_TIMESTAMP_FILE`` of each process in :data:`CLOCKED`."""
    wiped: list[str] = field(default_factory=list)
    """The regions wiped so far this round (at most one)."""

    def plan(self, processes: list[str], random_faults: int) -> None:
        """The kills (every process kind once), ``random_faults`` others, and with ``wipe``
        one wiped region and with ``disk`` one full disk, mixed."""
        rng = random.Random(self.seed)
        targets = random.Random(f"{self.seed}:clock")
        steps = [Fault("kill", name) for name in processes] if "kill" in self.kinds else []
        others = [kind for kind in self.kinds if kind not in ("kill", *ONCE_A_ROUND)]
        for _ in range(random_faults if others else 0):
            steps.append(self._pick(rng, rng.choice(others), targets))
        rng.shuffle(steps)
        if "wipe" in self.kinds:
            wiping = random.Random(f"{self.seed}:wipe")
            region = wiping.choice(REGIONS)
            steps.insert(wiping.randint(0, len(steps)), Fault("wipe", region))
        if "disk" in self.kinds:
            filling = random.Random(f"{self.seed}:disk")
            region, hold = filling.choice(REGIONS), round(filling.uniform(*HOLD_S), 1)
            steps.insert(filling.randint(0, len(steps)), Fault("disk", region, "full", hold))
        self.steps = steps

    def _pick(self, rng: random.Random, kind: str, targets: random.Random) -> Fault:
        hold = round(rng.uniform(*HOLD_S), 1)
        if kind == "partition":
            return Fault(kind, rng.choice(LINKS), rng.choice(LINK_FAULTS), hold)
        if kind == "pause":
            target = rng.choice((*PAUSABLE, CLOCK_GATEWAY) if "clock" in self.kinds else PAUSABLE)
            if target in CONSUMERS or target == "kafka":
                past = KAFKA_SESSION_TIMEOUT_S
                return Fault(kind, target, "past the Kafka session", past + rng.uniform(2, 6))
            if target == CLOCK_GATEWAY:
                past = NODE_LEASE_TTL_S
                return Fault(kind, target, "past its clock-id lease", past + rng.uniform(2, 6))
            return Fault(kind, target, "short", hold)
        return Fault(kind, targets.choice(CLOCKED), rng.choice(CLOCK_STEPS), hold)

    async def run(
        self,
        stack: Stack,
        control: httpx.AsyncClient,
        pause_s: float,
        clock_pid: int | None,
        started: float,
    ) -> None:
        """Do every step in turn, with ``pause_s`` of load after each."""
        async with Links() as links:
            if any(f.kind == "partition" for f in self.steps):
                await links.check()
            for fault in self.steps:
                began = time.monotonic()
                note = ""
                if fault.kind == "kill":
                    if fault.target == "recovery":
                        kill = await faults.kill_recovery_mid_drain(stack, control)
                    else:
                        kill = await faults.kill(stack, fault.target)
                    note, healed = kill.note, time.monotonic()
                elif fault.kind == "partition":
                    await links.fault(fault.target, fault.how)
                    await asyncio.sleep(fault.hold_s)
                    await links.heal()
                    healed = time.monotonic()
                elif fault.kind == "pause":
                    pid = clock_pid if fault.target == CLOCK_GATEWAY else None
                    note = await _pause(stack, fault, pid)
                    healed = time.monotonic()
                elif fault.kind == "wipe":
                    if self.wiped:
                        raise NemesisError(f"{self.wiped[0]} was wiped already: one a round")
                    self.wiped.append(fault.target)
                    note = await wipe.wipe(stack, control, fault.target)
                    healed = time.monotonic()
                elif fault.kind == "disk":
                    note = await disk.fill(stack, fault.target, fault.hold_s)
                    healed = time.monotonic()
                else:
                    note = await self._step_clock(fault)
                    healed = time.monotonic()
                await _all_ready(stack)
                self.happened.append(
                    Happened(
                        fault,
                        round(began - started, 2),
                        round(healed - started, 2),
                        round(time.monotonic() - started, 2),
                        note,
                    )
                )
                await asyncio.sleep(pause_s)

    async def _step_clock(self, fault: Fault) -> str:
        clock_file = self.clock_files.get(fault.target)
        if clock_file is None:
            raise NemesisError(f"a clock step needs {fault.target} (FAULTS with clock)")
        clock_file.write_text(f"{fault.how}\n")
        await asyncio.sleep(fault.hold_s)
        clock_file.write_text("+0\n")
        return f"{fault.target} {fault.how} for {fault.hold_s}s, then back"


async def _pause(stack: Stack, fault: Fault, pid: int | None) -> str:
    """SIGSTOP the process and its children for the fault's hold, then SIGCONT them."""
    root = pid if pid is not None else await stack.pid(fault.target)
    frozen = [root, *_descendants(root)]
    for each in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGSTOP)
    try:
        await asyncio.sleep(fault.hold_s)
    finally:
        for each in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGCONT)
    return f"{len(frozen)} processes stopped {fault.hold_s:.1f}s"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a PostgreSQL's backends), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def _all_ready(stack: Stack) -> None:
    """Wait until every process of the stack is running and ready again."""
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        states = await stack.processes()
        waiting = [
            name
            for name, state in states.items()
            if state["status"] != "Disabled"
            and (
                state["status"] != "Running"
                or (state["has_ready_probe"] and state["is_ready"] != "Ready")
            )
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise NemesisError(f"not ready {READY_WITHIN_S:.0f}s after a fault: {waiting}")
        await asyncio.sleep(faults.WATCH_EVERY_S)


class Links:
    """The Toxiproxy links of ``make up FAULTS=...``, through its API."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        self._http = http or httpx.AsyncClient(
            base_url=service_url(port("TOXIPROXY_PORT")), timeout=10
        )
        # Only links this round faulted are healed at its end: a round without partitions must
        # not reset a Toxiproxy that answers on the port for another stack.
        self._faulted = False

    async def __aenter__(self) -> Links:
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._faulted:
            with contextlib.suppress(httpx.HTTPError):
                await self.heal()
        await self._http.aclose()

    async def check(self) -> None:
        """Fail at once, and say what to do, when the stack runs without links."""
        try:
            proxies = (await self._http.get("/proxies")).json()
        except httpx.HTTPError as error:
            raise NemesisError(
                f"no Toxiproxy at {self._http.base_url} ({type(error).__name__}): partitions "
                "need the stack's links: make down && make up FAULTS=1"
            ) from error
        missing = sorted(set(LINKS) - set(proxies))
        if missing:
            raise NemesisError(f"Toxiproxy has no link {missing}: make down && make up FAULTS=1")

    async def fault(self, link: str, how: str) -> None:
        """Put one fault on a link (both directions unless it says one way)."""
        self._faulted = True
        if how == "down":
            await self._call("POST", f"/proxies/{link}", {"enabled": False})
            return
        for toxic in _toxics(how):
            await self._call("POST", f"/proxies/{link}/toxics", toxic)

    async def heal(self) -> None:
        """Every link up again and without faults."""
        await self._call("POST", "/reset", None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> None:
        response = await self._http.request(method, path, json=body)
        if response.status_code >= 300:
            raise NemesisError(f"Toxiproxy {method} {path}: {response.status_code} {response.text}")


def _toxics(how: str) -> list[dict[str, Any]]:
    """Toxiproxy's toxics for a fault: ``how`` is one of :data:`LINK_FAULTS` but ``down``."""
    both = ("upstream", "downstream")
    if how == "latency":
        attributes = {"latency": 150, "jitter": 100}
        return [_toxic("latency", stream, attributes) for stream in both]
    if how == "loss":
        # TCP has no lost packets to show; a lossy link is connections that stall: a third of
        # them go silent (Toxiproxy's timeout toxic, held until the fault ends).
        return [_toxic("timeout", stream, {"timeout": 0}, toxicity=0.3) for stream in both]
    if how == "cut":
        return [_toxic("timeout", stream, {"timeout": 0}) for stream in both]
    if how == "cut_one_way":
        # The answers are lost, not the requests: what was sent may still be done.
        return [_toxic("timeout", "downstream", {"timeout": 0})]
    if how == "reset":
        return [_toxic("reset_peer", stream, {"timeout": 0}) for stream in both]
    if how == "bandwidth":
        return [_toxic("bandwidth", stream, {"rate": 64}) for stream in both]
    raise NemesisError(f"no such link fault {how!r}: {', '.join(LINK_FAULTS)}")


def _toxic(
    kind: str, stream: str, attributes: dict[str, Any], toxicity: float = 1.0
) -> dict[str, Any]:
    return {
        "name": f"{kind}_{stream}",
        "type": kind,
        "stream": stream,
        "toxicity": toxicity,
        "attributes": attributes,
    }
