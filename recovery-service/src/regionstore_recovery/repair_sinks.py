"""Where the repair's actions go: the command topic, and the one version-guarded apply."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from regionstore_shared.apply import BatchApplier, Envelope
from regionstore_shared.delivery import Outgoing, deliver, raise_unless_acknowledged
from regionstore_shared.schemas import Action, Applier, Command, Target, encode_command

# A header on every command the repair publishes, so a reader of the topic tells them apart.
REPAIR_HEADER = "regionstore-repair"


class CommandTopic:
    """Publishes commands with a started producer (acks=all, idempotent), keyed by customer."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def publish(self, commands: Sequence[Command]) -> None:
        """Hand every command to the producer, then wait for all their acknowledgements
        (bounded): one round trip per batch, not per command. Raises the first failure."""
        outgoing = [
            Outgoing(encode_command(command), command.key.encode(), [(REPAIR_HEADER, b"1")])
            for command in commands
        ]
        deliveries = await deliver(self._producer, self._topic, outgoing, timeout_s=self._timeout_s)
        if waiting := sum(delivery.waiting for delivery in deliveries):
            raise TimeoutError(f"{waiting} repair commands not acknowledged in time")
        raise_unless_acknowledged(deliveries)


class GuardedTombstones:
    """Writes tombstones through the shared apply: a document is replaced only by a higher
    version, so a tombstone older than what a region holds changes nothing."""

    def __init__(self, applier: BatchApplier) -> None:
        self._applier = applier

    async def tombstone(self, items: Sequence[tuple[Command, str]]) -> int:
        """Tombstone each command's customer in its region; how many documents changed."""
        regions: dict[int, list[str]] = {}
        envelopes: list[Envelope] = []
        for command, region in items:
            if id(command) not in regions:
                regions[id(command)] = []
                envelopes.append(Envelope(command, encode_command(command)))
            regions[id(command)].append(region)

        def select(command: Command) -> list[Target]:
            return [
                Target(region=region, role=Applier.REPLICATOR, action=Action.TOMBSTONE)
                for region in regions[id(command)]
            ]

        outcome = await self._applier.apply(envelopes, select)
        return outcome.written
