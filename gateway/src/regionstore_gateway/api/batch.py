"""The batch route: many upserts and deletes in one request, each answered on its own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from regionstore_gateway.api.customers import REPLAYED_HEADER
from regionstore_gateway.api.errors import RETRY_AFTER
from regionstore_gateway.auth import PrincipalDep, requires_writer
from regionstore_gateway.bodies import BatchResult, NotAccepted
from regionstore_gateway.deps import BatchKeyHeader, CustomersDep, SettingsDep
from regionstore_gateway.services.errors import InvalidInput

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post(
    ":batch",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResult,
    responses={
        422: {
            "model": BatchResult,
            "description": "No item was accepted and every item was invalid (a malformed body "
            "or too many items: FastAPI's validation shape instead).",
        },
        429: {
            "model": NotAccepted,
            "headers": RETRY_AFTER,
            "description": "Not accepted: the consumers are too far behind (backpressure), or "
            "the key is over its rate. No item was published and no idempotency key claimed.",
        },
        503: {
            "model": BatchResult,
            "headers": RETRY_AFTER,
            "description": "No item accepted or unknown, some certainly not taken: Kafka refused "
            "them, Redis was needed for their idempotency_key and is down, or (deletes) the "
            "audit trail cannot be written.",
        },
        504: {
            "model": BatchResult,
            "headers": RETRY_AFTER,
            "description": "No item accepted, some of unknown outcome (see each result).",
        },
    },
)
async def batch(
    body: dict[str, list[Any]],
    customers: CustomersDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: BatchKeyHeader = None,
) -> BatchResult:
    """Many upserts and deletes in one request, each validated and answered on its own.

    Items may carry an ``idempotency_key``, with the same meaning as the Idempotency-Key
    header of the single-item routes; or the request carries one Idempotency-Key for all its
    items (then no item may carry its own), which keeps one small record for the batch instead
    of one per item: the way to load in bulk. Deletes are recorded in the audit trail, together,
    before anything is published; a delete whose event is not recorded is ``failed``.
    """
    items = body.get("items")
    if items is None or set(body) != {"items"}:
        raise InvalidInput.field(("body", "items"), 'the body must be {"items": [...]}', "missing")
    if idempotency_key is None:
        result = await customers.batch(items, principal)
    else:
        keyed = await customers.keyed_batch(items, principal, idempotency_key)
        result = keyed.result
        if keyed.replayed:
            response.headers[REPLAYED_HEADER] = "true"
    if items and not result.accepted:
        _not_accepted(response, result, settings.api.retry_after_s)
    return result


def _not_accepted(response: Response, result: BatchResult, retry_after_s: int) -> None:
    # 422 only when nothing can have been taken and nothing failed for want of Kafka or Redis.
    if result.unknown:
        response.status_code = status.HTTP_504_GATEWAY_TIMEOUT
    elif result.failed:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        response.status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
        return
    response.headers["Retry-After"] = str(retry_after_s)
