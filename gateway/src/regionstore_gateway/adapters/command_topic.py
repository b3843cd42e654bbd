"""Turning accepted requests into versioned commands on the command topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from regionstore_gateway.adapters.repository import CustomerRepository, Lookup
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared import metrics
from regionstore_shared.clock import HybridClock
from regionstore_shared.delivery import Delivery, Outcome, Outgoing, deliver
from regionstore_shared.documents import holds_write
from regionstore_shared.domain import delete_command, upsert_command
from regionstore_shared.personal import KeyStore, seal_all
from regionstore_shared.regions import RegionMap, ZipOutOfRangeError
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    UpsertCustomer,
    encode_command,
)
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_shared.topics import partition_of
from regionstore_shared.tracing import CommandTracer, command_tracer

log = logging.getLogger(__name__)


PUBLISHED = Counter(
    "regionstore_commands_published_total",
    "Commands handed to Kafka, by outcome: accepted (acknowledged), unknown (not acknowledged"
    " in time: may still land) or not_sent (refused before it was buffered).",
    ["outcome"],
)
# Bound once: the loop below runs per command, and every outcome's series starts at zero.
_PUBLISHED = {outcome: PUBLISHED.labels(outcome=outcome.value) for outcome in Outcome}


class KafkaUnavailableError(Exception):
    """Kafka certainly did not take the command: nothing was accepted."""

    def __init__(self, command: Command, cause: BaseException | None) -> None:
        super().__init__(f"Kafka did not take the write: {cause!r}")
        self.command = command


class OutcomeUnknownError(Exception):
    """The command left for Kafka but was not acknowledged in time: it may or may not land."""

    def __init__(self, command: Command, cause: BaseException | None) -> None:
        super().__init__(f"Kafka did not acknowledge the write in time: {cause!r}")
        self.command = command


class CustomerExistsError(Exception):
    """A create-only write for a customer that exists."""


class CustomerUnreadableError(Exception):
    """A create-only write that cannot tell whether the customer exists: a region is unread."""

    def __init__(self, customer_id: str, regions: set[str]) -> None:
        super().__init__(
            f"create-only needs every region read to tell that customer {customer_id} is new; "
            f"regions {sorted(regions)} cannot be read now"
        )
        self.regions = regions


@dataclass(frozen=True, slots=True)
class Published:
    """An acknowledged command, and whether it was seen applied when asked to wait."""

    command: Command
    applied: bool
    position: int | None = None
    """Where Kafka appended it in its partition: after every write acknowledged before it."""


class CommandTopic:
    """Validates placement, versions commands and publishes them with acks=all."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        producer: AIOKafkaProducer,
        board: StatusBoard,
        repository: CustomerRepository,
        clock: HybridClock,
        keyring: KeyStore,
        tracer: CommandTracer | None = None,
    ) -> None:
        self._settings = settings
        self._keyring = keyring
        # The process's tracer unless one is given; None when tracing is off.
        self._tracer = tracer if tracer is not None else command_tracer()
        self._producer = producer
        self._board = board
        self._repository = repository
        self._clock = clock
        # One past the last command seen acknowledged in each partition: an offset the
        # partition certainly reached, stamped on every new command as its ``after``.
        self._reached: dict[int, int] = {}
        self._partitions: int | None = None
        self._placed_as_expected = True

    @property
    def repository(self) -> CustomerRepository:
        """Where current state is read from."""
        return self._repository

    @property
    def region_map(self) -> RegionMap:
        """The regions commands are placed in."""
        return self._settings.region_map

    def reserve_versions(self, count: int) -> int:
        """The first of ``count`` versions issued at once (see HybridClock.reserve)."""
        return self._clock.reserve(count)

    async def statuses(self) -> dict[str, NodeStatus]:
        """Every region's status."""
        return await self._board.all()

    async def lookup(self, customer_id: str) -> Lookup:
        """The newest state of a customer in the reachable regions; its version is observed."""
        lookup = await self._repository.lookup(customer_id, await self.statuses())
        found = lookup.newest.get(customer_id)
        if found is not None:
            self._clock.observe(found.version)
        return lookup

    def upsert_command(self, customer: Customer) -> UpsertCustomer:
        """A versioned upsert; raises ZipOutOfRangeError for a zip no region takes."""
        return upsert_command(
            customer,
            regions=self._settings.region_map,
            version=self._clock.now(),
            issued_at_ms=time.time_ns() // 1_000_000,
            after=self.reached(customer.customer_id),
        )

    def delete_command(self, customer_id: str) -> DeleteCustomer:
        """A versioned tombstone for every region."""
        return delete_command(
            customer_id,
            regions=self._settings.region_map,
            version=self._clock.now(),
            issued_at_ms=time.time_ns() // 1_000_000,
            after=self.reached(customer_id),
        )

    def reached(self, customer_id: str) -> int | None:
        """An offset the customer's partition certainly reached (one past the last command this
        gateway saw acknowledged there), or None before any: a command made now is first
        published above it (see Command.after)."""
        if self._partitions is None or not self._placed_as_expected:
            return None
        return self._reached.get(partition_of(customer_id, self._partitions))

    def reached_offsets(self) -> tuple[int, ...]:
        """What :meth:`reached` says of every partition, indexed by partition (0 where no
        command was seen acknowledged yet); empty while no offset can be vouched for. A command
        made again later from these (a keyed batch's item) gets the ``after`` it had when they
        were taken, not a later one its first publishing may stand below."""
        if not self._partitions or not self._placed_as_expected:
            return ()
        return tuple(self._reached.get(p, 0) for p in range(self._partitions))

    async def _note_reached(
        self, commands: Sequence[Command], deliveries: Sequence[Delivery]
    ) -> None:
        if all(d.partition is None for d in deliveries):
            return
        if self._partitions is None:
            # Known once the producer has the topic's metadata (after its first send).
            with contextlib.suppress(KafkaError, TimeoutError):
                topic = self._settings.kafka.command_topic
                async with asyncio.timeout(self._settings.kafka.request_timeout_ms / 1000):
                    self._partitions = len(await self._producer.partitions_for(topic))
        if not self._partitions:
            return
        for command, delivery in zip(commands, deliveries, strict=True):
            if delivery.partition is None or delivery.position is None:
                continue
            if partition_of(command.key, self._partitions) != delivery.partition:
                # The producer places keys by another rule: no offset can be vouched for.
                self._placed_as_expected = False
                return
            reached = self._reached.get(delivery.partition, 0)
            self._reached[delivery.partition] = max(reached, delivery.position + 1)

    async def prepare_upsert(self, customer: Customer, *, create_only: bool) -> UpsertCustomer:
        """The command making ``customer`` current; create-only refuses a live customer.

        Create-only raises CustomerExistsError when a region that was read holds the customer
        (or says where it moved), and CustomerUnreadableError when none does but some region
        could not be read: a customer may live in any region (it may have moved), so a region
        that could not be read is never taken for one where the customer is absent.
        """
        if create_only:
            lookup = await self.lookup(customer.customer_id)
            found = lookup.newest.get(customer.customer_id)
            if found is not None and (not found.deleted or found.moved):
                raise CustomerExistsError(customer.customer_id)
            if lookup.unreachable:
                raise CustomerUnreadableError(customer.customer_id, lookup.unreachable)
        (command,) = await self.seal([self.upsert_command(customer)])
        assert isinstance(command, UpsertCustomer)  # seal keeps each command's kind
        return command

    async def seal(self, commands: Sequence[Command]) -> list[Command]:
        """The commands with their customers sealed
        (:func:`~regionstore_shared.personal.seal_all`); raises KafkaUnavailableError, nothing
        sent, when the key topic cannot be read or written."""
        try:
            return await seal_all(commands, self._keyring)
        except KafkaError as error:
            raise KafkaUnavailableError(commands[0], error) from error

    async def send(self, command: Command, *, wait: bool) -> Published:
        """Publish one command; raise unless Kafka acknowledged it (see :meth:`settled`)."""
        (delivery,) = await self.publish([command])
        return await self.settled(command, delivery, wait=wait)

    async def settled(self, command: Command, delivery: Delivery, *, wait: bool) -> Published:
        """The published command, waited for until applied if asked; raise unless Kafka
        acknowledged it.

        KafkaUnavailableError means Kafka certainly did not take it; OutcomeUnknownError that
        it may still be applied.
        """
        if delivery.outcome is Outcome.NOT_SENT:
            raise KafkaUnavailableError(command, delivery.error)
        if delivery.outcome is Outcome.UNKNOWN:
            raise OutcomeUnknownError(command, delivery.error)
        position = delivery.position
        applied = wait and position is not None and await self.wait_applied(command, position)
        return Published(command, applied, position)

    async def publish(self, commands: Sequence[Command]) -> list[Delivery]:
        """Produce commands and wait, bounded, for Kafka's acknowledgement of each (what
        :func:`~regionstore_shared.delivery.deliver` says of every outcome).

        With tracing on, a producer span covers the publishing and every command carries it
        as its parent, in W3C ``traceparent`` headers.
        """
        if self._tracer is None:
            return await self._publish(commands, None)
        with self._tracer.publish(self._settings.kafka.command_topic, len(commands)) as headers:
            return await self._publish(commands, list(headers))

    async def _publish(
        self, commands: Sequence[Command], headers: list[tuple[str, bytes]] | None
    ) -> list[Delivery]:
        topic = self._settings.kafka.command_topic
        timeout = self._settings.kafka.request_timeout_ms / 1000
        try:
            # Every upsert leaves sealed, its key durable before it.
            commands = await seal_all(commands, self._keyring)
        except KafkaError as error:
            return [Delivery(Outcome.NOT_SENT, error) for _ in commands]
        outgoing = [
            Outgoing(encode_command(command), command.key.encode(), headers or ())
            for command in commands
        ]
        sent = await deliver(self._producer, topic, outgoing, timeout_s=timeout)
        await self._note_reached(commands, sent)
        deliveries = await self._destroy_keys(commands, sent)
        # One line per command is the trail for following a write; at DEBUG, because at
        # INFO it was the largest single cost of accepting a write.
        trace = log.isEnabledFor(logging.DEBUG)
        for command, delivery in zip(commands, deliveries, strict=True):
            _PUBLISHED[delivery.outcome].inc()
            if trace and delivery.outcome is Outcome.ACCEPTED:
                log.debug(
                    "write accepted",
                    extra={
                        "command_id": str(command.command_id),
                        "customer_id": command.key,
                        "version": command.version,
                        "kind": command.kind,
                    },
                )
        if commands and all(d.outcome is not Outcome.ACCEPTED for d in deliveries):
            metrics.KAFKA_ERRORS.labels(operation="produce").inc()
        return deliveries

    async def _destroy_keys(
        self, commands: Sequence[Command], deliveries: list[Delivery]
    ) -> list[Delivery]:
        """Destroy the keys of each acknowledged delete's customer made before it, durably,
        before its 202: a write sent after that 202 finds no key and makes a new one.

        Only after the acknowledgement: a delete Kafka refused, or whose fate is unknown,
        changes nothing (its customer's parked writes stay readable). A delete whose keys could
        not be destroyed is answered as unknown, so that it is sent again.
        """
        accepted = [
            at
            for at, (command, delivery) in enumerate(zip(commands, deliveries, strict=True))
            if isinstance(command, DeleteCustomer) and delivery.outcome is Outcome.ACCEPTED
        ]
        before: dict[str, int] = {}
        for at in accepted:
            command = commands[at]
            before[command.key] = max(before.get(command.key, 0), command.version)
        if not before:
            return deliveries
        try:
            await self._keyring.destroy(before)
        except KafkaError as error:
            log.error(
                "keys of deletes not destroyed: the deletes are answered as unknown",
                extra={"deletes": len(accepted), "error": repr(error)},
            )
            out = list(deliveries)
            for at in accepted:
                out[at] = Delivery(Outcome.UNKNOWN, error, deliveries[at].position)
            return out
        return deliveries

    async def wait_applied(self, command: Command, position: int) -> bool:
        """Poll, bounded, until reads see the command (appended at ``position``) or a write
        acknowledged after it: an upsert in its first readable region, a delete wherever the
        customer lived (a lookup). A retry that a newer write superseded is never seen."""
        statuses = await self.statuses()
        if isinstance(command, DeleteCustomer):
            return await self._poll(lambda: self._delete_seen(command, position, statuses))
        readable = [
            t.region
            for t in sorted(command.targets, key=lambda t: t.role is not Applier.WRITER)
            if t.action is Action.UPSERT and statuses.get(t.region) is not NodeStatus.UNAVAILABLE
        ]
        if not readable:
            return False
        command_id = str(command.command_id)
        return await self._poll(
            lambda: self._repository.holds(readable[0], command.key, command_id, position)
        )

    async def _delete_seen(
        self, command: DeleteCustomer, position: int, statuses: dict[str, NodeStatus]
    ) -> bool:
        """Whether a lookup finds the tombstone (or a later write), or the customer live
        nowhere it can read.

        Consumers tombstone only the regions a customer may be live in, so which regions get
        a delete's tombstones is known to them, not here: a lookup reads them all.
        """
        lookup = await self._repository.lookup(command.key, statuses)
        found = lookup.newest.get(command.key)
        if found is None:
            return self._repository.covered(lookup.unreachable)
        return holds_write(found.document, str(command.command_id), position)

    async def _poll(self, seen: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + self._settings.api.wait_applied_timeout_s
        pause = 0.005
        while True:
            try:
                if await seen():
                    return True
            except PyMongoError:
                return False
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)


__all__ = [
    "CommandTopic",
    "CustomerExistsError",
    "CustomerUnreadableError",
    "Delivery",
    "KafkaUnavailableError",
    "Outcome",
    "OutcomeUnknownError",
    "ZipOutOfRangeError",
]
