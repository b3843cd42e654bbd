"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from regionstore_gateway.deps import BoardDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(board: BoardDep, response: Response) -> dict[str, object]:
    """Clients are open and Redis answers."""
    try:
        await board.all()
    except RedisError as error:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ready": False, "redis": str(error)}
    return {"ready": True}


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
