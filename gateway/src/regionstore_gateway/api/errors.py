"""Error answers: one handler turns the services' domain errors into HTTP. Every 422 names the
field and the reason (FastAPI's validation shape), a write that was not acknowledged says
whether it may still land (504) or certainly not (503; 429 while the consumers are too far
behind), and a status change Redis could not take is a 503 that says whether it changed."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from regionstore_gateway.adapters.audit_trail import AuditUnavailableError
from regionstore_gateway.adapters.idempotency import (
    HEADER,
    IdempotencyUnavailableError,
    KeyReusedError,
)
from regionstore_gateway.adapters.node_lease import NoNodeIdError
from regionstore_gateway.bodies import ErrorMessage, NotAccepted, OutcomeUnknown
from regionstore_gateway.services.backpressure import ConsumersBehindError
from regionstore_gateway.services.errors import (
    CustomerExistsError,
    CustomerNotFound,
    CustomerUnreadableError,
    DomainError,
    KafkaUnavailableError,
    OutcomeUnknownError,
    RegionNotFound,
    RegionsUnreachable,
)
from regionstore_shared.status import StatusStoreUnavailableError

UNKNOWN_DETAIL = (
    "Kafka did not acknowledge the write in time; outcome unknown: the write may or may not be "
    f"applied; retry with the same {HEADER} (without one, a retry is a new write)"
)
NOTHING_WRITTEN = "not accepted: nothing was written, retry later"
KAFKA_DOWN_DETAIL = f"Kafka did not take the write; {NOTHING_WRITTEN}"
REDIS_DOWN_DETAIL = (
    f"the {HEADER} cannot be checked: Redis cannot be reached or failed; not accepted: nothing "
    f"was written, retry later (a write without {HEADER} does not need Redis)"
)
KEY_REUSED = f"was already used with a different request; use a new {HEADER} for a new write"
BODY_UNDECODABLE = "is not JSON in UTF-8"
STATUS_STORE_DOWN = "node status store unavailable; the status was not changed"
STATUS_STORE_REFUSED = "node status store refused the change; the status was not changed"
STATUS_STORE_SILENT = (
    "node status store did not answer in time; the status may or may not have changed: "
    "read it back (GET /v1/regions) or retry"
)

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}


def message(description: str) -> dict[str, Any]:
    """OpenAPI of an answer whose body is ``{"detail": "..."}``."""
    return {"model": ErrorMessage, "description": description}


NOT_FOUND = message("No live customer has this id (never written, or deleted).")
UNREADABLE = message(
    "The customer cannot be read now: the regions that may hold it (home and replica) "
    "cannot be reached. Nothing was written."
)


def write_responses() -> dict[int | str, Any]:
    """OpenAPI of the answers a write route gives besides its 202."""
    return {
        202: {
            "headers": {
                "Idempotent-Replayed": {
                    "description": "'true' when answered from the first request with this "
                    "Idempotency-Key: nothing was published this time.",
                    "schema": {"type": "string"},
                }
            }
        },
        422: {
            # FastAPI's own validation error schema, which it documents for every other route.
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
            },
            "description": "Invalid body, path or Idempotency-Key, or an Idempotency-Key "
            "already used with a different request; `detail` names the field and the reason.",
        },
        429: {
            "model": NotAccepted,
            "headers": RETRY_AFTER,
            "description": "Not accepted: the consumers are too far behind (backpressure: the "
            "writer's or the replicator's lag is over its threshold), or the key is over its "
            "rate. Nothing was published and no Idempotency-Key was claimed: retry after "
            "Retry-After.",
        },
        503: {
            "model": NotAccepted,
            "headers": RETRY_AFTER,
            "description": "Not accepted: Kafka certainly did not take the write, or an "
            "Idempotency-Key was given and Redis cannot be reached, or (a delete) the audit "
            "trail cannot be written. Nothing was published.",
        },
        504: {
            "model": OutcomeUnknown,
            "headers": RETRY_AFTER,
            "description": "Outcome unknown: the command was handed to Kafka but not "
            "acknowledged in time, so it may or may not be applied. Retry with the same "
            "Idempotency-Key to get it applied exactly once.",
        },
    }


def status_change_responses() -> dict[int | str, Any]:
    """OpenAPI of a status change's 404 and 503."""
    return {
        404: message("No region (node) by that name."),
        503: {
            "model": ErrorMessage,
            "headers": RETRY_AFTER,
            "description": "Redis, which keeps the statuses, refused the change (out of "
            "memory, say) or cannot be reached: the status was not changed (or, if Redis did "
            "not answer in time, may or may not have been); "
            "or the audit trail cannot be written: the status was not changed. "
            "`detail` says which.",
        },
    }


