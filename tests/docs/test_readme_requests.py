"""The README's first requests ask for routes the gateway has, with bodies it accepts.

The OpenAPI document of the app (no stack) says which paths and methods exist and which model
each body is; the body is validated by that model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from regionstore_gateway import bodies as models
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared import schemas
from tests.docs.checks import curl_requests, route_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("REGIONSTORE_"):
                patch.delenv(name)
        return create_app(GatewaySettings()).openapi()


def body_models() -> dict[str, type[BaseModel]]:
    return {
        value.__name__: value
        for module in (models, schemas)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseModel)
    }


def test_the_walkthrough_is_found() -> None:
    requests = curl_requests((ROOT / "README.md").read_text())
    methods = {request.method for request in requests}
    assert {"GET", "POST", "PUT"} <= methods, requests


def test_every_request_is_a_route_with_a_body_it_accepts(document: dict[str, Any]) -> None:
    for request in curl_requests((ROOT / "README.md").read_text()):
        template = route_of(document["paths"], request.path)
        assert template, f"README.md:{request.line}: no route {request.path}"
        operation = document["paths"][template].get(request.method.lower())
        assert operation, f"README.md:{request.line}: no {request.method} {template}"
        schema = operation.get("requestBody", {}).get("content", {}).get("application/json")
        assert (request.body is None) == (schema is None), f"README.md:{request.line}: body"
        if request.body is not None and schema is not None:
            model = body_models()[schema["schema"]["$ref"].rsplit("/", 1)[-1]]
            model.model_validate(json.loads(request.body))


def test_a_wrong_request_is_caught(document: dict[str, Any]) -> None:
    text = (
        '```sh\ncurl -s -X PUT "$GW/v1/regions/region_1/state" -H "$AUTH" \\\n'
        '  -d \'{"status": "unavailable"}\'\ncurl -s "$GW/v1/customer/c-1"\n```\n'
    )
    requests = curl_requests(text)
    assert [(r.line, r.method, r.path) for r in requests] == [
        (2, "PUT", "/v1/regions/region_1/state"),
        (4, "GET", "/v1/customer/c-1"),
    ]
    assert [route_of(document["paths"], r.path) for r in requests] == [None, None]
    assert (
        route_of(document["paths"], "/v1/regions/region_1/status") == "/v1/regions/{region}/status"
    )
