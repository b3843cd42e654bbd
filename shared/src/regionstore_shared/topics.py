"""The Kafka topics regionstore uses, created idempotently at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from regionstore_shared.clients import kafka_admin
from regionstore_shared.settings import CommonSettings

log = logging.getLogger(__name__)


def all_topics(settings: CommonSettings) -> list[str]:
    """The command, dead-letter and audit topics, one pending topic per region, and the
    writer's and the replicator's placement tables."""
    kafka = settings.kafka
    return [
        kafka.command_topic,
        kafka.deadletter_topic,
        kafka.audit_topic,
        *(kafka.pending_topic(region) for region in settings.region_map.names),
        *placement_topics(settings),
    ]


def placement_topics(settings: CommonSettings) -> list[str]:
    """The compacted topics of the writer's and the replicator's placement tables."""
    kafka = settings.kafka
    return [
        kafka.placement_topic(kafka.writer_group),
        kafka.placement_topic(kafka.replicator_group),
    ]


def _topic_config(settings: CommonSettings, name: str) -> dict[str, str]:
    config = {"min.insync.replicas": str(min(2, settings.kafka.replication_factor))}
    if name.startswith(settings.kafka.pending_topic_prefix):
        # A parked command is an acknowledged write that has not reached its region yet:
        # it must wait however long the region stays down.
        config |= {"retention.ms": "-1", "retention.bytes": "-1"}
    if name in placement_topics(settings):
        # One entry per customer, the newest: never aged out, or a move would miss a region.
        # Segments roll every 10 minutes: only closed ones are compacted, and a consumer reads
        # its tables whole at every start.
        config |= {
            "cleanup.policy": "compact",
            "retention.ms": "-1",
            "retention.bytes": "-1",
            "segment.ms": "600000",
        }
    if name == settings.kafka.command_topic:
        # The broker stamps each command as it appends it: a gateway whose clock is far ahead
        # would otherwise have its writes refused (a broker refuses timestamps over an hour
        # ahead by default), and age them out a day late.
        config |= {"message.timestamp.type": "LogAppendTime"}
    if name == settings.kafka.audit_topic:
        # The audit trail is a record of who did what: nothing ages out of it.
        config |= {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    return config


def _partitions(settings: CommonSettings, name: str) -> int:
    # One partition keeps the audit trail in one total order.
    return 1 if name == settings.kafka.audit_topic else settings.kafka.partitions


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create any missing topic; existing topics are left as they are."""
    kafka = settings.kafka
    wanted = list(names) if names is not None else all_topics(settings)
    admin = kafka_admin(kafka, f"{settings.service_name}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                name=name,
                num_partitions=_partitions(settings, name),
                replication_factor=kafka.replication_factor,
                topic_configs=_topic_config(settings, name),
            )
            for name in missing
        ]
        response = await admin.create_topics(new)
        for topic, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"cannot create topic {topic}")
        log.info("topics ensured", extra={"topics": missing})
    finally:
        await admin.close()


async def ensure_copartitioned(settings: CommonSettings, *names: str) -> None:
    """Raise unless the topics have as many partitions each: a placement table's partition p
    holds the customers of the command topic's partition p."""
    admin = kafka_admin(settings.kafka, f"{settings.service_name}-admin")
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
    if len(set(counts.values())) != 1:
        raise RuntimeError(
            f"topics {counts} must have the same number of partitions: a placement table is "
            "kept per partition of the command topic (see the README, Scaling)"
        )
