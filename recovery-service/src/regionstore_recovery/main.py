"""Replays parked commands into regions that came back, woken by Redis keyspace events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from regionstore_recovery.drainer import DRAINING, PENDING, PENDING_AGE, REGION_STATUS, drain
from regionstore_recovery.settings import RecoverySettings
from regionstore_recovery.supervisor import DrainSupervisor
from regionstore_shared.applied import AppliedCounter
from regionstore_shared.apply import BatchApplier, Suspicion
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clients import open_core
from regionstore_shared.logs import Outages
from regionstore_shared.parked import ParkedReader, parked_reader
from regionstore_shared.pipeline import DeadLetters
from regionstore_shared.runtime import ServiceState, run_service
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_shared.status_events import StatusChanges
from regionstore_shared.topics import ensure_topics

log = logging.getLogger(__name__)


async def recover(settings: RecoverySettings, state: ServiceState) -> None:
    """Reconcile drainers with the statuses on every change and every resync interval."""
    name = settings.service_name
    await ensure_topics(settings)
    async with contextlib.AsyncExitStack() as stack:
        redis, collections, producer = await open_core(stack, settings, name)
        # The drainers' applier reads statuses through the board, which answers with the last
        # ones read while Redis is down; the loop below reads Redis itself (``read``) and
        # leaves the drainers as they are when it cannot.
        board = StatusBoard(redis, settings.redis, settings.region_map.names, outages=state.outages)
        applied = AppliedCounter(redis, settings.redis.applied_key, outages=state.outages)
        applied.start()
        stack.push_async_callback(applied.stop)
        # No parker: a region that cannot be written stops its drain, which retries later.
        # A command the region refuses for good is dead-lettered, or it would be replayed
        # forever and hold back every command parked after it.
        applier = BatchApplier(
            collections=collections,
            status=board,
            suspicion=Suspicion(settings.store.suspect_for_s),
            chunk=settings.store.write_chunk,
            parker=None,
            dead_letters=DeadLetters(producer, settings.kafka.deadletter_topic),
            outages=state.outages,
            applied=applied,
            role="recovery",
        )
        supervisor = DrainSupervisor(
            functools.partial(
                _drain_region,
                settings=settings,
                applier=applier,
                producer=producer,
                outages=state.outages,
            )
        )
        stack.push_async_callback(supervisor.stop_all)
        changes = StatusChanges(redis, board)
        changes.start()
        stack.push_async_callback(changes.stop)
        backlog = BacklogProbe(settings.kafka, name)
        await backlog.start()
        stack.push_async_callback(backlog.close)
        parked = parked_reader(settings.kafka, name, backlog)
        await parked.start()
        stack.push_async_callback(parked.close)
        for region in settings.region_map.names:
            DRAINING.labels(region=region).set(0)
        seen = -1
        while not state.stop.is_set():
            try:
                statuses = await board.read()
                supervisor.reconcile(statuses)
                _report_statuses(statuses)
                state.ready = True
            except RedisError as error:
                state.outages.failed("redis", f"statuses unreadable: {error}")
            state.details["draining"] = supervisor.draining
            await _sample_backlog(backlog, parked, settings, state.outages)
            seen = await _next_change(changes, seen, settings.resync_interval_s, state.stop)


def _report_statuses(statuses: dict[str, NodeStatus]) -> None:
    for region, current in statuses.items():
        for status in NodeStatus:
            REGION_STATUS.labels(region=region, status=status.value).set(status is current)


async def _sample_backlog(
    backlog: BacklogProbe, parked: ParkedReader, settings: RecoverySettings, outages: Outages
) -> None:
    counts = await backlog.backlog(settings.region_map.names)
    for region, count in counts.items():
        if count is not None:
            PENDING.labels(region=region).set(count)
            await _sample_age(parked, region, count)
    # Every count read is the proof an idle recovery has that Kafka answers again.
    if all(count is not None for count in counts.values()):
        outages.ok("kafka")


async def _sample_age(parked: ParkedReader, region: str, count: int) -> None:
    if count == 0:
        PENDING_AGE.labels(region=region).set(0)
        return
    try:
        backlog = await parked.read(region, sample=0)
    except KafkaError as error:
        log.warning("parked age unavailable", extra={"region": region, "error": str(error)})
        return
    if backlog.oldest_ms is not None:
        PENDING_AGE.labels(region=region).set(backlog.oldest_age_s(int(time.time() * 1000)))


async def _next_change(
    changes: StatusChanges, seen: int, within_s: float, stop: asyncio.Event
) -> int:
    waiter = asyncio.create_task(changes.wait(seen, within_s))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not waiter.done():
        waiter.cancel()
        return seen
    return waiter.result()


async def _drain_region(
    region: str,
    stop: asyncio.Event,
    *,
    settings: RecoverySettings,
    applier: BatchApplier,
    producer: AIOKafkaProducer,
    outages: Outages,
) -> None:
    await drain(
        region,
        kafka=settings.kafka,
        applier=applier,
        producer=producer,
        outages=outages,
        stop=stop,
        retry_min_s=settings.retry_min_s,
        retry_max_s=settings.retry_max_s,
    )


def main() -> None:
    """Run recovery until SIGTERM."""
    settings = RecoverySettings()
    asyncio.run(run_service(settings, functools.partial(recover, settings)))
