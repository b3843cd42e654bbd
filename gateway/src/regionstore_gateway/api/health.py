"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from regionstore_gateway.auth import requires_reader
from regionstore_gateway.deps import BoardDep

router = APIRouter(tags=["operations"])

REDIS_DOWN = "unreachable: serving with the last region statuses read; status changes refused"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(board: BoardDep) -> dict[str, object]:
    """Clients are open. Redis down does not make the gateway unready: writes and reads go
    on with the last statuses read, and only status changes are refused; it is reported."""
    await board.all()
    return {"ready": True, "redis": "ok" if board.reachable else REDIS_DOWN}


@router.get("/metrics", dependencies=[requires_reader], include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
