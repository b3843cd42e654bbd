"""What is parked for a region: how many commands, since when, and for which customers.

A region's parked commands are the records of its parking topic past the committed offsets of
the one recovery group that drains it. Reading them does not disturb the drain: the reader
joins no group and commits nothing. Ages come from the records' Kafka timestamps, which are
set when a consumer parked the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clients import kafka_connection
from regionstore_shared.settings import KafkaSettings

PARK_REASON_HEADER = "regionstore-park-reason"


@dataclass(frozen=True, slots=True)
class ParkedCommand:
    """One parked command, as much of it as an operator needs to recognise it."""

    partition: int
    offset: int
    parked_at_ms: int
    customer_id: str
    kind: str | None
    """``upsert`` or ``delete``; None when the record is not a command this code knows."""
    reason: str | None
    """Why it was parked (the ``regionstore-park-reason`` header), when it says."""


@dataclass(frozen=True, slots=True)
class ParkedBacklog:
    """A region's parked commands at one reading."""

    region: str
    topic: str
    count: int
    oldest_ms: int | None
    """The Kafka timestamp of the oldest parked command; None when nothing is parked, or
    nothing could be read before the deadline."""
    sample: list[ParkedCommand]
    """The oldest parked commands, oldest first, at most as many as asked for."""

    def oldest_age_s(self, now_ms: int) -> float:
        """Seconds the oldest parked command has waited; 0 when nothing is parked."""
        return max(0.0, (now_ms - self.oldest_ms) / 1000) if self.oldest_ms is not None else 0.0


def parked_command(record: ConsumerRecord[bytes, bytes]) -> ParkedCommand:
    """A parking topic's record as a parked command; a record that does not decode still shows
    its key and timestamp."""
    kind: str | None = None
    try:
        body = json.loads(record.value or b"")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("kind"), str):
        kind = body["kind"]
    headers = dict(record.headers or ())
    reason = headers.get(PARK_REASON_HEADER)
    return ParkedCommand(
        partition=record.partition,
        offset=record.offset,
        parked_at_ms=record.timestamp,
        customer_id=(record.key or b"").decode("utf-8", "replace"),
        kind=kind,
        reason=reason.decode("utf-8", "replace") if reason is not None else None,
    )


def oldest_first(
    firsts: dict[int, list[ParkedCommand]], sample: int
) -> tuple[int | None, list[ParkedCommand]]:
    """The oldest timestamp among each partition's first commands, and the ``sample`` oldest
    commands read, oldest first."""
    heads = [commands[0].parked_at_ms for commands in firsts.values() if commands]
    merged = sorted(
        (c for commands in firsts.values() for c in commands),
        key=lambda c: (c.parked_at_ms, c.partition, c.offset),
    )
    return (min(heads) if heads else None), merged[:sample]


class ParkedReader:
    """Reads a region's parked commands from where its recovery group stands.

    ``probe`` gives where the group resumes and the end offsets; ``consumer``, in no group (see
    :func:`parked_reader`), fetches the first records past the committed ones.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        probe: BacklogProbe,
        consumer: AIOKafkaConsumer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._probe = probe
        self._consumer = consumer
        self._clock = clock

    async def start(self) -> None:
        """Connect the reader's consumer (the probe is started by its owner)."""
        await self._consumer.start()

    async def close(self) -> None:
        """Disconnect the reader's consumer."""
        await self._consumer.stop()

    async def read(self, region: str, *, sample: int, within_s: float = 10.0) -> ParkedBacklog:
        """The region's backlog: its count, its oldest command's timestamp and the ``sample``
        oldest commands; raises KafkaError when Kafka cannot say.

        Records are fetched for at most ``within_s``; what was read by then is answered.
        """
        topic = self._settings.pending_topic(region)
        offsets = await self._probe.offsets(topic, self._settings.recovery_group(region))
        waiting = {tp: (o.resume, o.end) for tp, o in offsets.items() if o.backlog}
        count = sum(end - start for start, end in waiting.values())
        if not waiting:
            return ParkedBacklog(region, topic, 0, None, [])
        firsts = await self._first_records(waiting, max(sample, 1), within_s)
        oldest, commands = oldest_first(firsts, sample)
        return ParkedBacklog(region, topic, count, oldest, commands)

    async def _first_records(
        self, waiting: dict[TopicPartition, tuple[int, int]], wanted: int, within_s: float
    ) -> dict[int, list[ParkedCommand]]:
        """Up to ``wanted`` records of each partition from its committed offset."""
        consumer = self._consumer
        consumer.assign(list(waiting))
        for tp, (start, _) in waiting.items():
            consumer.seek(tp, start)
        needed = {tp: min(wanted, end - start) for tp, (start, end) in waiting.items()}
        found: dict[int, list[ParkedCommand]] = {tp.partition: [] for tp in waiting}
        deadline = self._clock() + within_s
        while any(len(found[tp.partition]) < n for tp, n in needed.items()):
            left_s = deadline - self._clock()
            if left_s <= 0:
                break
            open_tps = [tp for tp, n in needed.items() if len(found[tp.partition]) < n]
            batches = await consumer.getmany(*open_tps, timeout_ms=int(min(left_s, 1.0) * 1000))
            for tp, records in batches.items():
                room = needed[tp] - len(found[tp.partition])
                found[tp.partition] += [parked_command(r) for r in records[:room]]
            # Pausing a partition that has enough keeps the next fetch to the others.
            consumer.pause(*[tp for tp, n in needed.items() if len(found[tp.partition]) >= n])
        consumer.unsubscribe()
        return found


def parked_reader(settings: KafkaSettings, client_id: str, probe: BacklogProbe) -> ParkedReader:
    """A reader with its own consumer, which reads only what is committed, like the drainer."""
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings),
        client_id=f"{client_id}-parked",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=settings.request_timeout_ms,
        # Recovery reads one record per partition at every resync while a region is down: a
        # fetch of 64 KiB, not the default 1 MiB, per partition.
        max_partition_fetch_bytes=64 * 1024,
    )
    return ParkedReader(settings, probe=probe, consumer=consumer)