# Every error the services raise (besides InvalidInput, which FastAPI answers as any 422).
REFUSALS: tuple[type[Exception], ...] = (
    DomainError,
    ConsumersBehindError,
    OutcomeUnknownError,
    KafkaUnavailableError,
    IdempotencyUnavailableError,
    CustomerUnreadableError,
    CustomerExistsError,
    AuditUnavailableError,
    KeyReusedError,
    StatusStoreUnavailableError,
    NoNodeIdError,
)


def refusal(error: Exception, *, retry_after_s: int) -> JSONResponse:
    """The HTTP answer to a domain error: nothing was written, unless it says it may have been."""
    retry = {"Retry-After": str(retry_after_s)}
    match error:
        case OutcomeUnknownError(command=command):
            body = OutcomeUnknown(
                detail=UNKNOWN_DETAIL, command_id=str(command.command_id), version=command.version
            )
            return JSONResponse(body.model_dump(), status_code=504, headers=retry)
        case ConsumersBehindError(retry_after_s=wait_s):
            refused = NotAccepted(detail=f"{error}; {NOTHING_WRITTEN}")
            headers = {"Retry-After": str(wait_s)}
            return JSONResponse(refused.model_dump(), status_code=429, headers=headers)
        case KafkaUnavailableError():
            return _not_accepted(f"{KAFKA_DOWN_DETAIL} ({error})", retry)
        case IdempotencyUnavailableError():
            return _not_accepted(f"{REDIS_DOWN_DETAIL} ({error})", retry)
        case CustomerUnreadableError() | NoNodeIdError():
            return _not_accepted(f"{error}; {NOTHING_WRITTEN}", retry)
        case AuditUnavailableError():
            return _not_accepted(f"{error}; retry later", retry)
        case StatusStoreUnavailableError(refused=refused, certainly_unchanged=unchanged):
            why = STATUS_STORE_DOWN if unchanged else STATUS_STORE_SILENT
            why = STATUS_STORE_REFUSED if refused else why
            return JSONResponse(
                {"detail": f"{why} ({error.__cause__})"}, status_code=503, headers=retry
            )
        case KeyReusedError():
            detail = [
                {"loc": ["header", HEADER], "msg": KEY_REUSED, "type": "idempotency_key_reused"}
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        case CustomerExistsError():
            return _detail(409, f"customer {error.args[0]} already exists")
        case CustomerNotFound() | RegionNotFound():
            return _detail(404, str(error))
        case RegionsUnreachable():
            return _detail(503, str(error))
    raise error


def _not_accepted(detail: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(NotAccepted(detail=detail).model_dump(), status_code=503, headers=headers)


def _detail(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Answer the domain errors every route shares, and a body that cannot be decoded."""

    async def refused(_: Request, error: Exception) -> JSONResponse:
        return refusal(error, retry_after_s=retry_after_s)

    async def undecodable(request: Request, error: Exception) -> Response:
        # FastAPI answers 400 for a body it cannot decode at all (bytes that are not UTF-8);
        # the gateway raises no 400 of its own, so every one is that, and is a 422 on the body.
        assert isinstance(error, StarletteHTTPException)
        if error.status_code != 400:
            return await http_exception_handler(request, error)
        detail = [{"loc": ["body"], "msg": BODY_UNDECODABLE, "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, undecodable)
    for kind in REFUSALS:
        app.add_exception_handler(kind, refused)
