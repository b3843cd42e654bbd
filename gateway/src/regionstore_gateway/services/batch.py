"""The batch write: many upserts and deletes, each validated, published and answered alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from regionstore_gateway.audit_trail import Actor, AuditedBatch, AuditTrail, AuditUnavailableError
from regionstore_gateway.idempotency import (
    IdempotencyStore,
    IdempotencyUnavailableError,
    Record,
    request_hash,
)
from regionstore_gateway.keyed_writes import acknowledge, pending, release
from regionstore_gateway.models import BatchDelete, BatchItem, BatchItemResult, BatchResult
from regionstore_gateway.writes import Delivery, Outcome, Writes
from regionstore_shared.domain import republished
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import Command, UpsertCustomer

_ITEM = TypeAdapter[BatchItem](BatchItem)
_ROUTE = "POST /v1/customers:batch"
_KEY_REUSED = "was already used with a different request; use a new key for a new write"
_UNKNOWN = (
    "Kafka did not acknowledge it in time; outcome unknown: it may or may not be applied; "
    "retry it with the same idempotency_key"
)


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A valid item with an idempotency key, and the hash of what it asks for."""

    index: int
    item: BatchItem
    key: str
    request: str


@dataclass(frozen=True, slots=True)
class _Send:
    """A command to publish for one item, with the key record to acknowledge, if any."""

    index: int
    command: Command
    key: str | None = None
    record: Record | None = None
    fresh: bool = True
    """A command made for this request, not one published before under its key."""


async def write_batch(
    writes: Writes, keys: IdempotencyStore, audit: AuditTrail, actor: Actor, items: list[Any]
) -> BatchResult:
    """Every item's outcome: rejected, failed (not taken), unknown or accepted.

    Deletes are recorded in the audit trail, together, before anything is published; a delete
    whose event is not recorded is ``failed``.
    """
    results: list[BatchItemResult] = []
    sends = await _plan(writes, keys, _validate(items, results), results)
    audited = AuditedBatch(audit, actor)
    refusals = await audited.record([s.command for s in sends])
    results.extend(_unaudited(s, r) for s, r in zip(sends, refusals, strict=True) if r)
    sends = [s for s, refusal in zip(sends, refusals, strict=True) if refusal is None]
    deliveries = await writes.publish([s.command for s in sends]) if sends else []
    audited.settle([s.command for s in sends], deliveries)
    acks: list[tuple[str, Record]] = []
    unsent: list[str] = []
    for send, delivery in zip(sends, deliveries, strict=True):
        result = _item_result(send, delivery)
        results.append(result)
        if send.key is not None and send.record is not None and result.status == "accepted":
            acks.append((send.key, send.record.acked(result.model_dump(exclude={"index"}))))
        elif send.key is not None and send.fresh and delivery.outcome is Outcome.NOT_SENT:
            unsent.append(send.key)
    await acknowledge(keys, acks)
    if unsent:
        await release(keys, unsent)
    results.sort(key=lambda r: r.index)
    counts = {
        s: sum(r.status == s for r in results)
        for s in ("accepted", "rejected", "unknown", "failed")
    }
    return BatchResult(**counts, results=results)


