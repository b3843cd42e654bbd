"""What became of a record handed to a Kafka producer: acknowledged, unknown, or never sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

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


def delivery_of(sent: asyncio.Future[object] | BaseException) -> Delivery:
    """What became of one record handed to the producer: sent and acknowledged, or not."""
    if isinstance(sent, BaseException):
        return Delivery(Outcome.NOT_SENT, sent)
    if not sent.done():
        return Delivery(Outcome.UNKNOWN, TimeoutError("no acknowledgement in time"))
    if sent.cancelled():
        return Delivery(Outcome.UNKNOWN, asyncio.CancelledError("the producer gave up on it"))
    error = sent.exception()
    if error is not None:
        return Delivery(Outcome.UNKNOWN, error)
    metadata = sent.result()
    position = metadata.offset if isinstance(metadata, RecordMetadata) else None
    return Delivery(Outcome.ACCEPTED, position=position)
