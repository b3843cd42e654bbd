"""The Kafka topics regionstore uses, created idempotently at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from regionstore_shared.settings import CommonSettings

log = logging.getLogger(__name__)


def all_topics(settings: CommonSettings) -> list[str]:
    """The command topic, the dead-letter topic and one pending topic per region."""
    kafka = settings.kafka
    return [
        kafka.command_topic,
        kafka.deadletter_topic,
        *(kafka.pending_topic(region) for region in settings.region_map.names),
    ]


def _topic_config(settings: CommonSettings, name: str) -> dict[str, str]:
    config = {"min.insync.replicas": str(min(2, settings.kafka.replication_factor))}
    if name.startswith(settings.kafka.pending_topic_prefix):
        # A parked command is an acknowledged write that has not reached its region yet:
        # it must wait however long the region stays down.
        config |= {"retention.ms": "-1", "retention.bytes": "-1"}
    return config


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create any missing topic; existing topics are left as they are."""
    kafka = settings.kafka
    wanted = list(names) if names is not None else all_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{settings.service_name}-admin",
        request_timeout_ms=kafka.request_timeout_ms,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                name=name,
                num_partitions=kafka.partitions,
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
