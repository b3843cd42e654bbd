"""POST /v1/customers: the plain create answered before routing, and every other request
through FastAPI's route."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from app_fakes import CUSTOMER, Gateway, body
from auth_fakes import KEYS
from fastapi import HTTPException
from prometheus_client import REGISTRY
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from regionstore_gateway.adapters.command_topic import Published
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.auth.authentication import PRINCIPAL_SCOPE_KEY
from regionstore_gateway.bodies import Accepted
from regionstore_gateway.deps import _customers
from regionstore_gateway.edge.plain_create import (
    PlainCreates,
    create_route,
    customer_of,
    plain_head,
)
from regionstore_gateway.services.publishing import accepted
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_shared.schemas import Customer

JSON = (b"content-type", b"application/json")
WRITER = Principal("0123456789ab", Role.WRITER)
PAYLOAD = json.dumps(body()).encode()


def scope_of(
    *,
    method: str = "POST",
    path: str = "/v1/customers",
    headers: tuple[tuple[bytes, bytes], ...] = (JSON,),
    query: bytes = b"",
    principal: Principal | None = WRITER,
) -> Scope:
    """A request to the gateway as the innermost middleware sees it, after authentication."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": list(headers),
        "state": {},
    }
    if principal is not None:
        scope[PRINCIPAL_SCOPE_KEY] = principal
    return scope


class TestWhatIsPlain:
    def test_a_writers_json_body_is_plain(self) -> None:
        assert plain_head(scope_of())

    def test_an_operator_may_too(self) -> None:
        assert plain_head(scope_of(principal=Principal("0123456789ab", Role.OPERATOR)))

    @pytest.mark.parametrize(
        "scope",
        [
            pytest.param(scope_of(query=b"wait=applied"), id="a query"),
            pytest.param(scope_of(headers=(JSON, (b"if-none-match", b"*"))), id="create-only"),
            pytest.param(scope_of(headers=(JSON, (b"idempotency-key", b"k"))), id="a key"),
            pytest.param(
                scope_of(headers=((b"content-type", b"application/json; charset=utf-8"),)),
                id="a content type with parameters",
            ),
            pytest.param(scope_of(headers=((b"content-type", b"text/plain"),)), id="text"),
            pytest.param(scope_of(headers=()), id="no content type"),
            pytest.param(scope_of(principal=None), id="no principal"),
            pytest.param(scope_of(principal=Principal("0123456789ab", Role.READER)), id="a reader"),
        ],
    )
    def test_anything_else_is_not(self, scope: Scope) -> None:
        assert not plain_head(scope)

    def test_a_body_is_a_customer_or_nothing(self) -> None:
        assert customer_of(body()) == Customer.model_validate(body())
        for other in (None, [], {}, body(zip_prefix=-1), {**body(), "extra": 1}):
            assert customer_of(other) is None


def test_the_route_reads_nothing_a_plain_create_could_carry() -> None:
    # A plain create has no query and neither of these headers, so the route would read nothing
    # but the body from it. A parameter added to the route must be added to plain_head too.
    dependant = create_route().dependant
    assert [p.name for p in dependant.query_params] == ["wait"]
    assert {p.alias.lower() for p in dependant.header_params} == {
        "if-none-match",
        "idempotency-key",
    }
    assert [p.name for p in dependant.body_params] == ["customer"]
    assert not dependant.path_params
    assert not dependant.cookie_params


class Route:
    """What the inner app saw: whether it was called, and the body it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await PlainTextResponse("routed")(scope, receive, send)


class Exchange:
    """One request through PlainCreates, with the messages it sent back."""

    def __init__(self, payload: bytes = PAYLOAD, error: Exception | None = None) -> None:
        self.payload = payload
        self.error = error
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return {"type": "http.request", "body": self.payload, "more_body": False}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])


async def refused(_: Request, error: Exception) -> Response:
    return PlainTextResponse(f"refused {error!r}", status_code=418)


def lane(route: Route, handlers: dict[Any, Any] | None = None) -> PlainCreates:
    return PlainCreates(route, route=create_route(), handlers=handlers or {})


class TestPlainCreates:
    @pytest.mark.parametrize(
        "scope",
        [
            pytest.param(scope_of(method="GET"), id="another method"),
            pytest.param(scope_of(path="/v1/customers/c-1"), id="another path"),
            pytest.param(scope_of(path="/v1/customers:batch"), id="the batch"),
            pytest.param(scope_of(query=b"wait=applied"), id="not plain"),
        ],
    )
    async def test_other_requests_go_on_unread(self, scope: Scope) -> None:
        route, exchange = Route(), Exchange()
        await lane(route)(scope, exchange.receive, exchange.send)
        assert route.bodies == [PAYLOAD]
        assert exchange.reads == 1  # by the route, not before it

    @pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b"null", b'{"customer_id": 1}'])
    async def test_a_body_that_is_not_a_customer_goes_on_as_it_came(self, payload: bytes) -> None:
        route, exchange = Route(), Exchange(payload)
        await lane(route)(scope_of(), exchange.receive, exchange.send)
        assert route.bodies == [payload]
        assert exchange.status == 200

    async def test_a_body_refused_while_read_is_answered_by_its_handler(self) -> None:
        route, exchange = Route(), Exchange(error=HTTPException(413, detail="too large"))
        await lane(route, {HTTPException: refused})(scope_of(), exchange.receive, exchange.send)
        assert route.bodies == []
        assert exchange.status == 418
        assert b"too large" in exchange.sent[1]["body"]

    async def test_a_handler_for_the_status_comes_before_one_for_the_class(self) -> None:
        async def by_status(_: Request, __: Exception) -> Response:
            return PlainTextResponse("by status", status_code=413)

        route, exchange = Route(), Exchange(error=HTTPException(413))
        handlers = {HTTPException: refused, 413: by_status}
        await lane(route, handlers)(scope_of(), exchange.receive, exchange.send)
        assert (exchange.status, exchange.sent[1]["body"]) == (413, b"by status")

    async def test_a_body_that_cannot_be_read_otherwise_is_left_to_the_route(self) -> None:
        route, exchange = Route(), Exchange(error=ClientDisconnect())
        with pytest.raises(ClientDisconnect):
            await lane(route)(scope_of(), exchange.receive, exchange.send)
        assert exchange.reads == 2  # once here, once by the route, which meets the same end


def test_the_answer_is_an_accepted_field_for_field() -> None:
    # The short way sends this dict as it is; FastAPI's way validates it as Accepted first.
    command = Gateway(GatewaySettings()).writes.upsert_command(Customer.model_validate(body()))
    answer = accepted(Published(command, applied=False))
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
        # ``after``: the second was made once the first's acknowledgement was seen.
        stamps = {*different, "issued_at_ms", "sealed", "after"}
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

    async def test_a_plain_create_is_counted_under_its_route(
        self, gateway: Gateway, client: httpx.AsyncClient
    ) -> None:
        labels = {"route": "/v1/customers", "status": "202"}
        before = REGISTRY.get_sample_value("regionstore_http_requests_total", labels) or 0.0
        assert (await client.post("/v1/customers", json=body())).status_code == 202
        after = REGISTRY.get_sample_value("regionstore_http_requests_total", labels)
        assert after == before + 1

    async def test_an_error_no_handler_answers_is_not_swallowed(
        self, gateway: Gateway, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken(*_: object, **__: object) -> None:
            raise RuntimeError("the service broke")

        monkeypatch.setattr(gateway.state["customers"], "upsert", broken)
        with pytest.raises(RuntimeError, match="the service broke"):
            await client.post("/v1/customers", json=body())
