"""The OpenAPI document says what the API enforces and every answer it can give."""

from __future__ import annotations

import os
from typing import Any

import pytest

from regionstore_gateway.edge.openapi import IDEMPOTENCY_KEY_PATTERN
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.regions import RegionMap, RegionSpec
from regionstore_shared.schemas import UF_CODES

METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture
def gateway_settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings()


@pytest.fixture
def document(gateway_settings: GatewaySettings) -> dict[str, Any]:
    return create_app(gateway_settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return resolved


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    (branch,) = branches
    return branch


class TestAnswers:
    def test_every_authenticated_operation_declares_its_refusals(
        self, document: dict[str, Any]
    ) -> None:
        secured = [(m, p, op) for m, p, op in operations(document) if op.get("security")]
        assert len(secured) > 10
        for method, path, operation in secured:
            for code in ("401", "403", "429", "503"):
                assert code in operation["responses"], (method, path, code)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            assert "Retry-After" in operation["responses"]["429"]["headers"]

    def test_every_operation_with_a_body_declares_413_and_408(
        self, document: dict[str, Any]
    ) -> None:
        with_body = [(m, p, op) for m, p, op in operations(document) if "requestBody" in op]
        assert {(m, p) for m, p, _ in with_body} >= {
            ("POST", "/v1/customers"),
            ("PUT", "/v1/customers/{customer_id}"),
            ("PATCH", "/v1/customers/{customer_id}"),
            ("POST", "/v1/customers:batch"),
            ("POST", "/create-customer"),
        }
        for method, path, operation in with_body:
            assert {"408", "413", "422"} <= set(operation["responses"]), (method, path)

    def test_every_error_answer_has_a_schema(self, document: dict[str, Any]) -> None:
        for method, path, operation in operations(document):
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")):
                    content = answer.get("content", {}).get("application/json", {})
                    assert "schema" in content, (method, path, code)

    @pytest.mark.parametrize(
        ("method", "path", "codes"),
        [
            ("GET", "/v1/customers/{customer_id}", {"404", "503"}),
            ("PATCH", "/v1/customers/{customer_id}", {"404", "503", "504"}),
            ("POST", "/v1/customers", {"409", "503", "504"}),
            ("PUT", "/v1/regions/{region}/status", {"404", "503"}),
            ("POST", "/node-status", {"404", "503"}),
        ],
    )
    def test_route_answers_are_declared(
        self, document: dict[str, Any], method: str, path: str, codes: set[str]
    ) -> None:
        assert codes <= set(document["paths"][path][method.lower()]["responses"])


class TestConstraints:
    def test_zip_prefixes_are_the_ones_the_regions_take(self, document: dict[str, Any]) -> None:
        for model in ("Customer", "CustomerFields"):
            zip_schema = document["components"]["schemas"][model]["properties"][
                "customer_zip_code_prefix"
            ]
            assert (zip_schema["minimum"], zip_schema["maximum"]) == (1000, 99999)

    def test_a_gap_between_regions_is_a_gap_in_the_schema(
        self, gateway_settings: GatewaySettings
    ) -> None:
        regions = RegionMap(
            [
                RegionSpec(name="north", zip_min=1000, zip_max=1999, replicas=("south",)),
                RegionSpec(name="south", zip_min=5000, zip_max=5999, replicas=("north",)),
            ]
        )
        app = create_app(gateway_settings.model_copy(update={"regions": list(regions.specs)}))
        zip_schema = app.openapi()["components"]["schemas"]["Customer"]["properties"][
            "customer_zip_code_prefix"
        ]
        assert zip_schema["anyOf"] == [
            {"minimum": 1000, "maximum": 1999},
            {"minimum": 5000, "maximum": 5999},
        ]

    def test_states_are_the_uf_codes(self, document: dict[str, Any]) -> None:
        schemas = document["components"]["schemas"]
        for model in ("Customer", "CustomerFields", "CustomerPatch"):
            state = non_null(schemas[model]["properties"]["customer_state"])
            assert state["enum"] == list(UF_CODES)
        for path in ("/v1/customers", "/filter-records"):
            (query,) = [
                p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "state"
            ]
            # A blank filter field is no state filter, and the schema says so.
            assert non_null(query["schema"])["enum"] == [*UF_CODES, ""]

    def test_customer_ids_have_their_pattern_and_length(self, document: dict[str, Any]) -> None:
        for method in ("get", "put", "patch", "delete"):
            (param,) = [
                p
                for p in document["paths"]["/v1/customers/{customer_id}"][method]["parameters"]
                if p["name"] == "customer_id"
            ]
            schema = param["schema"]
            assert (schema["pattern"], schema["minLength"], schema["maxLength"]) == (
                "^[A-Za-z0-9_-]+$",
                1,
                64,
            )

    def test_idempotency_keys_have_their_pattern(self, document: dict[str, Any]) -> None:
        (header,) = [
            p
            for p in document["paths"]["/v1/customers"]["post"]["parameters"]
            if p["name"] == "Idempotency-Key"
        ]
        assert non_null(header["schema"])["pattern"] == IDEMPOTENCY_KEY_PATTERN
        batch = document["components"]["schemas"]["BatchUpsert"]["properties"]
        assert non_null(batch["idempotency_key"])["pattern"] == IDEMPOTENCY_KEY_PATTERN

    def test_page_size_and_filters_have_their_bounds(self, document: dict[str, Any]) -> None:
        params = {
            p["name"]: non_null(p["schema"])
            for p in document["paths"]["/v1/customers"]["get"]["parameters"]
        }
        assert params["limit"]["minimum"] == 1
        assert params["limit"]["maximum"] == 500
        assert (params["zip_min"]["minimum"], params["zip_max"]["maximum"]) == (0, 99999)


class TestExamples:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/v1/customers"),
            ("PUT", "/v1/customers/{customer_id}"),
            ("PATCH", "/v1/customers/{customer_id}"),
            ("DELETE", "/v1/customers/{customer_id}"),
            ("GET", "/v1/customers/{customer_id}"),
            ("GET", "/v1/customers"),
            ("POST", "/v1/customers:batch"),
        ],
    )
    def test_requests_and_answers_have_examples(
        self, document: dict[str, Any], method: str, path: str
    ) -> None:
        operation = document["paths"][path][method.lower()]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert resolve(document, body["schema"]).get("examples"), "request"
        for code, answer in operation["responses"].items():
            content = answer.get("content", {}).get("application/json")
            if content is None or code == "422":
                continue
            schema = content["schema"]
            shapes = [resolve(document, s) for s in schema.get("anyOf", [schema])]
            assert content.get("example") or all(s.get("examples") for s in shapes), code
