"""Replays one region's parking topic into the region, from its recovery group's offsets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from pymongo.errors import PyMongoError

from regionstore_recovery.detection import PROBE_ID
from regionstore_recovery.pacing import DrainPacer, PacingSettings
from regionstore_shared.apply import BatchApplier, RegionUnavailableError
from regionstore_shared.clients import kafka_consumer
from regionstore_shared.documents import Collection
from regionstore_shared.logs import Outages
from regionstore_shared.pipeline import (
    Batch,
    DeadLetters,
    FixedTargets,
    PartitionOwnership,
    RoutedBatch,
    Routing,
    run_batches,
)
from regionstore_shared.schemas import Action, Applier, Command, Target
from regionstore_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

DRAINED = Counter(
    "regionstore_drained_messages_total", "Parked messages replayed into a region.", ["region"]
)
PENDING = Gauge(
    "regionstore_pending_backlog_messages",
    "Parked commands a region has not replayed yet (sampled at every resync).",
    ["region"],
)
PENDING_AGE = Gauge(
    "regionstore_pending_oldest_age_seconds",
    "How long the oldest parked command of a region has waited, from when it was parked;"
    " 0 when nothing is parked (sampled at every resync).",
    ["region"],
)
DRAINING = Gauge("regionstore_drain_active", "1 while a region's drainer runs.", ["region"])
DRAIN_DELAY = Histogram(
    "regionstore_drain_store_delay_seconds",
    "How much longer than its least time over the last minute a point read of a region took"
    " while a paced drain wrote a batch: the delay the region's load adds, which paces it.",
    ["region"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
DRAIN_RATE = Gauge(
    "regionstore_drain_rate_limit",
    "Commands per second a paced drain may replay into a region now; 0 when not paced.",
    ["region"],
)
REGION_STATUS = Gauge(
    "regionstore_region_status",
    "1 for a region's current status, 0 for the others (read from Redis at every resync).",
    ["region", "status"],
)


class TargetsIn:
    """Selects what a parked command does to its region, whatever the target's role.

    A command is parked in a region's parking topic only where a consumer routed it, so the
    region must end in line with it: its own target there, or a tombstone if it names none
    (a region added to the map after the command was made, which the customer had left).
    """

    def __init__(self, region: str) -> None:
        self.region = region

    def __call__(self, command: Command) -> Iterable[Target]:
        own = [target for target in command.targets if target.region == self.region]
        return own or [Target(region=self.region, role=Applier.REPLICATOR, action=Action.TOMBSTONE)]


Probe = Callable[[], Coroutine[Any, Any, float]]


class PointRead:
    """Times a point read of one region's store: what a live write waits for the store now."""

    def __init__(self, collection: Collection, timeout_s: float) -> None:
        self._collection = collection
        self._timeout_s = timeout_s

    async def __call__(self) -> float:
        """Seconds the read took; the timeout when it failed or did not answer in time."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._collection.find_one({"_id": PROBE_ID}, {"_id": 1})
        except (TimeoutError, PyMongoError):
            return self._timeout_s
        return time.perf_counter() - started


class PacedRouting:
    """The region's targets, with each batch's store delay told to the pacer.

    ``run_batches`` routes a batch just before applying it and commits it just after, so
    the point read started at the route meets the store while the batch is written.
    """

    def __init__(self, region: str, routing: Routing, pacer: DrainPacer, probe: Probe) -> None:
        self._region = region
        self._routing = routing
        self._pacer = pacer
        self._probe = probe
        self._timing: asyncio.Task[float] | None = None
        self.wait_s = 0.0

    @property
    def rate(self) -> float:
        """The pacer's rate, in commands per second."""
        return self._pacer.rate

    async def route(self, batch: Batch) -> RoutedBatch:
        routed = await self._routing.route(batch)
        self._pacer.started()
        self._timing = asyncio.create_task(self._probe(), name="drain-probe")
        return routed

    async def commit(self, consumer: AIOKafkaConsumer, batch: Batch, group: str) -> bool:
        probe_s = await self._timing if self._timing is not None else 0.0
        self._timing = None
        self.wait_s = self._pacer.applied(len(batch.envelopes), probe_s)
        DRAIN_DELAY.labels(region=self._region).observe(self._pacer.delay_s)
        return await self._routing.commit(consumer, batch, group)

    def discard(self) -> None:
        if self._timing is not None:
            self._timing.cancel()
            self._timing = None
        self._routing.discard()


async def drain(
    region: str,
    *,
    kafka: KafkaSettings,
    applier: BatchApplier,
    producer: AIOKafkaProducer,
    stop: asyncio.Event,
    retry_min_s: float,
    retry_max_s: float,
    outages: Outages | None = None,
    pacing: PacingSettings | None = None,
    probe: Probe | None = None,
) -> None:
    """Drain until ``stop``; a failed batch is not committed and is retried after a pause.

    The first pause of a run of failures is a warning and the retries after it are debug
    lines: the applier already reports the region down, then back, through ``outages``.
    With ``pacing`` enabled and a ``probe`` of the region's store, batches hold at most
    ``pacing.batch_records`` commands and each waits as long as a fresh pacer says before
    the next (see regionstore_recovery.pacing).
    """
    group = kafka.recovery_group(region)
    routing: Routing = FixedTargets(TargetsIn(region))
    paced = None
    if pacing is not None and pacing.enabled and probe is not None:
        kafka = kafka.model_copy(update={"max_batch_records": pacing.batch_records})
        paced = PacedRouting(region, routing, DrainPacer(pacing), probe)
    # Normally one recovery process drains a region; a second one (a restart overlapping its
    # predecessor, a scaled deployment) rebalances the group like any consumer's.
    ownership = PartitionOwnership(group)
    consumer = kafka_consumer(
        kafka,
        kafka.pending_topic(region),
        group_id=group,
        client_id=f"recovery-{region}",
        listener=ownership,
    )
    try:
        await consumer.start()
    except BaseException:
        # A start that failed after bootstrapping leaves connections and a metadata task
        # behind, and the supervisor starts a new drain at every resync while Kafka fails.
        await consumer.stop()
        raise
    DRAINING.labels(region=region).set(1)
    log.info("drain started", extra={"region": region, "group": group})
    pause = retry_min_s
    pauses = 0

    async def progressed(count: int) -> None:
        nonlocal pause, pauses
        if pauses:
            log.info("drain resumed", extra={"region": region, "pauses": pauses})
        pause, pauses = retry_min_s, 0
        DRAINED.labels(region=region).inc(count)
        if paced is not None:
            DRAIN_RATE.labels(region=region).set(paced.rate)
            await _paused(paced.wait_s, stop)

    try:
        while not stop.is_set():
            try:
                await run_batches(
                    consumer,
                    group=group,
                    applier=applier,
                    routing=paced if paced is not None else routing,
                    dead_letters=DeadLetters(producer, kafka.deadletter_topic),
                    stop=stop,
                    role="recovery",
                    ownership=ownership,
                    on_batch=progressed,
                    outages=outages,
                )
            except RegionUnavailableError as error:
                pauses += 1
                log.log(
                    logging.WARNING if pauses == 1 else logging.DEBUG,
                    "drain paused",
                    extra={"region": region, "reason": error.reason, "retry_s": pause},
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await stop.wait()
                pause = min(pause * 2, retry_max_s)
    finally:
        DRAINING.labels(region=region).set(0)
        DRAIN_RATE.labels(region=region).set(0)
        await consumer.stop()
        log.info("drain stopped", extra={"region": region})


async def _paused(seconds: float, stop: asyncio.Event) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
