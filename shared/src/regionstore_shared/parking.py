"""Parking: commands for a region that cannot take them wait, parked, in its parking topic
(``pending.<region>``) until recovery replays them."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from regionstore_shared.apply import Envelope
from regionstore_shared.delivery import Outgoing, deliver, raise_unless_acknowledged
from regionstore_shared.schemas import encode_command
from regionstore_shared.settings import KafkaSettings


class KafkaParker:
    """Parks commands in ``pending.<region>``; returns only once Kafka acknowledged all of them."""

    def __init__(self, producer: AIOKafkaProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._settings = settings

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None:
        """Produce every envelope's command, as routed (its effective version and position),
        to the region's parking topic, with its trace headers: the drain continues its trace."""
        topic = self._settings.pending_topic(region)
        reason_header = ("regionstore-park-reason", reason.encode())
        outgoing = [
            Outgoing(
                encode_command(envelope.command),
                envelope.command.key.encode(),
                [reason_header, *envelope.trace],
            )
            for envelope in envelopes
        ]
        raise_unless_acknowledged(await deliver(self._producer, topic, outgoing))
