"""Where the repair's actions go: the command topic, and the one version-guarded apply."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from regionstore_shared.apply import BatchApplier, Envelope
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
        futures = [
            await self._producer.send(
                self._topic,
                value=encode_command(command),
                key=command.key.encode(),
                headers=[(REPAIR_HEADER, b"1")],
            )
            for command in commands
        ]
        if not futures:
            return
        done, waiting = await asyncio.wait(futures, timeout=self._timeout_s)
        if waiting:
            raise TimeoutError(f"{len(waiting)} repair commands not acknowledged in time")
        for future in done:
            if (error := future.exception()) is not None:
                raise error


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
