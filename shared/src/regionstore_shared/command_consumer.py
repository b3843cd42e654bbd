"""The writer's and the replicator's consumer: the clients it opens and the loop it runs.

Each routes the command topic through its group's placement tables
(:mod:`regionstore_shared.placement_log`) and applies the targets of its role: the writer the
home region's upsert, the replicator every other target.
"""

from __future__ import annotations

import contextlib
import logging

from regionstore_shared import metrics
from regionstore_shared.applied_totals import AppliedCounter
from regionstore_shared.apply import BatchApplier
from regionstore_shared.clients import kafka_consumer, open_core
from regionstore_shared.health import HealthReports, ReportingSuspicion
from regionstore_shared.indexes import ensure_indexes
from regionstore_shared.parking import KafkaParker
from regionstore_shared.personal_keys import open_keyring
from regionstore_shared.pipeline import DeadLetters, PartitionOwnership, run_batches
from regionstore_shared.placement_local import LocalTables
from regionstore_shared.placement_log import KafkaTableStore, PlacementLog
from regionstore_shared.runtime import ServiceState
from regionstore_shared.schemas import Applier
from regionstore_shared.settings import CommonSettings
from regionstore_shared.status import StatusBoard
from regionstore_shared.status_events import StatusChanges, WatchedStatuses
from regionstore_shared.topics import ensure_copartitioned, ensure_topics

log = logging.getLogger(__name__)


async def consume_commands(
    settings: CommonSettings, *, role: Applier, group_id: str, state: ServiceState
) -> None:
    """Apply the command topic's targets that ``role`` applies until asked to stop."""
    name = settings.service_name
    tables = settings.kafka.placement_topic(group_id)
    await ensure_topics(settings)
    await ensure_copartitioned(settings, settings.kafka.command_topic, tables)
    async with contextlib.AsyncExitStack() as stack:
        redis, collections, producer = await open_core(stack, settings, name)
        state.details["indexes"] = await ensure_indexes(collections)
        keyring = await open_keyring(stack, settings)
        local = LocalTables(settings.state_dir, group=group_id, cache_mib=settings.state_cache_mib)
        stack.callback(local.close)
        placement = PlacementLog(
            KafkaTableStore(settings.kafka, group=group_id, client_id=name),
            local,
            group=group_id,
            role=role,
            regions=settings.region_map.names,
        )
        stack.push_async_callback(placement.close)
        await placement.start()
        ownership = PartitionOwnership(group_id, placement)
        consumer = kafka_consumer(
            settings.kafka,
            settings.kafka.command_topic,
            group_id=group_id,
            client_id=name,
            listener=ownership,
            gather=True,
        )
        # Stopped even when its start fails: a start that failed after bootstrapping leaves
        # connections and a metadata task behind.
        stack.push_async_callback(consumer.stop)
        await consumer.start()
        dead_letters = DeadLetters(producer, settings.kafka.deadletter_topic)
        metrics.expect_dead_letters(settings.kafka.command_topic, settings.region_map.names)
        applied = AppliedCounter(redis, settings.redis.applied_key, outages=state.outages)
        applied.start()
        stack.push_async_callback(applied.stop)
        reports = HealthReports(redis, settings.redis.health_key, name)
        reports.start()
        stack.push_async_callback(reports.stop)
        board = StatusBoard(redis, settings.redis, settings.region_map.names, outages=state.outages)
        changes = StatusChanges(redis, board)
        changes.start()
        stack.push_async_callback(changes.stop)
        applier = BatchApplier(
            collections=collections,
            status=WatchedStatuses(board, changes),
            suspicion=ReportingSuspicion(settings.store.suspect_for_s, reports),
            chunk=settings.store.write_chunk,
            parker=KafkaParker(producer, settings.kafka),
            dead_letters=dead_letters,
            outages=state.outages,
            applied=applied,
            role=role.value,
            keyring=keyring,
        )
        state.ready = True
        log.info("consuming commands", extra={"group": group_id, "role": role.value})
        await run_batches(
            consumer,
            group=group_id,
            applier=applier,
            routing=placement,
            dead_letters=dead_letters,
            stop=state.stop,
            role=role.value,
            ownership=ownership,
            outages=state.outages,
            poll_timeout_ms=settings.kafka.idle_poll_ms,
            commit_interval_ms=settings.kafka.commit_interval_ms,
        )
