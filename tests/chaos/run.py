"""One chaos round: load, the kill schedule, settling, and everything the round must prove."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from regionstore_shared.clients import MongoClient, customers, mongo_client
from regionstore_shared.settings import CommonSettings
from regionstore_testing.audit import AuditReport, wait_for_clean
from regionstore_testing.ports import free_port
from tests.chaos import faults
from tests.chaos.load import Client, Ledger
from tests.chaos.verify import TopicCheck, check_topic, end_offsets
from tests.gateways import extra_gateway, skew
from tests.keys import headers
from tests.stack import Stack

SETTLE_WITHIN_S = 300.0
AUDIT_WITHIN_S = 120.0
SKEWED_NODE_IDS = 20
"""The clock id of the first extra gateway (the stack's use 0 and 1)."""


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """How big a round is."""

    writes: int = 20_000
    clients: int = 12
    pause_s: float = 4.0
    skews: tuple[str, ...] = ()
    """Extra gateways, one per clock offset (``tests.gateways.SKEWS``), beside the stack's:
    every client sends its requests through each gateway in turn."""


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

    @property
    def total_acknowledged(self) -> int:
        """Writes acknowledged, of every kind."""
        return sum(self.acknowledged.values())

    @property
    def clean(self) -> bool:
        """Nothing lost, stale, duplicated, resurrected, stray or refused-but-applied."""
        return (
            self.audit.clean
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
    start = await end_offsets(settings.kafka)
    async with contextlib.AsyncExitStack() as gateways:
        http = await gateways.enter_async_context(
            httpx.AsyncClient(base_url=stack.gateway_url, headers=headers(), timeout=30)
        )
        skewed = [
            await gateways.enter_async_context(_skewed_client(stack, offset, node))
            for node, offset in enumerate(plan.skews, start=SKEWED_NODE_IDS)
        ]
        schedule = await faults.plan(stack)
        stop = asyncio.Event()
        clients = [
            Client(n, [http, *skewed], ledger, settings.region_map) for n in range(plan.clients)
        ]
        began = time.monotonic()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c.run(stop)) for c in clients]
            try:
                await faults.run(stack, http, schedule, plan.pause_s)
                while ledger.total_acknowledged < plan.writes:
                    if all(t.done() for t in tasks):
                        break
                    await asyncio.sleep(faults.WATCH_EVERY_S)
            finally:
                stop.set()
        load_s = time.monotonic() - began
        settled = time.monotonic()
        notes = [await _settle(http)]
        if plan.skews:
            labels = ", ".join(skew(offset).label for offset in plan.skews)
            notes.append(f"clients spread over the stack's gateway and ones {labels}")
        report = await _audit(settings, ledger)
        settle_s = time.monotonic() - settled
    topic = await check_topic(settings.kafka, start, prefix, ledger.acked_versions)
    return RoundResult(
        prefix=prefix,
        acknowledged=dict(ledger.acknowledged),
        refused=dict(ledger.refused),
        resolved_after_unknown=ledger.resolved_after_unknown,
        unresolved=len(ledger.unresolved),
        errors=ledger.errors[:20],
        kills=schedule.kills,
        load_s=round(load_s, 1),
        settle_s=round(settle_s, 1),
        audit=report,
        topic=topic,
        notes=notes,
    )


@contextlib.asynccontextmanager
async def _skewed_client(stack: Stack, offset: str, node: int) -> AsyncIterator[httpx.AsyncClient]:
    log = Path(os.environ.get("RUN_DIR", ".run")) / "logs" / f"gateway-skew-{node}.log"
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
            f"Kills, each SIGKILL then ready again: {kills}.",
        ]
        problems = [*r.errors, *r.topic.examples]
        problems += [f"{kind}: {ex}" for kind, exs in r.audit.examples.items() for ex in exs]
        if problems or r.unresolved:
            lines.append(f"Problems ({r.unresolved} unresolved): " + "; ".join(problems[:20]))
    return "\n".join(lines)