def _validate(items: list[Any], results: list[BatchItemResult]) -> list[tuple[int, BatchItem]]:
    valid: list[tuple[int, BatchItem]] = []
    for index, raw in enumerate(items):
        if isinstance(raw, dict) and "op" not in raw:
            raw = {**raw, "op": "upsert"}
        try:
            valid.append((index, _ITEM.validate_python(raw)))
        except ValidationError as error:
            errors = [
                {"loc": ["body", "items", index, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False)
            ]
            results.append(BatchItemResult(index=index, status="rejected", errors=errors))
    return valid


def _request(item: BatchItem) -> str:
    if isinstance(item, BatchDelete):
        return request_hash(_ROUTE, op="delete", customer_id=item.customer_id)
    return request_hash(_ROUTE, op="upsert", customer=item.customer.model_dump(mode="json"))


def _command(
    writes: Writes, index: int, item: BatchItem, results: list[BatchItemResult]
) -> Command | None:
    """A new command for an item; None, and a rejection, for a zip no region takes."""
    if isinstance(item, BatchDelete):
        return writes.delete_command(item.customer_id)
    try:
        return writes.upsert_command(item.customer)
    except ZipOutOfRangeError as error:
        results.append(zip_rejected(index, item.customer.customer_id, error))
        return None


def zip_rejected(index: int, customer_id: str, error: ZipOutOfRangeError) -> BatchItemResult:
    """The rejection of an item whose zip no region takes."""
    loc = ["body", "items", index, "customer", "customer_zip_code_prefix"]
    return BatchItemResult(
        index=index,
        status="rejected",
        customer_id=customer_id,
        errors=[{"loc": loc, "msg": str(error), "type": "value_error"}],
    )


async def _plan(
    writes: Writes,
    keys: IdempotencyStore,
    valid: list[tuple[int, BatchItem]],
    results: list[BatchItemResult],
) -> list[_Send]:
    """What to publish, in item order; replays, conflicts and refusals go to ``results``.

    New commands are made in item order, so two items for one customer keep the order of the
    request in their versions.
    """
    keyed = {
        index: _Keyed(index, item, item.idempotency_key, _request(item))
        for index, item in valid
        if item.idempotency_key is not None
    }
    try:
        found = dict(zip(keyed, await keys.find([k.key for k in keyed.values()]), strict=True))
    except IdempotencyUnavailableError as error:
        results.extend(_redis_down(k, error) for k in keyed.values())
        valid = [(index, item) for index, item in valid if index not in keyed]
        found = {}
    sends: list[_Send] = []
    held: list[tuple[_Keyed, Record]] = []
    claims: list[tuple[_Keyed, Record]] = []
    ours: set[object] = set()
    for index, item in valid:
        record = found.get(index)
        if record is not None:
            held.append((keyed[index], record))
        elif (command := _command(writes, index, item, results)) is None:
            continue
        elif index in keyed:
            claims.append((keyed[index], pending(keyed[index].request, command)))
        else:
            sends.append(_Send(index, command))
    try:
        claimed = await keys.claim([(k.key, record) for k, record in claims])
        held += zip([k for k, _ in claims], claimed, strict=True)
        ours = {record.command.command_id for _, record in claims}
    except IdempotencyUnavailableError as error:
        results.extend(_redis_down(k, error) for k, _ in claims)
    for k, record in held:
        if record.request_hash != k.request:
            results.append(_reused(k))
        elif record.answer is not None:
            results.append(BatchItemResult.model_validate({**record.answer, "index": k.index}))
        elif record.command.command_id in ours:
            sends.append(_Send(k.index, record.command, k.key, record))
        else:
            sends.append(_Send(k.index, republished(record.command), k.key, record, fresh=False))
    return sorted(sends, key=lambda s: s.index)


def _reused(keyed: _Keyed) -> BatchItemResult:
    loc = ["body", "items", keyed.index, "idempotency_key"]
    return BatchItemResult(
        index=keyed.index,
        status="rejected",
        customer_id=_customer_id(keyed.item),
        errors=[{"loc": loc, "msg": _KEY_REUSED, "type": "idempotency_key_reused"}],
    )


def _redis_down(keyed: _Keyed, error: Exception) -> BatchItemResult:
    return BatchItemResult(
        index=keyed.index,
        status="failed",
        customer_id=_customer_id(keyed.item),
        errors=[
            {
                "loc": ["redis"],
                "msg": f"the idempotency_key cannot be checked, Redis cannot be reached: {error}",
                "type": "idempotency_unavailable",
            }
        ],
    )


def _unaudited(send: _Send, error: AuditUnavailableError) -> BatchItemResult:
    return BatchItemResult(
        index=send.index,
        status="failed",
        customer_id=send.command.key,
        errors=[{"loc": ["audit"], "msg": str(error), "type": "audit_unavailable"}],
    )


def _customer_id(item: BatchItem) -> str:
    return item.customer_id if isinstance(item, BatchDelete) else item.customer.customer_id


def _item_result(send: _Send, delivery: Delivery) -> BatchItemResult:
    command = send.command
    if delivery.outcome is Outcome.NOT_SENT:
        return BatchItemResult(
            index=send.index,
            status="failed",
            customer_id=command.key,
            errors=[{"loc": ["kafka"], "msg": repr(delivery.error), "type": "kafka_error"}],
        )
    unknown = delivery.outcome is Outcome.UNKNOWN
    return BatchItemResult(
        index=send.index,
        status="unknown" if unknown else "accepted",
        customer_id=command.key,
        command_id=str(command.command_id),
        version=command.version,
        region=command.home_region if isinstance(command, UpsertCustomer) else None,
        errors=[
            {"loc": ["kafka"], "msg": f"{_UNKNOWN}: {delivery.error!r}", "type": "outcome_unknown"}
        ]
        if unknown
        else None,
    )
