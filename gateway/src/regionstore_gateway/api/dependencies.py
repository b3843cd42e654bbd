"""Dependencies of the customer routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query

from regionstore_gateway.deps import (
    BoardDep,
    ClockDep,
    ProducerDep,
    RepositoryDep,
    SettingsDep,
)
from regionstore_gateway.writes import Writes


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
WaitQuery = Annotated[
    Literal["applied"] | None,
    Query(description="'applied': wait (bounded) until the home region holds this write."),
]
