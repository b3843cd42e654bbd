"""The Kafka topics regionstore uses, created idempotently at start-up.

How long a topic keeps its records is part of what regionstore promises (a parked command until
its region took it, a dead letter until a person saw to it), so a topic an earlier release made
is brought in line at start-up too: see :func:`ensure_topics`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code
from aiokafka.partitioner import murmur2

from regionstore_shared.clients import kafka_admin
from regionstore_shared.settings import CommonSettings

log = logging.getLogger(__name__)


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed ``key`` (a customer id)
    in a topic of ``partitions``."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


# The settings that say how long a topic keeps its records, and whose clock stamps them; the
# only ones changed on a topic that already exists.
RETENTION_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes", "message.timestamp.type")
_KEPT = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
# DescribeConfigs v1+: a value set on the topic itself (not a broker's or Kafka's default).
_DYNAMIC_TOPIC_CONFIG = 1


def all_topics(settings: CommonSettings) -> list[str]:
    """The command, dead-letter, redrive and audit topics, one parking topic per region, and
    the writer's and the replicator's placement tables."""
    kafka = settings.kafka
    return [
        kafka.command_topic,
        kafka.deadletter_topic,
        kafka.redrive_topic,
        kafka.audit_topic,
        kafka.key_topic,
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
    config = {
        "min.insync.replicas": str(min(2, settings.kafka.replication_factor)),
        # The broker stamps each record as it appends it. A producer's own clock far ahead
        # would have its records refused (a broker refuses timestamps over an hour ahead by
        # default): a writer a day ahead could not commit its placement table and exited, and
        # a gateway could not publish. It would also age its records out late.
        "message.timestamp.type": "LogAppendTime",
    }
    if name.startswith(settings.kafka.pending_topic_prefix):
        # A parked command is an acknowledged write that has not reached its region yet: it
        # must wait however long the region stays down. Recovery deletes it once drained.
        config |= _KEPT
    if name == settings.kafka.deadletter_topic:
        # A dead letter may be an acknowledged write no region took: it waits for a person
        # however long that takes, never the broker's 7 days.
        config |= _KEPT
    if name == settings.kafka.redrive_topic:
        # One entry per redriven dead letter, kept as long as the dead letters are.
        config |= {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
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
    if name == settings.kafka.key_topic:
        config |= key_topic_config(settings)
    if name == settings.kafka.audit_topic:
        # The audit trail is a record of who did what: nothing ages out of it.
        config |= _KEPT
    return config


def key_topic_config(settings: CommonSettings) -> dict[str, str]:
    """The key topic's settings: a key is kept until destroyed, and a destroyed one is gone
    from the log within the erasure bound.

    Compaction cleans only closed segments: a segment closes after a quarter of the bound, the
    cleaner must reach a dirty record within another quarter, and the tombstone (which holds no
    secret) goes a quarter after that. A consumer's key table not followed for as long is read
    again whole (:class:`~regionstore_shared.personal_keys.KeyTable`).
    """
    quarter = str(key_tombstone_ms(settings))
    return {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "segment.ms": quarter,
        "max.compaction.lag.ms": quarter,
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": quarter,
        "min.cleanable.dirty.ratio": "0.01",
        # As on the command topic: a gateway whose clock is far ahead must not have its keys
        # refused, nor their compaction (timed by the records' timestamps) put off.
        "message.timestamp.type": "LogAppendTime",
    }


def key_tombstone_ms(settings: CommonSettings) -> int:
    """How long a destroyed key's tombstone stays in the key topic: a quarter of the bound."""
    return int(settings.erasure_within.total_seconds() * 1000 / 4)


def _partitions(settings: CommonSettings, name: str) -> int:
    # One partition keeps the audit trail in one total order.
    return 1 if name == settings.kafka.audit_topic else settings.kafka.partitions


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create any missing topic, and give existing ones the retention they should have.

    Only :data:`RETENTION_CONFIGS` are changed on an existing topic, and only where they
    differ; every other setting made on the topic is kept. Safe to run from every process
    at every start.
    """
    kafka = settings.kafka
    wanted = list(names) if names is not None else all_topics(settings)
    admin = kafka_admin(kafka, f"{settings.service_name}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await _create(admin, settings, missing)
        if present := [name for name in wanted if name in existing]:
            await _reconcile(admin, settings, present)
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, settings: CommonSettings, names: list[str]) -> None:
    new = [
        NewTopic(
            name=name,
            num_partitions=_partitions(settings, name),
            replication_factor=settings.kafka.replication_factor,
            topic_configs=_topic_config(settings, name),
        )
        for name in names
    ]
    response = await admin.create_topics(new)
    for topic, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"cannot create topic {topic}")
    log.info("topics ensured", extra={"topics": names})


async def _reconcile(
    admin: AIOKafkaAdminClient, settings: CommonSettings, names: list[str]
) -> None:
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    changes = []
    for response in described:
        for code, message, _, name, entries in response.resources:
            if _refused(code, name, message, "read"):
                continue
            update = retention_update(
                settings, name, topic_settings(entries, legacy=response.API_VERSION == 0)
            )
            if update is not None:
                changes.append(ConfigResource(ConfigResourceType.TOPIC, name, update))
    if not changes:
        return
    changed = {}
    for response in await admin.alter_configs(changes):
        for code, message, _, name in response.resources:
            if not _refused(code, name, message, "change"):
                changed[name] = next(c.configs for c in changes if c.name == name)
    if changed:
        log.info("topic retention brought in line", extra={"topics": changed})


def _refused(code: int, topic: str, message: str | None, doing: str) -> bool:
    """Whether Kafka refused to let this process read or change ``topic``'s settings; raise
    any other error.

    Where topics belong to someone else (an operator's KafkaTopic, ACLs without
    AlterConfigs), the service runs on and says what to set by hand.
    """
    if not code:
        return False
    if code != TopicAuthorizationFailedError.errno:
        raise for_code(code)(f"cannot {doing} the settings of topic {topic}: {message}")
    log.error(
        "topic retention not checked: not authorized; give the topic the settings of "
        "regionstore_shared.topics by hand",
        extra={"topic": topic, "doing": doing},
    )
    return True


def topic_settings(
    entries: Iterable[tuple[object, ...]], *, legacy: bool
) -> dict[str, tuple[str, bool]]:
    """A DescribeConfigs answer's entries as ``{name: (value, set on the topic itself)}``.

    From v1 an entry says where its value comes from; v0 only whether it is a default.
    """
    found = {}
    for name, value, _read_only, source, *_ in entries:
        if value is None:
            continue
        own = not source if legacy else source == _DYNAMIC_TOPIC_CONFIG
        found[str(name)] = (str(value), own)
    return found


def retention_update(
    settings: CommonSettings, name: str, current: dict[str, tuple[str, bool]]
) -> dict[str, str] | None:
    """The whole set of settings to give topic ``name`` so that its retention is what
    :func:`_topic_config` says, or None when it already is.

    AlterConfigs replaces every setting made on a topic (aiokafka has no incremental
    variant), so the ones already set on the topic are sent again with the new ones.
    """
    # The key topic's settings all say how soon a destroyed key leaves it: all are ours.
    ours = key_topic_config(settings) if name == settings.kafka.key_topic else RETENTION_CONFIGS
    wanted = {key: value for key, value in _topic_config(settings, name).items() if key in ours}
    if all(current.get(key, ("", False))[0] == value for key, value in wanted.items()):
        return None
    own = {key: value for key, (value, is_own) in current.items() if is_own}
    return own | wanted


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
            "kept per partition of the command topic (see docs/scaling.md)"
        )
