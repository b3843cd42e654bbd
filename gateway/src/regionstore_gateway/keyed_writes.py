"""One write, made safe to retry by an idempotency key: one command per key, whatever happens."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from regionstore_gateway.idempotency import (
    IdempotencyStore,
    IdempotencyUnavailableError,
    Record,
    RecordState,
    check,
)
from regionstore_gateway.writes import KafkaUnavailableError, Written
from regionstore_shared.domain import republished
from regionstore_shared.schemas import Command

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """A 202 body, and whether it was replayed from the key's record without producing."""

    body: dict[str, Any]
    replayed: bool


class Sender(Protocol):
    """What publishes one command: Writes itself, or a wrapper that audits first."""

    async def send(self, command: Command, *, wait: bool) -> Written: ...


def pending(request: str, command: Command) -> Record:
    """A fresh claim of a key for ``command``."""
    return Record(request_hash=request, state=RecordState.PENDING, command=command)


async def write_once(
    writes: Sender,
    *,
    keys: IdempotencyStore,
    key: str | None,
    request: str,
    build: Callable[[], Awaitable[Command]],
    answer: Callable[[Written], dict[str, Any]],
    wait: bool,
) -> Answer:
    """Publish the command ``build`` makes, or, for a key seen before, the one made then.

    ``request`` is the request's hash: a key first used with another one is a KeyReusedError.
    A key whose command Kafka acknowledged is answered from its record without producing; a
    key still pending (an earlier attempt's outcome unknown, or one in flight) publishes its
    stored command again, same id, version and targets, marked ``republished`` so it never
    overtakes a write acknowledged after its first publishing. ``build`` runs only for a new
    key, so a PATCH retried reproduces the first attempt's merge instead of merging again. A
    new key's command that never reached Kafka (KafkaUnavailableError) is released, so a retry
    is a new write and stands after every write acknowledged before it.
    """
    if key is None:
        return Answer(answer(await writes.send(await build(), wait=wait)), replayed=False)
    (record,) = await keys.find([key])
    fresh = record is None
    if record is None:
        claim = pending(request, await build())
        (record,) = await keys.claim([(key, claim)])
        fresh = record.command.command_id == claim.command.command_id
    record = check(record, request)
    if record.answer is not None:
        return Answer(record.answer, replayed=True)
    try:
        written = await writes.send(
            record.command if fresh else republished(record.command), wait=wait
        )
    except KafkaUnavailableError:
        if fresh:
            await release(keys, [key])
        raise
    body = answer(written)
    await acknowledge(keys, [(key, record.acked(body))])
    return Answer(body, replayed=False)


async def release(keys: IdempotencyStore, unsent: Sequence[str]) -> None:
    """Forget the keys of new commands Kafka never took; on failure a retry republishes them
    (and a write acknowledged meanwhile may then stand after the retry)."""
    try:
        await keys.release(unsent)
    except IdempotencyUnavailableError as error:
        log.warning(
            "idempotency records of unsent commands kept: a retry will publish them again",
            extra={"keys": len(unsent), "error": str(error)},
        )


async def acknowledge(keys: IdempotencyStore, acks: Sequence[tuple[str, Record]]) -> None:
    """Mark acknowledged commands' keys; on failure a retry merely publishes them again."""
    try:
        await keys.acknowledge(acks)
    except IdempotencyUnavailableError as error:
        log.warning(
            "idempotency records left pending: a retry will publish the same command again",
            extra={"keys": len(acks), "error": str(error)},
        )
