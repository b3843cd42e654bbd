"""What a chaos round proves besides the stores' audit: no command that was not acknowledged.

Every version that reached the command topic for the round's customers must be one the gateway
acknowledged. A version nobody acknowledged is a write answered "not accepted" that was taken
anyway, or a retry that published a second version instead of the first one again.

The repair (after a wiped region) publishes again what a region holds, at the version the
consumers applied it: above the gateway's when a gateway's clock was behind another's
(docs/design.md). Its commands are told apart by their header, and each must be a write some
gateway acknowledged, by command id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from regionstore_recovery.repair_sinks import REPAIR_HEADER
from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.schemas import decode_command
from regionstore_shared.settings import KafkaSettings

Offsets = dict[TopicPartition, int]


@dataclass
class TopicCheck:
    """The round's commands as the topic holds them, against the acknowledged versions."""

    commands: int = 0
    repaired: int = 0
    """The repair's commands, each an acknowledged write published again."""
    unacknowledged: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Every published version acknowledged, every acknowledged one published."""
        return not (self.unacknowledged or self.missing)


def _consumer(settings: KafkaSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_connection(settings),
        enable_auto_commit=False,
        client_id="regionstore-chaos",
    )


async def end_offsets(settings: KafkaSettings, topic: str | None = None) -> Offsets:
    """Where the command topic (or ``topic``) ends now, per partition."""
    name = topic or settings.command_topic
    admin = kafka_admin(settings, "regionstore-chaos")
    await admin.start()
    try:
        described = await admin.describe_topics([name])
    finally:
        await admin.close()
    wanted = [
        TopicPartition(name, p["partition"]) for each in described for p in each["partitions"]
    ]
    if not wanted:
        raise AssertionError(f"topic {name} has no partitions: {described}")
    consumer = _consumer(settings)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(wanted))
    finally:
        await consumer.stop()


async def check_topic(
    settings: KafkaSettings,
    start: Offsets,
    prefix: str,
    acked: dict[str, set[int]],
    acked_commands: dict[str, set[str]],
) -> TopicCheck:
    """Read the command topic from ``start`` to its end and compare with ``acked`` (versions)
    and, for the repair's commands, ``acked_commands`` (command ids)."""
    published: dict[str, set[int]] = {}
    check = TopicCheck()
    consumer = _consumer(settings)
    await consumer.start()
    try:
        end = await consumer.end_offsets(list(start))
        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        remaining = {p for p in start if end[p] > start[p]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    if any(name == REPAIR_HEADER for name, _ in record.headers or ()):
                        _note_repair(record.value, prefix, acked_commands, check)
                    else:
                        _note(record.value, prefix, published, check)
            for partition in list(remaining):
                if await consumer.position(partition) >= end[partition]:
                    remaining.discard(partition)
    finally:
        await consumer.stop()
    for customer_id in published.keys() | acked.keys():
        extra = published.get(customer_id, set()) - acked.get(customer_id, set())
        missing = acked.get(customer_id, set()) - published.get(customer_id, set())
        check.unacknowledged += len(extra)
        check.missing += len(missing)
        for version in sorted(extra)[:1]:
            _example(check, f"{customer_id} v{version} published, never acknowledged")
        for version in sorted(missing)[:1]:
            _example(check, f"{customer_id} v{version} acknowledged, not in the topic")
    return check


def _note(value: bytes, prefix: str, published: dict[str, set[int]], check: TopicCheck) -> None:
    try:
        command = decode_command(value)
    except (ValidationError, ValueError):
        return  # another writer's bytes: the dead-letter path, not this round's concern
    if command.key.startswith(prefix):
        check.commands += 1
        published.setdefault(command.key, set()).add(command.version)


def _note_repair(
    value: bytes, prefix: str, acked_commands: dict[str, set[str]], check: TopicCheck
) -> None:
    command = decode_command(value)
    if not command.key.startswith(prefix):
        return
    check.repaired += 1
    if str(command.command_id) not in acked_commands.get(command.key, set()):
        check.unacknowledged += 1
        _example(check, f"{command.key} {command.command_id} republished by the repair, unacked")


def _example(check: TopicCheck, text: str) -> None:
    if len(check.examples) < 10:
        check.examples.append(text)
