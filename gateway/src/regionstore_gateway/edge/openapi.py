"""The OpenAPI document: the answers every route shares, and the rules the types cannot say.

Routes declare what is theirs (a write's 503 and 504, a lookup's 404) in their decorators. The
answers of the layers in front of every route are added here, from what each operation is:
an authenticated one can be refused 401, 403 or 429 (and 503 when keys cannot be checked); one
with a request body can be refused 413 (too large) or 408 (too slow); one with parameters or a
body can be refused 422. So are the rules checked by code rather than by a field's type: the zip
prefixes the configured regions take, the UF codes, the characters of an Idempotency-Key.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from regionstore_gateway.adapters.idempotency import HEADER
from regionstore_gateway.bodies import BatchItem, ErrorMessage
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import UF_CODES

RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}
_MESSAGE = {"$ref": "#/components/schemas/ErrorMessage"}
_VALIDATION = {"$ref": "#/components/schemas/HTTPValidationError"}
# What the Idempotency-Key's validator accepts: printable ASCII (its length is in the schema).
IDEMPOTENCY_KEY_PATTERN = "^[ -~]+$"
_CUSTOMER_EXAMPLE = {
    "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 14409,
    "customer_city": "franca",
    "customer_state": "SP",
}


def _json(schema: dict[str, Any], example: object) -> dict[str, Any]:
    return {"application/json": {"schema": schema, "example": example}}


def _field_error(loc: list[str], msg: str, kind: str) -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}


AUTHENTICATED: dict[str, dict[str, Any]] = {
    "401": {
        "description": "No API key, or one that is unknown, revoked or wrong.",
        "headers": {
            "WWW-Authenticate": {
                "description": 'How to authenticate: `Bearer realm="regionstore"`.',
                "schema": {"type": "string"},
            }
        },
        "content": _json(
            _MESSAGE, {"detail": "a valid API key is required: Authorization: Bearer <key>"}
        ),
    },
    "403": {
        "description": "The key's role does not allow this operation, or a state change "
        "signed in by the session cookie came without its X-CSRF-Token.",
        "content": _json(
            _MESSAGE,
            {"detail": "this operation needs the writer role; API key 0a1b2c3d4e5f is a reader"},
        ),
    },
    "429": {
        "description": "Over the key's request rate.",
        "headers": {"Retry-After": RETRY_AFTER},
        "content": _json(_MESSAGE, {"detail": "rate limit of API key 0a1b2c3d4e5f exceeded"}),
    },
    "503": {
        "description": "The API key cannot be checked now (its store cannot be reached).",
        "headers": {"Retry-After": RETRY_AFTER},
        "content": _json(_MESSAGE, {"detail": "API keys cannot be checked now; retry later"}),
    },
}
WITH_BODY: dict[str, dict[str, Any]] = {
    "408": {
        "description": "The request body did not arrive in time; the connection is closed.",
        "content": _json(
            _VALIDATION, _field_error(["body"], "request body not received within 30 s", "timeout")
        ),
    },
    "413": {
        "description": "The request body is over the size limit.",
        "content": _json(
            _VALIDATION, _field_error(["body"], "request body over 4194304 bytes", "too_large")
        ),
    },
}
INVALID: dict[str, dict[str, Any]] = {
    "422": {
        "description": "Invalid input; `detail` names each field at fault and the reason.",
        "content": _json(
            _VALIDATION,
            _field_error(
                ["body", "customer_zip_code_prefix"],
                "Input should be less than or equal to 99999",
                "less_than_equal",
            ),
        ),
    }
}


def _merge(responses: dict[str, Any], code: str, extra: dict[str, Any]) -> None:
    """Add a shared answer to an operation; where the route declares the code itself, its body
    may be either shape."""
    mine = responses.get(code)
    if mine is None:
        responses[code] = copy.deepcopy(extra)
        return
    theirs = mine.setdefault("content", {}).setdefault("application/json", {})
    schema = theirs.get("schema")
    added = extra["content"]["application/json"]["schema"]
    if schema is None:
        theirs["schema"] = added
    elif schema != added and added not in schema.get("anyOf", []):
        theirs["schema"] = {"anyOf": [*schema.get("anyOf", [schema]), added]}
    for name, header in extra.get("headers", {}).items():
        mine.setdefault("headers", {}).setdefault(name, header)
    mine["description"] = f"{mine.get('description', '')} Or: {extra['description']}".strip()


def _zip_schema(regions: RegionMap) -> dict[str, Any]:
    ranges = [{"minimum": spec.zip_min, "maximum": spec.zip_max} for spec in regions.specs]
    merged: list[dict[str, int]] = []
    for bounds in ranges:
        if merged and bounds["minimum"] == merged[-1]["maximum"] + 1:
            merged[-1]["maximum"] = bounds["maximum"]
        else:
            merged.append(dict(bounds))
    return merged[0] if len(merged) == 1 else {"anyOf": merged}


def _constrain(schema: dict[str, Any], rule: dict[str, Any]) -> None:
    """Apply ``rule`` to a property's schema, or to its non-null branch when it is optional."""
    branches = schema.get("anyOf")
    targets = [b for b in branches if b.get("type") != "null"] if branches else [schema]
    for target in targets:
        target.update(rule)
        if "enum" in rule:
            target.pop("minLength", None)
            target.pop("maxLength", None)


