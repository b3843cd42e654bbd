"""A batch sent with one Idempotency-Key for all its items: one small record, not one per item.

A bulk load keys each request, not each customer. The first attempt reserves a run of versions
from the clock and draws a seed for the command ids, and keeps only those in Redis
(:class:`~regionstore_gateway.adapters.idempotency.BatchRecord`), with the offset each partition
of the command topic had reached then; a retry of the same request makes every item's command
again from them, so item ``i`` is published as the same command (same id, version, targets and
``after``) whichever attempt publishes it. Items an earlier attempt got acknowledged are
answered from the record and not published again; the others (failed, unknown, or never
reached) are published, harmlessly twice if an earlier attempt did land.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from regionstore_gateway.adapters.audit_trail import Actor, AuditUnavailableError
from regionstore_gateway.adapters.command_topic import CommandTopic, Delivery, Outcome
from regionstore_gateway.adapters.idempotency import (
    BatchRecord,
    IdempotencyStore,
    IdempotencyUnavailableError,
    KeyReusedError,
    request_hash,
)
from regionstore_gateway.bodies import BatchDelete, BatchItem, BatchItemResult, BatchResult
from regionstore_gateway.services.batch import (
    ROUTE,
    counted,
    item_result,
    unaudited,
    validate_items,
    zip_rejected,
)
from regionstore_gateway.services.errors import InvalidInput
from regionstore_gateway.services.publishing import Publishing
from regionstore_shared.clock import VERSION_STEP
from regionstore_shared.domain import delete_command, republished, upsert_command
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import Command

log = logging.getLogger(__name__)

_ITEM_KEY = "may not be given when the batch has an Idempotency-Key (one key for the whole batch)"


@dataclass(frozen=True, slots=True)
class KeyedBatch:
    """A keyed batch's answer, and whether it came from an earlier attempt's record alone
    (nothing was published this time)."""

    result: BatchResult
    replayed: bool


async def write_keyed_batch(
    topic: CommandTopic, publishing: Publishing, actor: Actor, items: list[Any], key: str
) -> KeyedBatch:
    """Every item's outcome, as write_batch gives it, under one key for the whole request.

    The same key with another request is a KeyReusedError; Redis that cannot keep the record
    an IdempotencyUnavailableError: nothing is published in either case. An item whose command
    may have reached Kafka in an earlier attempt is published again marked ``republished`` (its
    version stands, as for a retried single write); one that certainly did not is published as
    a new command, ordered after every write acknowledged before it.
    """
    _no_item_keys(items)
    request = request_hash(ROUTE, batch=items)
    results: list[BatchItemResult] = []
    valid = validate_items(items, results)
    keys = publishing.keys
    record = await keys.find_batch(key)
    seen = record is not None
    if record is None:
        new = _new_record(topic, request, len(items))
        # Claimed with every item marked sent: from here a retry may find it with them in Kafka.
        new = new.marked(sent=[index for index, _ in valid])
        record = await keys.claim_batch(key, new)
        seen = record is not new
        before = record.marked(unsent=range(len(items))) if not seen else record
    else:
        before = record
    if record.request_hash != request:
        raise KeyReusedError("the key was already used with a different request")
    sends: list[tuple[int, Command]] = []
    for index, item in valid:
        command = _command(topic, record, index, item, results)
        if command is None:
            continue
        if record.is_acked(index):
            results.append(item_result(index, command, Delivery(Outcome.ACCEPTED)))
        else:
            sends.append((index, republished(command) if before.is_sent(index) else command))
    fresh = [index for index, _ in sends if not record.is_sent(index)]
    if fresh:
        # Marked before they can reach Kafka, so that a retry after a crash republishes them.
        record = record.marked(sent=fresh)
        await keys.acknowledge_batch(key, record)
    acked: list[int] = []
    # Refused or not taken now, and never before: a retry publishes it as a new command.
    unsent: list[int] = []
    outcomes = await publishing.produce([command for _, command in sends], actor)
    for (index, command), outcome in zip(sends, outcomes, strict=True):
        if isinstance(outcome, AuditUnavailableError):
            results.append(unaudited(index, command, outcome))
            refused = True
        else:
            results.append(item_result(index, command, outcome))
            if outcome.outcome is Outcome.ACCEPTED:
                acked.append(index)
            refused = outcome.outcome is Outcome.NOT_SENT
        if refused and not before.is_sent(index):
            unsent.append(index)
    if acked or unsent:
        await _acknowledge(keys, key, record.marked(acked=acked, unsent=unsent))
    return KeyedBatch(counted(results), replayed=seen and not sends)


def _no_item_keys(items: list[Any]) -> None:
    keyed = [i for i, raw in enumerate(items) if isinstance(raw, dict) and "idempotency_key" in raw]
    if keyed:
        raise InvalidInput(
            [
                {
                    "loc": ("body", "items", i, "idempotency_key"),
                    "msg": _ITEM_KEY,
                    "type": "idempotency_key_conflict",
                }
                for i in keyed
            ]
        )


def _new_record(topic: CommandTopic, request: str, count: int) -> BatchRecord:
    return BatchRecord(
        request_hash=request,
        seed=uuid.uuid4(),
        first_version=topic.reserve_versions(max(count, 1)),
        issued_at_ms=time.time_ns() // 1_000_000,
        reached=topic.reached_offsets(),
    )


def _command(
    topic: CommandTopic,
    record: BatchRecord,
    index: int,
    item: BatchItem,
    results: list[BatchItemResult],
) -> Command | None:
    """Item ``index``'s command, made from the record; None, and a rejection, for a zip no
    region takes."""
    version = record.first_version + index * VERSION_STEP
    command_id = record.command_id(index)
    if isinstance(item, BatchDelete):
        return delete_command(
            item.customer_id,
            regions=topic.region_map,
            version=version,
            issued_at_ms=record.issued_at_ms,
            command_id=command_id,
            after=record.after(item.customer_id),
        )
    try:
        return upsert_command(
            item.customer,
            regions=topic.region_map,
            version=version,
            issued_at_ms=record.issued_at_ms,
            command_id=command_id,
            after=record.after(item.customer.customer_id),
        )
    except ZipOutOfRangeError as error:
        results.append(zip_rejected(index, item.customer.customer_id, error))
        return None


async def _acknowledge(keys: IdempotencyStore, key: str, record: BatchRecord) -> None:
    """Mark acknowledged items; on failure a retry merely publishes them again."""
    try:
        await keys.acknowledge_batch(key, record)
    except IdempotencyUnavailableError as error:
        log.warning(
            "batch idempotency record not updated: a retry will publish the same commands again",
            extra={"error": str(error)},
        )
