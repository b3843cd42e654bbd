"""The one way the gateway publishes writes: a single write is a batch of one.

The steps, in order, for the items of one request: find the records of their idempotency
keys; the caller makes the commands of the items no record answers for (a PATCH merges, a
create-only write reads, only then); claim the keys of those commands; record the audit events
of the deletes; produce and await Kafka's acknowledgements; forget the keys of new commands
Kafka certainly did not take; and, once the caller has its answers, mark the keys acknowledged.

A key is published with one command whatever happens. A key whose command Kafka acknowledged
is answered from its record without producing; a key still pending (an earlier attempt's
outcome unknown, or one in flight) publishes its stored command again, same id, version and
targets, marked ``republished`` so it never overtakes a write acknowledged after its first
publishing. A new key's command that never reached Kafka is released, so a retry is a new
write and stands after every write acknowledged before it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from regionstore_gateway.adapters.audit_trail import (
    Actor,
    AuditedBatch,
    AuditTrail,
    AuditUnavailableError,
)
from regionstore_gateway.adapters.command_topic import CommandTopic, Published
from regionstore_gateway.adapters.idempotency import (
    IdempotencyStore,
    IdempotencyUnavailableError,
    KeyReusedError,
    Record,
    RecordState,
)
from regionstore_shared.delivery import Delivery, Outcome
from regionstore_shared.domain import republished
from regionstore_shared.schemas import Command, DeleteCustomer, UpsertCustomer

log = logging.getLogger(__name__)

_KEY_REUSED = "the key was already used with a different request"


@dataclass(frozen=True, slots=True)
class Item:
    """One write of a request: its place in it, and its idempotency key with the hash of what
    it asks for (which tells a retry from another request under the same key)."""

    index: int
    key: str | None = None
    request: str = ""


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """How one write request is taken: its idempotency key, if any, with the hash of what it
    asks for (only a keyed write needs one), and whether to wait until it is applied."""

    key: str | None = None
    request: str = ""
    wait: bool = False

    @property
    def item(self) -> Item:
        """The request as the one item of a batch of one."""
        return Item(0, self.key, self.request)


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of one item: produced (``delivery``), answered from its key's record
    (``answer``, nothing produced), or refused before anything was produced (``refusal``)."""

    item: Item
    command: Command | None = None
    delivery: Delivery | None = None
    answer: dict[str, Any] | None = None
    refusal: Exception | None = None
    record: Record | None = None
    """The key's record, to acknowledge once the item is answered."""
    fresh: bool = True
    """A command made for this request, not one published before under its key."""


class _Planned(NamedTuple):
    """An item's command to produce, with its key's record and whether it is new."""

    item: Item
    command: Command
    record: Record | None = None
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class Answer:
    """A 202 body, whether it was replayed from the key's record without producing, and the
    command it answers for."""

    body: dict[str, Any]
    replayed: bool
    command: Command


def pending(request: str, command: Command) -> Record:
    """A fresh claim of a key for ``command``."""
    return Record(request_hash=request, state=RecordState.PENDING, command=command)


def accepted(written: Published) -> dict[str, Any]:
    """The 202 body of an acknowledged write: an ``Accepted``, field for field, in its order."""
    command = written.command
    return {
        "command_id": str(command.command_id),
        "version": command.version,
        "customer_id": command.key,
        "region": command.home_region if isinstance(command, UpsertCustomer) else None,
        "location": f"/v1/customers/{command.key}",
        "applied": written.applied,
    }


