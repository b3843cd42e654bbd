"""POST /v1/customers: the plain create's short way, and every other request through FastAPI's."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from app_fakes import CUSTOMER, SEND_FAILS, Gateway, body
from auth_fakes import KEYS
from fastapi import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from regionstore_gateway.api.customers import accepted, plain_create
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.auth.middleware import PRINCIPAL_SCOPE_KEY
from regionstore_gateway.deps import _customers
from regionstore_gateway.models import Accepted
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_gateway.writes import Written
from regionstore_shared.schemas import Customer

JSON = (b"content-type", b"application/json")
WRITER = Principal("0123456789ab", Role.WRITER)


def request(
    payload: bytes = json.dumps(body()).encode(),
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (JSON,),
    query: bytes = b"",
    principal: Principal | None = WRITER,
    error: Exception | None = None,
) -> Request:
    """A POST /v1/customers as the route sees it, after authentication."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/customers",
        "query_string": query,
        "headers": list(headers),
    }
    if principal is not None:
        scope[PRINCIPAL_SCOPE_KEY] = principal

    async def receive() -> Message:
        if error is not None:
            raise error
        return {"type": "http.request", "body": payload, "more_body": False}

    return Request(scope, receive)


class TestWhatIsPlain:
    async def test_a_writers_json_customer_is_plain(self) -> None:
        assert await plain_create(request()) == Customer.model_validate(body())

    async def test_an_operator_may_too(self) -> None:
        operator = Principal("0123456789ab", Role.OPERATOR)
        assert await plain_create(request(principal=operator)) is not None

    @pytest.mark.parametrize(
        "made",
        [
            pytest.param(lambda: request(query=b"wait=applied"), id="a query"),
            pytest.param(
                lambda: request(headers=(JSON, (b"if-none-match", b"*"))), id="create-only"
            ),
            pytest.param(lambda: request(headers=(JSON, (b"idempotency-key", b"k"))), id="a key"),
            pytest.param(
                lambda: request(headers=((b"content-type", b"application/json; charset=utf-8"),)),
                id="a content type with parameters",
            ),
            pytest.param(lambda: request(headers=((b"content-type", b"text/plain"),)), id="text"),
            pytest.param(lambda: request(headers=()), id="no content type"),
            pytest.param(lambda: request(principal=None), id="no principal"),
            pytest.param(
                lambda: request(principal=Principal("0123456789ab", Role.READER)), id="a reader"
            ),
            pytest.param(lambda: request(b""), id="no body"),
            pytest.param(lambda: request(b"{not json"), id="not JSON"),
            pytest.param(lambda: request(b"\xff\xfe"), id="not UTF-8"),
            pytest.param(lambda: request(b"null"), id="null"),
            pytest.param(
                lambda: request(json.dumps(body(zip_prefix=-1)).encode()), id="not a customer"
            ),
            pytest.param(
                lambda: request(error=ClientDisconnect()), id="a body that cannot be read"
            ),
        ],
    )
    async def test_anything_else_is_left_to_fastapi(self, made: Any) -> None:
        assert await plain_create(made()) is None

    async def test_a_body_refused_while_read_is_refused_as_in_fastapis_handler(self) -> None:
        # The body limit and deadline answer through an HTTPException raised by receive().
        too_large = HTTPException(413, detail="too large")
        with pytest.raises(HTTPException) as raised:
            await plain_create(request(error=too_large))
        assert raised.value is too_large


def test_the_answer_is_an_accepted_field_for_field() -> None:
    # The short way sends this dict as it is; FastAPI's way validates it as Accepted first.
    command = Gateway(GatewaySettings()).writes.upsert_command(Customer.model_validate(body()))
    answer = accepted(Written(command, applied=False))
    assert list(answer) == list(Accepted.model_fields)
    assert Accepted.model_validate(answer).model_dump(mode="json") == answer


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return Gateway(GatewaySettings(api=ApiSettings(retry_after_s=7)))


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


def through_fastapi(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers that take a create the way FastAPI handles it (a content type with a charset)."""
    return {"content-type": "application/json; charset=utf-8", **(headers or {})}


class TestThroughTheApp:
    async def test_a_plain_create_is_answered_as_fastapi_answers_it(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        content = json.dumps(body()).encode()
        short = await client.post("/v1/customers", content=content, headers=dict([JSON]))
        usual = await client.post("/v1/customers", content=content, headers=through_fastapi())
        assert (short.status_code, usual.status_code) == (202, 202)
        assert short.headers.keys() == usual.headers.keys()
        assert short.headers["content-type"] == usual.headers["content-type"]
        assert list(short.json()) == list(usual.json())
        different = {"command_id", "version"}
        assert {k: v for k, v in short.json().items() if k not in different} == {
            k: v for k, v in usual.json().items() if k not in different
        }
        first, second = gateway.producer.commands()
        stamps = {*different, "issued_at_ms"}
        assert first.model_dump(exclude=stamps) == second.model_dump(exclude=stamps)
        assert short.json()["version"] == first.version

    async def test_a_plain_create_runs_none_of_the_routes_dependencies(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        called: list[str] = []

        async def customers() -> object:
            called.append("customers")
            return gateway.state["customers"]

        gateway.app.dependency_overrides[_customers] = customers
        assert (await client.post("/v1/customers", json=body())).status_code == 202
        assert called == []
        response = await client.post("/v1/customers", json=body(), headers=through_fastapi())
        assert response.status_code == 202
        assert called == ["customers"]

    @pytest.mark.parametrize(
        ("payload", "loc", "kind"),
        [
            (body(zip_prefix=100_000), ["body", "customer_zip_code_prefix"], "less_than_equal"),
            (body(zip_prefix=500), ["body", "customer_zip_code_prefix"], "value_error"),
            ({**body(), "extra": 1}, ["body", "extra"], "extra_forbidden"),
        ],
    )
    async def test_an_invalid_customer_is_a_422_naming_the_field_and_nothing_is_sent(
        self,
        gateway: Gateway,
        client: httpx.AsyncClient,
        payload: dict[str, Any],
        loc: list[str],
        kind: str,
    ) -> None:
        response = await client.post("/v1/customers", json=payload)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert (error["loc"], error["type"]) == (loc, kind)
        assert error["msg"]
        assert gateway.producer.sent == []

    async def test_a_body_that_is_not_json_is_a_422_on_the_body(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        for content in (b"{not json", b"\xff\xfe"):
            response = await client.post(
                "/v1/customers", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422
            assert response.json()["detail"][0]["type"] == "json_invalid"
        assert gateway.producer.sent == []

    async def test_a_reader_is_a_403_and_nothing_is_sent(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        reader = {"Authorization": f"Bearer {KEYS.issue(Role.READER)}"}
        response = await client.post("/v1/customers", json=body(), headers=reader)
        assert response.status_code == 403
        assert "needs the writer role" in response.json()["detail"]
        assert gateway.producer.sent == []

    async def test_a_bad_wait_is_a_422_on_the_query(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/customers?wait=soon", json=body())
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "wait"]
        assert gateway.producer.sent == []

    async def test_create_only_is_still_a_409_for_a_live_customer(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.live("region_1", 5)
        response = await client.post("/v1/customers", json=body(), headers={"If-None-Match": "*"})
        assert response.status_code == 409
        assert CUSTOMER in response.json()["detail"]
        assert gateway.producer.sent == []

    async def test_kafka_refusing_a_plain_create_is_a_503_and_nothing_was_accepted(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        gateway.producer.script = [SEND_FAILS]
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["outcome"] == "not_accepted"
