"""Request dependencies: typed views of the app state."""

from __future__ import annotations

from typing import Annotated, cast

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request

from regionstore_gateway.repository import CustomerRepository
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clock import HybridClock
from regionstore_shared.status import StatusBoard
from regionstore_shared.status_events import StatusChanges


def _settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.state.settings)


def _producer(request: Request) -> AIOKafkaProducer:
    return request.state.producer


def _board(request: Request) -> StatusBoard:
    return cast(StatusBoard, request.state.board)


def _repository(request: Request) -> CustomerRepository:
    return cast(CustomerRepository, request.state.repository)


def _clock(request: Request) -> HybridClock:
    return cast(HybridClock, request.state.clock)


def _changes(request: Request) -> StatusChanges:
    return cast(StatusChanges, request.state.changes)


def _backlog(request: Request) -> BacklogProbe:
    return cast(BacklogProbe, request.state.backlog)


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ProducerDep = Annotated[AIOKafkaProducer, Depends(_producer)]
BoardDep = Annotated[StatusBoard, Depends(_board)]
RepositoryDep = Annotated[CustomerRepository, Depends(_repository)]
ClockDep = Annotated[HybridClock, Depends(_clock)]
ChangesDep = Annotated[StatusChanges, Depends(_changes)]
BacklogDep = Annotated[BacklogProbe, Depends(_backlog)]
