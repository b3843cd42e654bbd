"""Producing records and awaiting Kafka's acknowledgements: the one way every producer of
regionstore does it, and what became of each record (acknowledged, unknown, or never sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata


class Outcome(StrEnum):
    """What became of a command handed to Kafka."""

    ACCEPTED = "accepted"
    """Acknowledged (acks=all): it will reach every region it targets."""
    UNKNOWN = "unknown"
    """In the producer's hands but not acknowledged in time: it may still land, or not."""
    NOT_SENT = "not_sent"
    """Refused before it entered the producer's buffer: Kafka never saw it."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one command, with the error behind anything but ACCEPTED."""

    outcome: Outcome
    error: BaseException | None = None
    position: int | None = None
    """Where Kafka appended an ACCEPTED command in its partition."""
    partition: int | None = None
    """Which partition that is."""
    waiting: bool = False
    """Still in the producer's hands when the wait ended: neither acknowledged nor failed."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce: its bytes, and the headers and partition it goes with, if any."""

    value: bytes | None
    key: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


def delivery_of(sent: asyncio.Future[Any] | BaseException) -> Delivery:
    """What became of one record handed to the producer: sent and acknowledged, or not."""
    if isinstance(sent, BaseException):
        return Delivery(Outcome.NOT_SENT, sent)
    if not sent.done():
        return Delivery(Outcome.UNKNOWN, TimeoutError("no acknowledgement in time"), waiting=True)
    if sent.cancelled():
        return Delivery(Outcome.UNKNOWN, asyncio.CancelledError("the producer gave up on it"))
    error = sent.exception()
    if error is not None:
        return Delivery(Outcome.UNKNOWN, error)
    metadata = sent.result()
    if not isinstance(metadata, RecordMetadata):
        return Delivery(Outcome.ACCEPTED)
    return Delivery(Outcome.ACCEPTED, position=metadata.offset, partition=metadata.partition)


async def deliver(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[Outgoing],
    *,
    timeout_s: float | None = None,
) -> list[Delivery]:
    """Hand every record to the producer, then await Kafka's acknowledgements together, for
    at most ``timeout_s`` (None: until each one is settled), and say what became of each.

    ``AIOKafkaProducer.send`` returns once the record is in the producer's buffer and raises
    only before that (no metadata for the topic, a full buffer, a closed or failed producer):
    such a record is NOT_SENT, and the others are still sent. Once buffered, the idempotent
    producer retries it until it is delivered, whatever the caller does, and a failed delivery
    may follow an attempt the broker did append: without an acknowledgement its outcome is
    UNKNOWN. A batch of records costs one round trip of waiting, not one each.
    """
    pending: list[asyncio.Future[Any] | BaseException] = []
    for record in records:
        # Only what is set is passed: the producer's own defaults stand for the rest.
        extra: dict[str, Any] = {}
        if record.headers:
            extra["headers"] = list(record.headers)
        if record.partition is not None:
            extra["partition"] = record.partition
        try:
            pending.append(await producer.send(topic, value=record.value, key=record.key, **extra))
        except KafkaError as error:
            pending.append(error)
    futures = [p for p in pending if not isinstance(p, BaseException)]
    if futures:
        # asyncio.wait, not a timeout around gather: the delivery futures belong to the
        # producer and must not be cancelled by an impatient caller.
        await asyncio.wait(futures, timeout=timeout_s)
    return [delivery_of(p) for p in pending]


def raise_unless_acknowledged(deliveries: Sequence[Delivery]) -> None:
    """Raise the error of the first record Kafka did not acknowledge, if any."""
    for delivery in deliveries:
        if delivery.outcome is not Outcome.ACCEPTED:
            raise delivery.error or RuntimeError("not acknowledged")
