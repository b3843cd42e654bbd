"""The batch write: many upserts and deletes, each validated, published and answered alone."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from regionstore_gateway.adapters.audit_trail import Actor, AuditUnavailableError
from regionstore_gateway.adapters.command_topic import CommandTopic, Delivery, Outcome
from regionstore_gateway.adapters.idempotency import KeyReusedError, request_hash
from regionstore_gateway.bodies import BatchDelete, BatchItem, BatchItemResult, BatchResult
from regionstore_gateway.services.publishing import Item, Publishing, Sent
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import Command, UpsertCustomer

_ITEM = TypeAdapter[BatchItem](BatchItem)
ROUTE = "POST /v1/customers:batch"
_KEY_REUSED = "was already used with a different request; use a new key for a new write"
_UNKNOWN = (
    "Kafka did not acknowledge it in time; outcome unknown: it may or may not be applied; "
    "retry it with the same idempotency_key"
)


async def write_batch(
    topic: CommandTopic, publishing: Publishing, actor: Actor, items: list[Any]
) -> BatchResult:
    """Every item's outcome: rejected, failed (not taken), unknown or accepted.

    Deletes are recorded in the audit trail, together, before anything is published; a delete
    whose event is not recorded is ``failed``. New commands are made in item order, so two items
    for one customer keep the order of the request in their versions.
    """
    results: list[BatchItemResult] = []
    valid = dict(validate_items(items, results))
    keyed = [Item(index, item.idempotency_key, _request(item)) for index, item in valid.items()]
    held = await publishing.records(keyed)
    made: dict[int, Command] = {}
    for index, item in valid.items():
        if index not in held and (command := _command(topic, index, item, results)) is not None:
            made[index] = command
    answers: list[tuple[Sent, dict[str, Any]]] = []
    for sent in await publishing.publish_batch(keyed, held, made, actor):
        result = _result(sent, valid[sent.item.index])
        results.append(result)
        if sent.delivery is not None and result.status == "accepted":
            answers.append((sent, result.model_dump(exclude={"index"})))
    await publishing.acknowledge(answers)
    return counted(results)


def counted(results: list[BatchItemResult]) -> BatchResult:
    """The batch's answer: its items' results in item order, counted by status."""
    results.sort(key=lambda r: r.index)
    counts = {
        s: sum(r.status == s for r in results)
        for s in ("accepted", "rejected", "unknown", "failed")
    }
    return BatchResult(**counts, results=results)


def validate_items(items: list[Any], results: list[BatchItemResult]) -> list[tuple[int, BatchItem]]:
    """The valid items with their indices; a rejection in ``results`` for each other one."""
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
    if item.idempotency_key is None:
        return ""
    if isinstance(item, BatchDelete):
        return request_hash(ROUTE, op="delete", customer_id=item.customer_id)
    return request_hash(ROUTE, op="upsert", customer=item.customer.model_dump(mode="json"))


def _command(
    topic: CommandTopic, index: int, item: BatchItem, results: list[BatchItemResult]
) -> Command | None:
    """A new command for an item; None, and a rejection, for a zip no region takes."""
    if isinstance(item, BatchDelete):
        return topic.delete_command(item.customer_id)
    try:
        return topic.upsert_command(item.customer)
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


def _result(sent: Sent, item: BatchItem) -> BatchItemResult:
    index, command, refusal = sent.item.index, sent.command, sent.refusal
    if isinstance(refusal, KeyReusedError):
        return _reused(index, item)
    if isinstance(refusal, AuditUnavailableError) and command is not None:
        return unaudited(index, command, refusal)
    if refusal is not None:
        return _redis_down(index, item, refusal)
    if sent.answer is not None:
        return BatchItemResult.model_validate({**sent.answer, "index": index})
    assert command is not None  # produced: neither refused nor answered
    assert sent.delivery is not None
    return item_result(index, command, sent.delivery)


def _reused(index: int, item: BatchItem) -> BatchItemResult:
    loc = ["body", "items", index, "idempotency_key"]
    return BatchItemResult(
        index=index,
        status="rejected",
        customer_id=_customer_id(item),
        errors=[{"loc": loc, "msg": _KEY_REUSED, "type": "idempotency_key_reused"}],
    )


def _redis_down(index: int, item: BatchItem, error: Exception) -> BatchItemResult:
    return BatchItemResult(
        index=index,
        status="failed",
        customer_id=_customer_id(item),
        errors=[
            {
                "loc": ["redis"],
                "msg": f"the idempotency_key cannot be checked, Redis cannot be reached: {error}",
                "type": "idempotency_unavailable",
            }
        ],
    )


def unaudited(index: int, command: Command, error: AuditUnavailableError) -> BatchItemResult:
    """The failure of an item whose delete the audit trail did not record."""
    return BatchItemResult(
        index=index,
        status="failed",
        customer_id=command.key,
        errors=[{"loc": ["audit"], "msg": str(error), "type": "audit_unavailable"}],
    )


def _customer_id(item: BatchItem) -> str:
    return item.customer_id if isinstance(item, BatchDelete) else item.customer.customer_id


def item_result(index: int, command: Command, delivery: Delivery) -> BatchItemResult:
    """An item's result once its command was handed to Kafka."""
    if delivery.outcome is Outcome.NOT_SENT:
        return BatchItemResult(
            index=index,
            status="failed",
            customer_id=command.key,
            errors=[{"loc": ["kafka"], "msg": repr(delivery.error), "type": "kafka_error"}],
        )
    unknown = delivery.outcome is Outcome.UNKNOWN
    return BatchItemResult(
        index=index,
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