class Publishing:
    """Publishes the writes of requests: claims keys, audits deletes, produces, acknowledges."""

    def __init__(self, *, topic: CommandTopic, keys: IdempotencyStore, audit: AuditTrail) -> None:
        self._topic = topic
        self._keys = keys
        self._audit = audit

    @property
    def keys(self) -> IdempotencyStore:
        """Where idempotency records are kept (a whole batch's key keeps its own record)."""
        return self._keys

    async def records(self, items: Sequence[Item]) -> dict[int, Record | Exception]:
        """The record of each keyed item's key, or why it cannot be known; an item missing
        here has no record: its command is to be made."""
        keyed = [item for item in items if item.key is not None]
        if not keyed:
            return {}
        try:
            found = await self._keys.find([item.key for item in keyed if item.key is not None])
        except IdempotencyUnavailableError as error:
            return {item.index: error for item in keyed}
        return {
            item.index: record
            for item, record in zip(keyed, found, strict=True)
            if record is not None
        }

    async def publish_one(
        self,
        write: WriteRequest,
        held: Mapping[int, Record | Exception],
        made: Command | None,
        actor: Actor | None = None,
    ) -> Answer:
        """Publish one write as a batch of one, ``made`` its new command unless ``held`` (from
        :meth:`records`) answers for it; raise what refused it, or what Kafka did, as the
        single-write routes answer it. With ``write.wait``, wait (bounded) until it is applied.
        """
        item = write.item
        made_one = {} if made is None else {item.index: made}
        (sent,) = await self.publish_batch([item], held, made_one, actor)
        if sent.refusal is not None:
            raise sent.refusal
        assert sent.command is not None  # only a refusal comes without its command
        if sent.answer is not None:
            return Answer(sent.answer, replayed=True, command=sent.command)
        assert sent.delivery is not None  # neither refused nor answered: produced
        written = await self._topic.settled(sent.command, sent.delivery, wait=write.wait)
        body = accepted(written)
        await self.acknowledge([(sent, body)])
        return Answer(body, replayed=False, command=written.command)

    async def publish_batch(
        self,
        items: Sequence[Item],
        held: Mapping[int, Record | Exception],
        made: Mapping[int, Command],
        actor: Actor | None = None,
    ) -> list[Sent]:
        """The fate of every item that ``held`` (from :meth:`records`) or ``made`` (the new
        commands of items without a record) names, in item order.

        Deletes are recorded in the audit trail under ``actor``, together, before anything is
        produced; a request without deletes needs no actor.
        """
        sends, done = await self._claim(items, held, made)
        produced = await self.produce([send.command for send in sends], actor)
        unsent: list[str] = []
        for (item, command, record, fresh), outcome in zip(sends, produced, strict=True):
            if isinstance(outcome, AuditUnavailableError):
                done.append(Sent(item, command, refusal=outcome, record=record, fresh=fresh))
                continue
            done.append(Sent(item, command, outcome, record=record, fresh=fresh))
            if item.key is not None and fresh and outcome.outcome is Outcome.NOT_SENT:
                unsent.append(item.key)
        if unsent:
            await self._release(unsent)
        return sorted(done, key=lambda send: send.item.index) if len(done) > 1 else done

    async def produce(
        self, commands: Sequence[Command], actor: Actor | None = None
    ) -> list[Delivery | AuditUnavailableError]:
        """Per command, its delivery, or why it was not produced: the audit trail did not
        record its delete. Every recorded delete Kafka did not acknowledge is followed up."""
        if not commands:
            return []
        if actor is None:
            if any(isinstance(command, DeleteCustomer) for command in commands):
                raise ValueError("a delete is published only with the actor it is audited by")
            return list(await self._topic.publish(commands))
        audited = AuditedBatch(self._audit, actor)
        refusals = await audited.record(commands)
        taken = [c for c, refusal in zip(commands, refusals, strict=True) if refusal is None]
        deliveries = await self._topic.publish(taken) if taken else []
        audited.settle(taken, deliveries)
        delivered = iter(deliveries)
        return [refusal or next(delivered) for refusal in refusals]

    async def acknowledge(self, answers: Sequence[tuple[Sent, dict[str, Any]]]) -> None:
        """Mark the keys of acknowledged items with their answers; on failure a retry merely
        publishes the same commands again."""
        acks = [
            (send.item.key, send.record.acked(body))
            for send, body in answers
            if send.item.key is not None and send.record is not None
        ]
        if not acks:
            return
        try:
            await self._keys.acknowledge(acks)
        except IdempotencyUnavailableError as error:
            log.warning(
                "idempotency records left pending: a retry will publish the same command again",
                extra={"keys": len(acks), "error": str(error)},
            )

    async def _claim(
        self,
        items: Sequence[Item],
        held: Mapping[int, Record | Exception],
        made: Mapping[int, Command],
    ) -> tuple[list[_Planned], list[Sent]]:
        """What to produce, in item order, and what is settled without producing: answers
        from records, and refusals (a key used for another request, Redis unreachable)."""
        sends: list[_Planned] = []
        claims: list[tuple[Item, Record]] = []
        found: list[tuple[Item, Record | Exception]] = []
        for item in items:
            command = made.get(item.index)
            if command is None:
                if (record := held.get(item.index)) is not None:
                    found.append((item, record))
            elif item.key is None:
                sends.append(_Planned(item, command))
            else:
                claims.append((item, pending(item.request, command)))
        ours: set[object] = set()
        try:
            if claims:
                keyed = [(item.key, record) for item, record in claims if item.key is not None]
                found += zip(
                    [item for item, _ in claims], await self._keys.claim(keyed), strict=True
                )
                ours = {record.command.command_id for _, record in claims}
        except IdempotencyUnavailableError as error:
            found += [(item, error) for item, _ in claims]
        done: list[Sent] = []
        for item, record in found:
            if isinstance(record, Exception):
                done.append(Sent(item, refusal=record))
            elif record.request_hash != item.request:
                done.append(Sent(item, record.command, refusal=KeyReusedError(_KEY_REUSED)))
            elif record.answer is not None:
                done.append(Sent(item, record.command, answer=record.answer, record=record))
            elif record.command.command_id in ours:
                sends.append(_Planned(item, record.command, record))
            else:
                sends.append(_Planned(item, republished(record.command), record, fresh=False))
        return sorted(sends, key=lambda send: send.item.index) if len(sends) > 1 else sends, done

    async def _release(self, unsent: Sequence[str]) -> None:
        """Forget the keys of new commands Kafka never took; on failure a retry republishes
        them (and a write acknowledged meanwhile may then stand after the retry)."""
        try:
            await self._keys.release(unsent)
        except IdempotencyUnavailableError as error:
            log.warning(
                "idempotency records of unsent commands kept: a retry will publish them again",
                extra={"keys": len(unsent), "error": str(error)},
            )
