"""Error answers: every 422 names the field and the reason (FastAPI's validation shape), a
write that was not acknowledged says whether it may still land (504) or certainly not (503),
and a status change Redis could not take is a 503 that says the status was not changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from regionstore_gateway.audit_trail import AuditUnavailableError
from regionstore_gateway.idempotency import HEADER, IdempotencyUnavailableError, KeyReusedError
from regionstore_gateway.models import ErrorMessage, NotAccepted, OutcomeUnknown
from regionstore_gateway.writes import (
    CustomerUnreadableError,
    KafkaUnavailableError,
    OutcomeUnknownError,
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
STATUS_STORE_SILENT = (
    "node status store did not answer in time; the status may or may not have changed: "
    "read it back (GET /v1/regions) or retry"
)


def field_error(
    loc: Sequence[str | int], message: str, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 for one field."""
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": kind}])


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
            "description": "Redis, which keeps the statuses, cannot be reached: the status was "
            "not changed (or, if Redis did not answer in time, may or may not have been); "
            "or the audit trail cannot be written: the status was not changed. "
            "`detail` says which.",
        },
    }


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Answer the write errors every write route shares."""
    retry = {"Retry-After": str(retry_after_s)}

    async def unknown(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, OutcomeUnknownError)
        body = OutcomeUnknown(
            detail=UNKNOWN_DETAIL,
            command_id=str(error.command.command_id),
            version=error.command.version,
        )
        return JSONResponse(body.model_dump(), status_code=504, headers=retry)

    def not_accepted(
        why: Callable[[Exception], str],
    ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def answer(_: Request, error: Exception) -> JSONResponse:
            body = NotAccepted(detail=why(error))
            return JSONResponse(body.model_dump(), status_code=503, headers=retry)

        return answer

    async def status_store_down(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StatusStoreUnavailableError)
        detail = STATUS_STORE_DOWN if error.certainly_unchanged else STATUS_STORE_SILENT
        return JSONResponse(
            {"detail": f"{detail} ({error.__cause__})"}, status_code=503, headers=retry
        )

    async def key_reused(_: Request, __: Exception) -> JSONResponse:
        detail = [{"loc": ["header", HEADER], "msg": KEY_REUSED, "type": "idempotency_key_reused"}]
        return JSONResponse({"detail": detail}, status_code=422)

    async def undecodable(request: Request, error: Exception) -> Response:
        # FastAPI answers 400 for a body it cannot decode at all (bytes that are not UTF-8);
        # the gateway raises no 400 of its own, so every one is that, and is a 422 on the body.
        assert isinstance(error, StarletteHTTPException)
        if error.status_code != 400:
            return await http_exception_handler(request, error)
        detail = [{"loc": ["body"], "msg": BODY_UNDECODABLE, "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, undecodable)
    app.add_exception_handler(OutcomeUnknownError, unknown)
    kafka_down = not_accepted(lambda e: f"{KAFKA_DOWN_DETAIL} ({e})")
    redis_down = not_accepted(lambda e: f"{REDIS_DOWN_DETAIL} ({e})")
    unreadable = not_accepted(lambda e: f"{e}; {NOTHING_WRITTEN}")
    app.add_exception_handler(KafkaUnavailableError, kafka_down)
    app.add_exception_handler(IdempotencyUnavailableError, redis_down)
    app.add_exception_handler(CustomerUnreadableError, unreadable)
    app.add_exception_handler(AuditUnavailableError, not_accepted(lambda e: f"{e}; retry later"))
    app.add_exception_handler(KeyReusedError, key_reused)
    app.add_exception_handler(StatusStoreUnavailableError, status_store_down)
