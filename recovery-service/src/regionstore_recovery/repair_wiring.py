"""How the recovery service starts the repair's background loop."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from regionstore_recovery.detection import Lease
from regionstore_recovery.repair import Options, Repairer
from regionstore_recovery.repair_loop import RepairLoop
from regionstore_recovery.repair_sinks import CommandTopic, GuardedTombstones
from regionstore_recovery.settings import RecoverySettings
from regionstore_shared.apply import BatchApplier
from regionstore_shared.audit_trail import AuditTrail
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.documents import Collection
from regionstore_shared.runtime import ServiceState
from regionstore_shared.status import StatusBoard


def start_repair(
    stack: contextlib.AsyncExitStack,
    settings: RecoverySettings,
    redis: Redis,
    board: StatusBoard,
    collections: dict[str, Collection],
    producer: AIOKafkaProducer,
    applier: BatchApplier,
    backlogs: BacklogProbe,
    state: ServiceState,
) -> None:
    """Run the repair beside the drains until the service stops."""
    config = settings.repair
    timeout_s = settings.kafka.request_timeout_ms / 1000
    repairer = Repairer(
        collections=collections,
        regions=settings.region_map,
        publisher=CommandTopic(producer, settings.kafka.command_topic, timeout_s=timeout_s),
        tombstones=GuardedTombstones(applier),
        trail=AuditTrail(producer, settings.kafka.audit_topic, timeout_s=timeout_s),
        options=Options(
            prefix=config.bucket_prefix,
            page=config.page,
            window=config.window,
            copies_per_s=config.copies_per_s,
            grace_s=config.grace_s,
            batch=config.batch,
        ),
    )
    lease = Lease(redis, config.lease_key, config.lease_ttl_s)
    stack.push_async_callback(lease.release)
    kafka = settings.kafka
    loop = RepairLoop(
        repairer,
        lease=lease,
        statuses=board,
        backlogs=backlogs,
        consumers={"writer": kafka.writer_group, "replicator": kafka.replicator_group},
        max_lag=config.max_lag,
        collections=collections,
    )
    task = asyncio.create_task(loop.run(config.interval_s, state.stop), name="repair")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
