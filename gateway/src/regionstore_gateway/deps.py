"""Request dependencies: typed views of the app state, the services, and shared parameters.

Coroutines, so FastAPI calls them inline instead of handing each to its thread pool.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Header, Query, Request

from regionstore_gateway.audit_tail import RecentChanges
from regionstore_gateway.audit_trail import AuditTrail
from regionstore_gateway.auth import Authenticator
from regionstore_gateway.idempotency import HEADER, IdempotencyKey, IdempotencyStore
from regionstore_gateway.repository import CustomerRepository
from regionstore_gateway.services.customers import CustomerService
from regionstore_gateway.services.regions import RegionService
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.writes import Writes
from regionstore_shared.applied import AppliedTotals
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clock import HybridClock
from regionstore_shared.status import StatusBoard
from regionstore_shared.status_events import StatusChanges


async def _auth(request: Request) -> Authenticator:
    return cast(Authenticator, request.state.auth)


async def _settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.state.settings)


async def _producer(request: Request) -> AIOKafkaProducer:
    return request.state.producer


async def _board(request: Request) -> StatusBoard:
    return cast(StatusBoard, request.state.board)


async def _repository(request: Request) -> CustomerRepository:
    return cast(CustomerRepository, request.state.repository)


async def _clock(request: Request) -> HybridClock:
    return cast(HybridClock, request.state.clock)


async def _idempotency(request: Request) -> IdempotencyStore:
    return cast(IdempotencyStore, request.state.idempotency)


async def _changes(request: Request) -> StatusChanges:
    return cast(StatusChanges, request.state.changes)


async def _backlog(request: Request) -> BacklogProbe:
    return cast(BacklogProbe, request.state.backlog)


async def _applied(request: Request) -> AppliedTotals:
    return cast(AppliedTotals, request.state.applied)


async def _audit(request: Request) -> AuditTrail:
    return cast(AuditTrail, request.state.audit)


async def _recent(request: Request) -> RecentChanges:
    return cast(RecentChanges, request.state.recent)


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
AuthDep = Annotated[Authenticator, Depends(_auth)]
ProducerDep = Annotated[AIOKafkaProducer, Depends(_producer)]
BoardDep = Annotated[StatusBoard, Depends(_board)]
RepositoryDep = Annotated[CustomerRepository, Depends(_repository)]
ClockDep = Annotated[HybridClock, Depends(_clock)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(_idempotency)]
ChangesDep = Annotated[StatusChanges, Depends(_changes)]
BacklogDep = Annotated[BacklogProbe, Depends(_backlog)]
AppliedDep = Annotated[AppliedTotals, Depends(_applied)]
AuditDep = Annotated[AuditTrail, Depends(_audit)]
RecentDep = Annotated[RecentChanges, Depends(_recent)]


async def _writes(
    settings: SettingsDep,
    producer: ProducerDep,
    board: BoardDep,
    repository: RepositoryDep,
    clock: ClockDep,
) -> Writes:
    return Writes(
        settings=settings, producer=producer, board=board, repository=repository, clock=clock
    )


WritesDep = Annotated[Writes, Depends(_writes)]


async def _customers(
    settings: SettingsDep,
    writes: WritesDep,
    repository: RepositoryDep,
    board: BoardDep,
    keys: IdempotencyDep,
    audit: AuditDep,
) -> CustomerService:
    return CustomerService(
        settings=settings,
        writes=writes,
        repository=repository,
        board=board,
        keys=keys,
        audit=audit,
    )


async def _regions(
    settings: SettingsDep,
    board: BoardDep,
    backlog: BacklogDep,
    applied: AppliedDep,
    recent: RecentDep,
    changes: ChangesDep,
    audit: AuditDep,
) -> RegionService:
    return RegionService(
        settings=settings,
        board=board,
        backlog=backlog,
        applied=applied,
        recent=recent,
        changes=changes,
        audit=audit,
    )


CustomersDep = Annotated[CustomerService, Depends(_customers)]
RegionsDep = Annotated[RegionService, Depends(_regions)]
WaitQuery = Annotated[
    Literal["applied"] | None,
    Query(description="'applied': wait (bounded) until the home region holds this write."),
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
