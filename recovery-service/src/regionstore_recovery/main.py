"""Replays parked commands into regions that came back, woken by Redis keyspace events, and
deletes them from the parking topics once drained."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_recovery.detection import DetectionLoop, Lease, StoreProbe
from regionstore_recovery.detector import Detector, Thresholds
from regionstore_recovery.drainer import (
    DRAINING,
    PENDING,
    PENDING_AGE,
    REGION_STATUS,
    PointRead,
    drain,
)
from regionstore_recovery.repair_wiring import start_repair
from regionstore_recovery.settings import RecoverySettings
from regionstore_recovery.supervisor import DrainSupervisor
from regionstore_recovery.trimmer import HELD, Trimmer
from regionstore_shared import metrics
from regionstore_shared.applied_totals import AppliedCounter
from regionstore_shared.apply import BatchApplier
from regionstore_shared.audit_trail import AuditTrail
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clients import customers, kafka_admin, mongo_client, open_core
from regionstore_shared.documents import Collection
from regionstore_shared.health import HealthFeed, HealthReports, ReportingSuspicion
from regionstore_shared.logs import Outages
from regionstore_shared.parked import ParkedReader, parked_reader
from regionstore_shared.personal_keys import open_keyring
from regionstore_shared.pipeline import DeadLetters
from regionstore_shared.runtime import ServiceState, run_service
from regionstore_shared.status import RegionStatus, StatusBoard
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
        reports = HealthReports(redis, settings.redis.health_key, name)
        reports.start()
        stack.push_async_callback(reports.stop)
        # No parker: a region that cannot be written stops its drain, which retries later.
        # A command the region refuses for good is dead-lettered, or it would be replayed
        # forever and hold back every command parked after it.
        for region in settings.region_map.names:
            metrics.expect_dead_letters(settings.kafka.pending_topic(region), [region])
        applier = BatchApplier(
            collections=collections,
            status=board,
            suspicion=ReportingSuspicion(settings.store.suspect_for_s, reports),
            chunk=settings.store.write_chunk,
            parker=None,
            dead_letters=DeadLetters(producer, settings.kafka.deadletter_topic),
            outages=state.outages,
            applied=applied,
            role="recovery",
            keyring=await open_keyring(stack, settings),
        )
        supervisor = DrainSupervisor(
            functools.partial(
                _drain_region,
                settings=settings,
                applier=applier,
                producer=producer,
                outages=state.outages,
                collections=collections,
            )
        )
        stack.push_async_callback(supervisor.stop_all)
        changes = StatusChanges(redis, board)
        changes.start()
        stack.push_async_callback(changes.stop)
        backlog = BacklogProbe(settings.kafka, name)
        await backlog.start()
        stack.push_async_callback(backlog.close)
        if settings.detector.enabled:
            await _start_detector(stack, settings, redis, board, producer, state)
        if settings.repair.enabled:
            start_repair(
                stack, settings, redis, board, collections, producer, applier, backlog, state
            )
        admin = kafka_admin(settings.kafka, f"{name}-trim")
        await admin.start()
        stack.push_async_callback(admin.close)
        trimmer = Trimmer(admin, timeout_ms=settings.kafka.request_timeout_ms)
        parked = parked_reader(settings.kafka, name, backlog)
        await parked.start()
        stack.push_async_callback(parked.close)
        for region in settings.region_map.names:
            DRAINING.labels(region=region).set(0)
        seen = -1
        while not state.stop.is_set():
            try:
                records = await board.read_records()
                supervisor.reconcile({r: record.status.traffic for r, record in records.items()})
                _report_statuses({r: record.status for r, record in records.items()})
                state.ready = True
            except RedisError as error:
                state.outages.failed("redis", f"statuses unreadable: {error}")
            state.details["draining"] = supervisor.draining
            await _sample_backlog(backlog, trimmer, parked, settings, state.outages)
            seen = await _next_change(changes, seen, settings.resync_interval_s, state.stop)


async def _start_detector(
    stack: contextlib.AsyncExitStack,
    settings: RecoverySettings,
    redis: Redis,
    board: StatusBoard,
    producer: AIOKafkaProducer,
    state: ServiceState,
) -> None:
    """Run the failure detector beside the drains until the service stops."""
    config = settings.detector
    # Probes have clients of their own, whose deadlines are the probe's, so a probe neither
    # waits behind a drain's writes nor for the writes' longer server selection.
    timeout_ms = max(100, round(config.probe_timeout_s * 1000))
    store = settings.store.model_copy(
        update={"server_selection_timeout_ms": timeout_ms, "socket_timeout_ms": timeout_ms}
    )
    collections = {}
    for region in settings.region_map.names:
        client = mongo_client(settings.stores[region], store, f"{settings.service_name}-probe")
        stack.push_async_callback(client.close)
        collections[region] = customers(client, store)
    lease = Lease(redis, config.lease_key, config.lease_ttl_s)
    stack.push_async_callback(lease.release)
    loop = DetectionLoop(
        Detector(
            Thresholds(
                failures=config.failures,
                window_s=config.window_s,
                healthy_probes=config.healthy_probes,
                healthy_for_s=config.healthy_for_s,
            )
        ),
        statuses=board,
        reports=HealthFeed(redis, settings.redis.health_key),
        probe=StoreProbe(collections, config.probe_timeout_s),
        lease=lease,
        trail=AuditTrail(
            producer,
            settings.kafka.audit_topic,
            timeout_s=settings.kafka.request_timeout_ms / 1000,
        ),
    )
    task = asyncio.create_task(loop.run(config.probe_interval_s, state.stop), name="detector")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


def _report_statuses(statuses: dict[str, RegionStatus]) -> None:
    for region, current in statuses.items():
        for status in RegionStatus:
            REGION_STATUS.labels(region=region, status=status.value).set(status is current)


async def _sample_backlog(
    backlog: BacklogProbe,
    trimmer: Trimmer,
    parked: ParkedReader,
    settings: RecoverySettings,
    outages: Outages,
) -> None:
    """Sample each region's backlog and its oldest command's age, and delete what its drains
    took from its parking topic."""
    pending = await backlog.pending(settings.region_map.names)
    for region, offsets in pending.items():
        if offsets is None:
            continue
        count = sum(o.backlog for o in offsets.values())
        PENDING.labels(region=region).set(count)
        await _sample_age(parked, region, count)
        try:
            deleted = await trimmer.trim(region, offsets)
        except KafkaError as error:
            deleted = 0
            log.warning(
                "drained commands not deleted; the next resync tries again",
                extra={"region": region, "error": str(error)},
            )
        HELD.labels(region=region).set(sum(o.end - o.start for o in offsets.values()) - deleted)
    # Every count read is the proof an idle recovery has that Kafka answers again.
    if all(offsets is not None for offsets in pending.values()):
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
    collections: Mapping[str, Collection],
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
        pacing=settings.pacing,
        probe=PointRead(collections[region], settings.pacing.probe_timeout_s),
    )


def main() -> None:
    """Run recovery until SIGTERM."""
    settings = RecoverySettings()
    asyncio.run(run_service(settings, functools.partial(recover, settings)))
