"""Replays one region's pending topic into the region, from its recovery group's offsets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import Counter, Gauge

from regionstore_recovery.pacing import DrainPacer, PacingSettings
from regionstore_shared.apply import BatchApplier, RegionUnavailableError
from regionstore_shared.clients import kafka_consumer
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

    A command is parked in a region's pending topic only where a consumer routed it, so the
    region must end in line with it: its own target there, or a tombstone if it names none
    (a region added to the map after the command was made, which the customer had left).
    """

    def __init__(self, region: str) -> None:
        self.region = region

    def __call__(self, command: Command) -> Iterable[Target]:
        own = [target for target in command.targets if target.region == self.region]
        return own or [Target(region=self.region, role=Applier.REPLICATOR, action=Action.TOMBSTONE)]


class PacedRouting:
    """The region's targets, with the store time of each batch told to the pacer.

    ``run_batches`` routes a batch just before applying it and commits it just after, so
    those two calls bracket the batch's store requests.
    """

    def __init__(self, routing: Routing, pacer: DrainPacer) -> None:
        self._routing = routing
        self._pacer = pacer
        self.wait_s = 0.0

    @property
    def rate(self) -> float:
        """The pacer's rate, in commands per second."""
        return self._pacer.rate

    async def route(self, batch: Batch) -> RoutedBatch:
        routed = await self._routing.route(batch)
        self._pacer.started()
        return routed

    async def commit(self, consumer: AIOKafkaConsumer, batch: Batch, group: str) -> bool:
        self.wait_s = self._pacer.applied(len(batch.envelopes))
        return await self._routing.commit(consumer, batch, group)

    def discard(self) -> None:
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
    store_chunk: int = 250,
) -> None:
    """Drain until ``stop``; a failed batch is not committed and is retried after a pause.

    The first pause of a run of failures is a warning and the retries after it are debug
    lines: the applier already reports the region down, then back, through ``outages``.
    With ``pacing`` enabled, batches hold at most ``pacing.batch_records`` commands and each
    waits as long as a fresh pacer says before the next (see regionstore_recovery.pacing);
    ``store_chunk`` is the applier's commands per store request.
    """
    group = kafka.recovery_group(region)
    routing: Routing = FixedTargets(TargetsIn(region))
    paced = None
    if pacing is not None and pacing.enabled:
        kafka = kafka.model_copy(update={"max_batch_records": pacing.batch_records})
        paced = PacedRouting(routing, DrainPacer(pacing, chunk=store_chunk))
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
