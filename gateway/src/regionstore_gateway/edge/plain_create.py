"""The plain create, ``POST /v1/customers`` with a writer's JSON customer and nothing else,
answered in front of FastAPI's router.

For a write, FastAPI's routing, its exception middleware and the route's own handling
(resolving its dependencies, reading its query and header parameters, validating the returned
body against the response model) cost more CPU than the write itself, and nearly every write is
a plain create, which needs none of them. :class:`PlainCreates` sits inside the gateway's other
middleware, so authentication, rate limits, body limits and deadlines, metrics and security
headers apply as to any request. It answers a plain create with the call the route makes and
the answer the route gives; an error is answered by the app's exception handlers, as the
route's would be. Any other request, and a body that is not a customer, goes on to the route as
it came (the body it read is replayed), so every refusal keeps FastAPI's shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regionstore_gateway.adapters.idempotency import HEADER
from regionstore_gateway.api.customers import create_customer, router
from regionstore_gateway.auth import Principal, Role
from regionstore_gateway.auth.authentication import PRINCIPAL_SCOPE_KEY
from regionstore_gateway.services.customers import CustomerService
from regionstore_gateway.services.publishing import WriteRequest
from regionstore_shared.schemas import Customer
from regionstore_shared.tracing import name_request_span, tracing_enabled

ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]

# Headers that make a create more than plain: the route reads them.
_NOT_PLAIN = frozenset({b"if-none-match", HEADER.lower().encode()})


def create_route() -> APIRoute:
    """The route of ``POST /v1/customers``, as the customer routes declare it."""
    (route,) = (
        r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is create_customer
    )
    return route


def plain_head(scope: Scope) -> bool:
    """Whether a request to the create route is a writer's JSON body with nothing else."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    if (
        scope["query_string"]
        or not isinstance(principal, Principal)
        or not principal.role.allows(Role.WRITER)
    ):
        return False
    content_type = None
    for name, value in scope["headers"]:
        if name in _NOT_PLAIN:
            return False
        if name == b"content-type" and content_type is None:
            content_type = value
    return content_type == b"application/json"


def customer_of(body: object) -> Customer | None:
    """The customer a decoded body is; None for anything else, left to the route to refuse."""
    try:
        return Customer.model_validate(body)
    except ValidationError:
        return None


class PlainCreates:
    """Answers the plain create before routing; passes every other request on.

    ``route`` is the create route (its matcher decides what is a create, and metrics name it
    as they would had it been routed); ``handlers`` the app's exception handlers.
    """

    def __init__(
        self, app: ASGIApp, *, route: APIRoute, handlers: Mapping[Any, ExceptionHandler]
    ) -> None:
        self.app = app
        self.route = route
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match, routed = self.route.matches(scope)
        if match is not Match.FULL or not plain_head(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            body = await request.body()
        except HTTPException as error:  # over the body limit, or too slow
            await self._refuse(request, error, send)
            return
        except Exception:  # anything else the route answers as it does
            await self.app(scope, receive, send)
            return
        try:
            customer = customer_of(await request.json())
        except ValueError:  # not JSON in UTF-8
            customer = None
        if customer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope.update(routed)
        if tracing_enabled():
            name_request_span("POST", self.route.path)
        customers: CustomerService = scope["state"]["customers"]
        try:
            answer = await customers.upsert(customer, WriteRequest())
        except Exception as error:
            await self._refuse(request, error, send)
            return
        await JSONResponse(answer.body, status_code=202)(scope, receive, send)

    async def _refuse(self, request: Request, error: Exception, send: Send) -> None:
        """Answer an error as the app's exception middleware would; re-raise one it has no
        handler for (a 500)."""
        handler = self.handlers.get(error.status_code) if isinstance(error, HTTPException) else None
        if handler is None:
            kinds = (kind for kind in type(error).__mro__ if kind in self.handlers)
            handler = next((self.handlers[kind] for kind in kinds), None)
        if handler is None:
            raise error
        answer = handler(request, error)
        response = await answer if inspect.isawaitable(answer) else answer
        await response(request.scope, request.receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read in front of it."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying
