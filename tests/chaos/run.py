"""One chaos round: load, the kill schedule, settling, and everything the round must prove."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from regionstore_shared.clients import MongoClient, customers, mongo_client
from regionstore_shared.ports import port, service_url
from regionstore_shared.settings import CommonSettings
from regionstore_testing.audit import AuditReport, wait_for_clean
from regionstore_testing.ports import free_port
from tests.chaos import faults, wipe
from tests.chaos.load import Client, Ledger
from tests.chaos.measure import FaultRow, Reader, measure
from tests.chaos.nemesis import CLOCK_CONSUMERS, CLOCK_GATEWAY, CLOCKED, Happened, Nemesis
from tests.chaos.verify import TopicCheck, check_topic, end_offsets
from tests.gateways import extra_consumer_process, extra_gateway, extra_gateway_process, skew
from tests.keys import headers
from tests.stack import Stack, alive

SETTLE_WITHIN_S = 300.0
AUDIT_WITHIN_S = 120.0
SKEWED_NODE_IDS = 20
"""The clock id of the first extra gateway (the stack's use 0 and 1)."""
CLOCK_NODE_ID = 40
"""The clock id of the gateway whose clock the nemesis steps."""


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """How big a round is."""

    writes: int = 20_000
    clients: int = 12
    pause_s: float = 4.0
    skews: tuple[str, ...] = ()
    """Extra gateways, one per clock offset (``tests.gateways.SKEWS``), beside the stack's:
    every client sends its requests through each gateway in turn."""
    kinds: tuple[str, ...] = ("kill",)
    """The nemesis's fault kinds (``tests.chaos.nemesis.KINDS``)."""
    seed: int | None = None
    """The nemesis's seed; a random one (printed) when None."""
    random_faults: int = 10
    """Faults other than kills, picked at random from ``kinds``."""


@dataclass
class RoundResult:
    """What a round did and what it proved."""

    prefix: str
    acknowledged: dict[str, int]
    refused: dict[str, int]
    resolved_after_unknown: int
    unresolved: int
    errors: list[str]
    kills: list[faults.Kill]
    load_s: float
    settle_s: float
    audit: AuditReport
    topic: TopicCheck
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    kinds: tuple[str, ...] = ()
    happened: list[Happened] = field(default_factory=list)
    faults: list[FaultRow] = field(default_factory=list)
    repaired_whole: bool = True
    """Every wiped region's repair left nothing diverging (True when none was wiped)."""

    @property
    def total_acknowledged(self) -> int:
        """Writes acknowledged, of every kind."""
        return sum(self.acknowledged.values())

    @property
    def clean(self) -> bool:
        """Nothing lost, stale, duplicated, resurrected, stray or refused-but-applied."""
        return (
            self.repaired_whole
            and self.audit.clean
            and self.topic.clean
            and not self.unresolved
            and not self.errors
            and self.audit.checked > 0
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report file."""
        data = dataclasses.asdict(self)
        data["total_acknowledged"] = self.total_acknowledged
        data["clean"] = self.clean
        return data


async def run_round(stack: Stack, plan: RoundPlan) -> RoundResult:
    """Load the stack, kill every kind of process once, settle, and check everything."""
    settings = CommonSettings()
    prefix = uuid.uuid4().hex[:8]
    ledger = Ledger(prefix)
    seed = plan.seed if plan.seed is not None else random.randrange(2**32)
    nemesis = Nemesis(seed, plan.kinds)
    start = await end_offsets(settings.kafka)
    async with contextlib.AsyncExitStack() as gateways:
        http = await gateways.enter_async_context(
            httpx.AsyncClient(base_url=stack.gateway_url, headers=headers(), timeout=30)
        )
        # With partitions the clients reach the stack's gateway through its link.
        front = http
        if "partition" in plan.kinds:
            front = await gateways.enter_async_context(
                httpx.AsyncClient(
                    base_url=service_url(port("GATEWAY_LINK_PORT")), headers=headers(), timeout=30
                )
            )
        skewed = [
            await gateways.enter_async_context(_skewed_client(stack, offset, node))
            for node, offset in enumerate(plan.skews, start=SKEWED_NODE_IDS)
        ]
        clock_pid = None
        restarts: list[str] = []
        if "clock" in plan.kinds:
            nemesis.clock_files = _clock_files(prefix)
            log = _run_dir() / "logs" / f"{CLOCK_GATEWAY}.log"
            url, clock_pid = await gateways.enter_async_context(
                extra_gateway_process(
                    stack,
                    port=free_port(),
                    node_id=CLOCK_NODE_ID,
                    offset=skew("0"),
                    log=log,
                    clock_file=nemesis.clock_files[CLOCK_GATEWAY],
                )
            )
            skewed.append(
                await gateways.enter_async_context(
                    httpx.AsyncClient(base_url=url, headers=headers(), timeout=30)
                )
            )
            for name, service in CLOCK_CONSUMERS.items():
                await gateways.enter_async_context(
                    _supervised(stack, name, service, nemesis.clock_files[name], restarts)
                )
        nemesis.plan(await faults.plan(stack), plan.random_faults)
        print(f"nemesis seed {seed} ({', '.join(plan.kinds)}): {len(nemesis.steps)} faults")
        # The schedule up front: a round that fails half way still says what came when.
        print("; ".join(f"{n}. {f.label}" for n, f in enumerate(nemesis.steps, 1)), flush=True)
        stop = asyncio.Event()
        clients = [
            Client(n, [front, *skewed], ledger, settings.region_map) for n in range(plan.clients)
        ]
        reader = Reader(front, ledger)
        began = time.monotonic()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c.run(stop)) for c in clients]
            group.create_task(reader.run(stop))
            try:
                await nemesis.run(stack, http, plan.pause_s, clock_pid, began)
                while ledger.total_acknowledged < plan.writes:
                    if all(t.done() for t in tasks):
                        break
                    await asyncio.sleep(faults.WATCH_EVERY_S)
            finally:
                stop.set()
        load_s = time.monotonic() - began
        settled = time.monotonic()
        notes = [*restarts, await _settle(http)]
        repaired = [await wipe.repair(region) for region in nemesis.wiped]
        if repaired:
            notes += [r.note for r in repaired]
            notes.append(await _settle(http))
        if plan.skews:
            labels = ", ".join(skew(offset).label for offset in plan.skews)
            notes.append(f"clients spread over the stack's gateway and ones {labels}")
        report = await _audit(settings, ledger)
        settle_s = time.monotonic() - settled
    topic = await check_topic(
        settings.kafka, start, prefix, ledger.acked_versions, ledger.acked_commands
    )
    return RoundResult(
        prefix=prefix,
        acknowledged=dict(ledger.acknowledged),
        refused=dict(ledger.refused),
        resolved_after_unknown=ledger.resolved_after_unknown,
        unresolved=len(ledger.unresolved),
        errors=ledger.errors[:20],
        kills=[
            faults.Kill(h.fault.target, round(h.ready_s - h.began_s, 2), h.note)
            for h in nemesis.happened
            if h.fault.kind == "kill"
        ],
        load_s=round(load_s, 1),
        settle_s=round(settle_s, 1),
        audit=report,
        topic=topic,
        notes=notes,
        seed=seed,
        kinds=plan.kinds,
        happened=nemesis.happened,
        faults=measure(nemesis.happened, ledger.timeline, reader.timeline, began),
        repaired_whole=all(r.whole for r in repaired),
    )


def _run_dir() -> Path:
    return Path(os.environ.get("RUN_DIR", ".run"))


@contextlib.asynccontextmanager
async def _supervised(
    stack: Stack, name: str, service: str, clock_file: Path, restarts: list[str]
) -> AsyncIterator[None]:
    """One more ``service`` whose clock the nemesis steps, started again whenever it exits, as
    process-compose does the stack's (a consumer ends itself when Kafka is gone past its
    request timeout); each exit and its last error go into ``restarts``.

    Its placement tables outlive the round: a later round's consumer starts from them, as a
    restarted one does.
    """
    first = asyncio.Event()

    async def keep() -> None:
        while True:
            # It runs the stack's program with the stack's environment, read from the stack's
            # own process: which Kafka's outage may have ended too, and is restarting.
            await stack.wait_ready(service, within_s=faults.RESTART_WITHIN_S)
            consumer = extra_consumer_process(
                stack,
                service,
                port=free_port(),
                state_dir=_run_dir() / "state" / name,
                log=_run_dir() / "logs" / f"{name}.log",
                clock_file=clock_file,
            )
            async with consumer as (_, pid):
                first.set()
                await _gone(pid)
            restarts.append(f"{name} exited and was started again ({_last_error(name)})")

    task = asyncio.create_task(keep())
    ready = asyncio.create_task(first.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        task.result()  # it could not start: its error
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gone(pid: int) -> None:
    """Return once the process ``pid`` has exited."""
    while True:
        if not alive(pid):
            return
        await asyncio.sleep(faults.WATCH_EVERY_S)


def _last_error(name: str) -> str:
    """The last line of an extra consumer's log: its traceback's error, when it died of one."""
    log = _run_dir() / "logs" / f"{name}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return lines[-1][:300] if lines else "no log"


def _clock_files(prefix: str) -> dict[str, Path]:
    """A ``FAKETIME_TIMESTAMP_FILE`` per clocked process, each at ``+0`` to begin with."""
    files = {name: _run_dir() / "chaos" / f"{prefix}-{name}" for name in CLOCKED}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("+0\n")
    return files


@contextlib.asynccontextmanager
async def _skewed_client(stack: Stack, offset: str, node: int) -> AsyncIterator[httpx.AsyncClient]:
    log = _run_dir() / "logs" / f"gateway-skew-{node}.log"
    async with (
        extra_gateway(stack, port=free_port(), node_id=node, offset=skew(offset), log=log) as url,
        httpx.AsyncClient(base_url=url, headers=headers(), timeout=30) as http,
    ):
        yield http


async def _settle(http: httpx.AsyncClient) -> str:
    """Wait until nothing is parked and both consumer groups have caught up."""
    deadline = time.monotonic() + SETTLE_WITHIN_S
    while True:
        counts = await faults.backlog(http)
        if counts and all(v == 0 for v in counts.values()):
            return "settled: nothing parked, no consumer lag"
        if time.monotonic() > deadline:
            return f"not settled after {SETTLE_WITHIN_S:.0f}s: {counts}"
        await asyncio.sleep(faults.WATCH_EVERY_S)


async def _audit(settings: CommonSettings, ledger: Ledger) -> AuditReport:
    patient = settings.store.model_copy(update={"socket_timeout_ms": 60_000})
    clients: dict[str, MongoClient] = {
        region: mongo_client(settings.stores[region], patient, "chaos")
        for region in settings.region_map.names
    }
    try:
        collections = {region: customers(client, patient) for region, client in clients.items()}
        finals = [f for cid, f in ledger.finals.items() if cid not in ledger.unresolved]
        return await wait_for_clean(
            finals,
            collections,
            settings.region_map,
            within_s=AUDIT_WITHIN_S,
            every_s=1.0,
            stray_prefix=ledger.prefix,
        )
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.close()


def fault_table(rows: list[FaultRow]) -> list[str]:
    """The faults of a round as a markdown table: answers while each was on, and recovery."""
    if not rows:
        return []
    lines = [
        "",
        "| fault | at s | held s | writes accepted / refused / unknown | reads answered "
        "| reads degraded | writes clean again after s | note |",
        "| --- " * 8 + "|",
    ]
    for row in rows:
        answered = row.reads_available
        reads = row.reads_ok + row.reads_degraded + row.reads_failed
        lines.append(
            f"| {row.label} | {row.began_s} | {row.held_s} "
            f"| {row.accepted} / {row.refused} / {row.unknown} "
            f"| {'-' if answered is None else f'{answered:.0%} of {reads}'} "
            f"| {row.reads_degraded} "
            f"| {'never' if row.recover_s is None else row.recover_s} | {row.note} |"
        )
    return lines


def summary(results: list[RoundResult]) -> str:
    """The rounds as a markdown report."""
    lines = [
        "| round | acknowledged | refused | unknown, then resolved | kills | load s | settle s "
        "| lost | stale | overtaken | mismatched | duplicated | resurrected | strays "
        "| refused but applied | clean |",
        "| --- " * 16 + "|",
    ]
    for number, r in enumerate(results, 1):
        a = r.audit
        lines.append(
            f"| {number} | {r.total_acknowledged:,} | {sum(r.refused.values())} "
            f"| {r.resolved_after_unknown} | {len(r.kills)} | {r.load_s} | {r.settle_s} "
            f"| {a.lost} | {a.stale} | {a.overtaken} | {a.mismatched} | {a.duplicated} "
            f"| {a.resurrected} "
            f"| {a.strays} | {r.topic.unacknowledged} | {'yes' if r.clean else 'NO'} |"
        )
    for number, r in enumerate(results, 1):
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(r.acknowledged.items()))
        kills = ", ".join(
            f"{k.process} ({k.down_s}s{'; ' + k.note if k.note else ''})" for k in r.kills
        )
        lines += [
            "",
            f"Round {number} (customers `{r.prefix}*`): acknowledged {kinds}; "
            f"{r.topic.commands:,} commands in the topic; {'; '.join(r.notes)}.",
            f"Nemesis seed {r.seed} ({', '.join(r.kinds)}; rerun with SEED={r.seed}).",
            f"Kills, each SIGKILL then ready again: {kills}.",
        ]
        lines += fault_table(r.faults)
        problems = [*r.errors, *r.topic.examples]
        problems += [f"{kind}: {ex}" for kind, exs in r.audit.examples.items() for ex in exs]
        if problems or r.unresolved:
            lines.append(f"Problems ({r.unresolved} unresolved): " + "; ".join(problems[:20]))
    return "\n".join(lines)
