"""Request dependencies: typed views of the app state, the services, and shared parameters.

The services are built once, with the app state (see :func:`~regionstore_gateway.state.serving`);
these only hand them out.

Coroutines, so FastAPI calls them inline instead of handing each to its thread pool.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

from fastapi import Depends, Header, Query, Request

from regionstore_gateway.adapters.idempotency import HEADER, IdempotencyKey
from regionstore_gateway.auth import Authenticator
from regionstore_gateway.services.customers import CustomerService
from regionstore_gateway.services.export import ExportService
from regionstore_gateway.services.regions import RegionService
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.status import StatusBoard


async def _auth(request: Request) -> Authenticator:
    return cast(Authenticator, request.state.auth)


async def _settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.state.settings)


async def _board(request: Request) -> StatusBoard:
    return cast(StatusBoard, request.state.board)


async def _customers(request: Request) -> CustomerService:
    return cast(CustomerService, request.state.customers)


async def _exports(request: Request) -> ExportService:
    return cast(ExportService, request.state.exports)


async def _regions(request: Request) -> RegionService:
    return cast(RegionService, request.state.regions)


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
AuthDep = Annotated[Authenticator, Depends(_auth)]
BoardDep = Annotated[StatusBoard, Depends(_board)]
CustomersDep = Annotated[CustomerService, Depends(_customers)]
RegionsDep = Annotated[RegionService, Depends(_regions)]
ExportsDep = Annotated[ExportService, Depends(_exports)]
WaitQuery = Annotated[
    Literal["applied"] | None,
    Query(
        description="'applied': wait (bounded) until the home region holds this write, or one "
        "acknowledged after it."
    ),
]
KeyHeader = Annotated[
    IdempotencyKey | None,
    Header(
        alias=HEADER,
        description="Makes the write safe to retry: 1-200 printable ASCII characters, unique per "
        "intended write (a UUID, say). A retry with the same key and request gets the same "
        "command_id and version and is applied once; after a 504 it republishes that same "
        "command. The same key with a different request is a 422. Kept for "
        "`idempotency_ttl_s` (a day). With a key, the write needs Redis (else 503).",
    ),
]
BatchKeyHeader = Annotated[
    IdempotencyKey | None,
    Header(
        alias=HEADER,
        description="One key for the whole batch (then no item may carry an idempotency_key): "
        "a retry of the same request publishes each item as the same command (same command_id "
        "and version) unless an earlier attempt got it acknowledged, which is answered from "
        "the first answer. Redis keeps one small record for the batch, not one per item: the "
        "way to load in bulk. The same key with a different request is a 422. Kept for "
        "`idempotency_ttl_s` (a day). With a key, the batch needs Redis (else 503).",
    ),
]
