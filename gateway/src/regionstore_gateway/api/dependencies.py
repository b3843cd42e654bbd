"""Dependencies of the customer routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, Query

from regionstore_gateway.deps import (
    BoardDep,
    ClockDep,
    ProducerDep,
    RepositoryDep,
    SettingsDep,
)
from regionstore_gateway.idempotency import HEADER, IdempotencyKey
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