def _constrain_properties(schemas: dict[str, Any], regions: RegionMap) -> None:
    rules = {
        "customer_zip_code_prefix": _zip_schema(regions),
        "customer_state": {"enum": list(UF_CODES)},
        "idempotency_key": {"pattern": IDEMPOTENCY_KEY_PATTERN},
    }
    for schema in schemas.values():
        for name, prop in schema.get("properties", {}).items():
            if name in rules:
                _constrain(prop, rules[name])


def _constrain_parameters(operation: dict[str, Any], settings: GatewaySettings) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["name"] == HEADER:
            _constrain(parameter["schema"], {"pattern": IDEMPOTENCY_KEY_PATTERN})
        elif parameter["name"] == "state":
            # Empty is no state filter, as a form's blank field sends it.
            _constrain(parameter["schema"], {"enum": [*UF_CODES, ""]})
        elif parameter["name"] == "limit":
            _constrain(parameter["schema"], {"maximum": settings.api.max_page_size})
        elif parameter["name"] == "region" and parameter["in"] == "query":
            _constrain(parameter["schema"], {"enum": list(settings.region_map.names)})


def _batch_body(document: dict[str, Any], max_items: int) -> None:
    """The batch route reads its body item by item (to answer each); this is what it takes."""
    operation = document["paths"].get("/v1/customers:batch", {}).get("post")
    if operation is None:
        return
    item = TypeAdapter[BatchItem](BatchItem).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name, schema in item.pop("$defs", {}).items():
        document["components"]["schemas"].setdefault(name, schema)
    example = {
        "items": [
            {"op": "upsert", "customer": _CUSTOMER_EXAMPLE, "idempotency_key": "3f1c9a4e-0001"},
            {"op": "delete", "customer_id": "c-2"},
        ]
    }
    operation["requestBody"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "items": {
                "type": "array",
                "maxItems": max_items,
                # Any item is taken into the batch: one of another shape is rejected on its
                # own in `results` and the valid ones are still accepted.
                "items": {"anyOf": [item, {"description": "Rejected in `results`."}]},
                "description": "Each item is validated and answered on its own: an invalid "
                "item is rejected in `results` and the valid ones are still taken.",
            }
        },
        "examples": [example],
    }


def complete(document: dict[str, Any], settings: GatewaySettings) -> dict[str, Any]:
    """Add the shared answers and the coded rules to an OpenAPI document, in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorMessage"] = ErrorMessage.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    _batch_body(document, settings.api.max_batch_items)
    _constrain_properties(schemas, settings.region_map)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            _constrain_parameters(operation, settings)
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                for code, answer in AUTHENTICATED.items():
                    _merge(responses, code, answer)
            if "requestBody" in operation:
                for code, answer in WITH_BODY.items():
                    _merge(responses, code, answer)
            if "requestBody" in operation or operation.get("parameters"):
                for code, answer in INVALID.items():
                    _merge(responses, code, answer)
            for code, answer in responses.items():
                # An error declared without a body is an HTTPException's: {"detail": "..."}.
                if code.startswith(("4", "5")) and not answer.get("content"):
                    answer["content"] = {"application/json": {"schema": _MESSAGE}}
    return document


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Serve the completed document at the app's openapi_url (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                    separate_input_output_schemas=app.separate_input_output_schemas,
                ),
                settings,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
